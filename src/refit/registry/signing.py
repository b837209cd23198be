"""Signed versions: an HMAC-SHA256 over each model version's manifest.

The manifest is what a server acts on when it loads a version: its name and number, flavor,
artifact format, the store path and sha256 of every artifact (the native one and the ONNX
one), and its signature (the input and output schema). When `REFIT_SIGNING_KEY` is set,
`Registry.register_version` stores the HMAC of that manifest with the version, and every load
checks it first (`check_signed`), before a byte of an artifact is read: a row written or
altered by anyone without the key (another path, another sha256, another format) is refused.

    key = signing_key()                      # None: signing is off, nothing is checked
    row.manifest_signature = sign(row, key)
    check_signed(row, key)                   # UntrustedVersionError unless it matches

The key is a secret from the environment, never from `refit.yaml`; `refit models sign` signs
the versions registered before the key was set.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from refit.errors import SpecError, UntrustedVersionError
from refit.registry.tables import ModelVersionRow

if TYPE_CHECKING:
    from refit.artifacts import ArtifactStore
    from refit.registry.registry import Registry

SIGNING_KEY_ENV = "REFIT_SIGNING_KEY"
"""The environment variable holding the key that signs and verifies versions."""
MIN_KEY_LENGTH = 32
"""The shortest key accepted, in characters (`python -c 'import secrets;
print(secrets.token_hex(32))'` makes a good one)."""


def signing_key(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The signing key from the environment, or None when signing is off."""
    value = (os.environ if environ is None else environ).get(SIGNING_KEY_ENV, "")
    if not value:
        return None
    if len(value) < MIN_KEY_LENGTH:
        raise SpecError(
            f"{SIGNING_KEY_ENV} is {len(value)} characters long; a signing key needs at least "
            f"{MIN_KEY_LENGTH} (make one with: python -c 'import secrets; "
            "print(secrets.token_hex(32))')"
        )
    return value.encode()


def manifest(row: ModelVersionRow) -> bytes:
    """The bytes that a version's signature covers (canonical JSON)."""
    onnx = row.onnx or {}
    fields: dict[str, Any] = {
        "name": row.name,
        "version": row.version,
        "flavor": row.flavor,
        "format": row.format,
        "artifact": {"uri": row.artifact_uri, "sha256": row.artifact_sha256},
        "onnx": {"uri": onnx.get("uri"), "sha256": onnx.get("sha256")},
        "signature": row.signature,
    }
    if row.code is not None:  # only then: a version signed before code was stored stays valid
        fields["code"] = {"uri": row.code.get("uri"), "sha256": row.code.get("sha256")}
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def sign(row: ModelVersionRow, key: bytes) -> str:
    """The HMAC-SHA256 (hex) of the version's manifest under `key`."""
    return hmac.new(key, manifest(row), hashlib.sha256).hexdigest()


def signature_state(row: ModelVersionRow, key: bytes | None) -> str:
    """`valid`, `invalid` or `unchecked` (no key here) for a signed version; `unsigned`."""
    if not row.manifest_signature:
        return "unsigned"
    if key is None:
        return "unchecked"
    return "valid" if hmac.compare_digest(row.manifest_signature, sign(row, key)) else "invalid"


def check_signed(row: ModelVersionRow, key: bytes | None) -> None:
    """Refuse the version unless signing is off or its manifest carries the key's signature."""
    state = signature_state(row, key)
    if key is None or state == "valid":
        return
    where = f"{row.name} v{row.version}"
    if state == "unsigned":
        raise UntrustedVersionError(
            f"{where} is not signed, and {SIGNING_KEY_ENV} is set, so only signed versions "
            "load; if the version is yours, sign it with `refit models sign`"
        )
    raise UntrustedVersionError(
        f"{where} does not match its signature: its registry row was changed after it was "
        f"signed, or it was signed with another key than this {SIGNING_KEY_ENV}"
    )


def sign_versions(
    registry: Registry,
    store: ArtifactStore,
    name: str,
    versions: Sequence[int] | None = None,
    *,
    force: bool = False,
) -> dict[int, str]:
    """Sign `name`'s versions (default: all) with the registry's key; what became of each.

    Each artifact is checked against its recorded sha256 first (read, never deserialised), so
    a signature vouches for the bytes in the store. A version signed with another key is left
    as it is unless `force`.
    """
    key = registry.signing_key
    if key is None:
        raise SpecError(f"set {SIGNING_KEY_ENV} to the key that servers verify, then sign")
    rows = registry.list_versions(name)
    if versions is not None:
        rows = [registry.get_version(name, v) for v in versions]
    outcome: dict[int, str] = {}
    for row in rows:
        state = signature_state(row, key)
        if state == "valid":
            outcome[row.version] = "already signed"
            continue
        if state == "invalid" and not force:
            outcome[row.version] = "not signed: signed with another key (--force re-signs)"
            continue
        store.get(row.artifact_uri, row.artifact_sha256)
        if row.onnx and row.onnx.get("status") == "ok":
            store.get(str(row.onnx["uri"]), str(row.onnx["sha256"]))
        if row.code and row.code.get("uri"):
            store.get(str(row.code["uri"]), str(row.code["sha256"]))
        registry.set_manifest_signature(name, row.version, sign(row, key))
        outcome[row.version] = "signed"
    return outcome
