"""How `refit.yaml` problems are told, and how `REFIT_*` variables override its fields.

Kept beside `refit.spec`, its only user: pydantic's errors become one line per field with
the value received and what was expected, naming the environment variable a value came from,
and never printing what may be a secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

ENV_PREFIX = "REFIT_"


class FieldProblem(ValueError):
    """A problem found by a model's validator that belongs to one of its fields: reported at
    that field's path (`field`, relative to the model) with that field's value."""

    def __init__(self, field: tuple[str, ...], value: Any, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


def apply_env(raw: dict[str, Any], environ: Mapping[str, str], fields: set[str]) -> dict[str, str]:
    """Write `REFIT_A__B=value` into raw["a"]["b"]; returns field path -> variable name."""
    overridden: dict[str, str] = {}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX):
            continue
        keys = var[len(ENV_PREFIX) :].lower().split("__")
        if keys[0] not in fields or not all(keys):
            continue
        node: dict[str, Any] = raw
        path: list[str] = []
        for key in keys[:-1]:
            key = _existing_key(node, key)
            child = node.get(key)
            if isinstance(child, str) and path == ["data", "features"]:
                child = node[key] = {"type": child}  # the shorthand `age: float`
            elif not isinstance(child, dict):
                child = node[key] = {}
            node = child
            path.append(key)
        leaf = _existing_key(node, keys[-1])
        node[leaf] = _parse_env_value(environ[var])
        overridden[".".join([*path, leaf])] = var
    return overridden


def _existing_key(node: dict[str, Any], key: str) -> str:
    for existing in node:
        if isinstance(existing, str) and existing.lower() == key:
            return existing
    return key


def _parse_env_value(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    # A bare word stays a string even when YAML reads it as a date or null-like token.
    return (
        text
        if value is None or not isinstance(value, (str, int, float, bool, list, dict))
        else value
    )


def describe(err: Any, overridden: dict[str, str]) -> str:
    """One line for one pydantic error: the field, the value received, what was expected."""
    loc = _field_path(err["loc"])
    value = err["input"]
    msg = str(err["msg"]).removeprefix("Value error, ")
    kind = err["type"]
    problem = (err.get("ctx") or {}).get("error")
    if isinstance(problem, FieldProblem):
        loc, value = [*loc, *problem.field], problem.value
    field = ".".join(loc) or "(top level)"
    source = f" (from {overridden[field]})" if field in overridden else ""
    if kind == "extra_forbidden":
        what = f"the spelling of {overridden[field]}" if field in overridden else "its spelling"
        return f"{field}: unknown field (check {what}; got {_show_unknown(loc[-1], value)})"
    if kind == "missing":
        return f"{field}: required field is missing"
    if kind == "union_tag_not_found":
        return f"{field}.kind: required field is missing (expected {_SOURCE_KINDS})"
    if kind == "union_tag_invalid":
        source = f" (from {overridden[field + '.kind']})" if field + ".kind" in overridden else ""
        return f"{field}.kind: got {_show(err['ctx']['tag'])}{source}: expected {_SOURCE_KINDS}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        msg = "expected a mapping (name: value)"
    if kind == "value_error" and isinstance(value, dict):
        return f"{field}{source}: {msg}"  # about several fields: "got a mapping" would not help
    got = NOT_SHOWN if any(looks_secret(part) for part in loc) else _show(shown("", value))
    return f"{field}: got {got}{source}: {msg[0].lower() + msg[1:]}"


_SOURCE_KINDS = "csv, parquet or sql"
_SECRET_NAME = re.compile(r"secret|passw|token|key|credential|private|cookie", re.IGNORECASE)
# user:password@ in a URL: the user is kept, the password is not.
_URL_PASSWORD = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*:/{0,3})(?P<user>[^:/@\s]*):[^@\s]*@"
)
NOT_SHOWN = "a value not shown, as it may be a secret"


def looks_secret(name: str) -> bool:
    """Whether a field called `name` may hold a secret (a password, token, key, credential)."""
    return _SECRET_NAME.search(name) is not None


def redact(text: str) -> str:
    """`text` with the password of every URL in it masked: `postgresql://refit:***@db/refit`.

    Everything the CLI prints that may hold a URL of the configuration passes through this.
    """
    if "@" not in text:
        return text
    return _URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", text)


def shown(name: str, value: Any) -> Any:
    """`value` as the CLI may print it as the value of a field called `name`: not at all when
    the name looks like a secret's, and with any URL's password masked."""
    if looks_secret(name):
        return NOT_SHOWN
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: shown(str(key), item) for key, item in value.items()}
    if isinstance(value, list):
        return [shown(name, item) for item in value]
    return value


def _show_unknown(name: str, value: Any) -> str:
    """The value of an unknown field, unless it may be a misspelt secret (`secret_acess_key`,
    `ulr: postgresql://user:password@host/db`): an error message must not print it."""
    if looks_secret(name) or (isinstance(value, str) and redact(value) != value):
        return NOT_SHOWN
    return _show(value)


def _field_path(loc: tuple[Any, ...]) -> list[str]:
    """The field path of an error's location, without the tag pydantic adds for `source`."""
    parts = [str(part) for part in loc]
    if parts[:2] == ["data", "source"] and parts[2:3] in (["csv"], ["parquet"], ["sql"]):
        del parts[2]
    return parts


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def kind_of(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else type(value).__name__
