"""API keys: how a key is made, and the hash line that configures it on a server.

A server holds no key, only each key's hash line, `SCOPE NAME sha256:HEX`:

    key = new_key()                          # shown once to the person who asked for it
    line = key_line(Scope.PREDICT, "ci", key)
    # "predict ci sha256:3b1f..."  -> serve.keys in refit.yaml, or REFIT_API_KEY_HASHES

Hash lines come from `serve.keys` and from the environment variable `REFIT_API_KEY_HASHES`
(lines separated by newlines or commas), so that a Kubernetes or Compose secret can supply
them without editing refit.yaml. A key of scope `admin` holds `predict` too. Without any key,
`check_exposure` keeps a server on loopback unless `serve.auth: none` is said.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from refit.errors import SpecError

if TYPE_CHECKING:
    from refit.spec import ServeSpec

KEY_HASHES_ENV = "REFIT_API_KEY_HASHES"
"""The environment variable whose value is hash lines, added to `serve.keys`."""

KEY_PREFIX = "refit_"
"""The start of every key, so that secret scanners and people recognise one."""

MAX_KEYS = 1000
"""The most hash lines a server takes: each request's key is compared with every one."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LINE = re.compile(r"(?P<scope>\S+)\s+(?P<name>\S+)\s+sha256:(?P<digest>[0-9a-f]{64})")


class Scope(StrEnum):
    """What a key may call."""

    PREDICT = "predict"
    """Predictions (and, later, feedback)."""
    ADMIN = "admin"
    """Anything that changes the server's state; holds `predict` too."""


HELD: dict[Scope, frozenset[Scope]] = {
    Scope.PREDICT: frozenset({Scope.PREDICT}),
    Scope.ADMIN: frozenset({Scope.PREDICT, Scope.ADMIN}),
}
"""The scopes a key of each scope holds."""


@dataclass(frozen=True)
class KeyHash:
    """One configured key: its scope, its name (for people; never a secret) and its hash."""

    scope: Scope
    name: str
    digest: bytes


def new_key() -> str:
    """A new random key: 32 bytes from the system's CSPRNG, URL-safe base64."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    """The sha256 of `key`.

    A plain hash, not a slow password hash (bcrypt, scrypt): a key carries 256 random bits, so
    no dictionary or brute-force search of its hash can succeed, and a fast hash keeps the
    check of every request cheap.
    """
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def key_line(scope: Scope, name: str, key: str) -> str:
    """The hash line that configures `key` on a server."""
    return f"{scope.value} {name} sha256:{hash_key(key).hex()}"


def check_name(name: str) -> str:
    """`name` if it can name a key; ValueError says what a name is."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} cannot name a key: expected 1 to 64 letters, digits, '.', '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def parse_key_line(line: str) -> KeyHash:
    """The key a hash line configures; ValueError says what is wrong, never echoing a value
    that could be a key given where its hash belongs."""
    match = _LINE.fullmatch(line.strip())
    if match is None:
        raise ValueError(
            "expected a hash line `SCOPE NAME sha256:HEX` as `refit keys create` prints it "
            "(a key itself never goes into the configuration, only its hash)"
        )
    scopes = ", ".join(scope.value for scope in Scope)
    if match["scope"] not in Scope.__members__.values():
        raise ValueError(f"unknown scope {match['scope']!r}: expected {scopes}")
    return KeyHash(Scope(match["scope"]), check_name(match["name"]), bytes.fromhex(match["digest"]))


def split_key_lines(text: str) -> list[str]:
    """The hash lines of one environment variable: separated by newlines or commas."""
    return [line.strip() for line in re.split(r"[\n,]", text) if line.strip()]


def configured_keys(spec_lines: Iterable[str], environ: Mapping[str, str]) -> tuple[KeyHash, ...]:
    """The keys of `serve.keys` and of `REFIT_API_KEY_HASHES`; ValueError names what is wrong."""
    keys = [parse_key_line(line) for line in spec_lines]
    lines = split_key_lines(environ.get(KEY_HASHES_ENV, ""))
    if len(keys) + len(lines) > MAX_KEYS:
        raise ValueError(f"{len(keys) + len(lines)} API keys: a server takes at most {MAX_KEYS}")
    for number, line in enumerate(lines, 1):
        try:
            keys.append(parse_key_line(line))
        except ValueError as exc:
            raise ValueError(f"{KEY_HASHES_ENV}, line {number}: {exc}") from None
    return tuple(keys)


def server_keys(serve: ServeSpec, environ: Mapping[str, str]) -> tuple[KeyHash, ...]:
    """The keys a server takes: `serve.keys` and those of `REFIT_API_KEY_HASHES`."""
    try:
        keys = configured_keys(serve.keys, environ)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    if keys and serve.auth == "none":
        raise SpecError(
            f"serve.auth is none, and {KEY_HASHES_ENV} holds API keys that it would ignore: "
            f"unset {KEY_HASHES_ENV}, or remove auth: none"
        )
    return keys


def is_loopback(host: str) -> bool:
    """Whether a server listening on `host` is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(serve: ServeSpec, environ: Mapping[str, str]) -> None:
    """Raise `SpecError` (a usage error) when a server of `serve` would listen beyond loopback
    with no API key and without `serve.auth: none` said."""
    if serve.auth == "none" or server_keys(serve, environ) or is_loopback(serve.host):
        return
    raise SpecError(
        f"refit serve would listen on {serve.host} with no API key, so anyone who reaches that "
        "address could call it: create a key with `refit keys create` and put its hash line "
        f"in serve.keys (or {KEY_HASHES_ENV}); or listen on 127.0.0.1 (--host, serve.host); or "
        "say serve.auth: none (REFIT_SERVE__AUTH=none) to serve without keys, behind something "
        "that authenticates"
    )
