"""The sklearn flavor: a fitted model (a scikit-learn pipeline, or any object with `predict`
that a user function returned) saved to bytes and loaded back.

- `joblib` (default) saves anything picklable. Loading a pickle runs code, so refit loads only
  artifacts whose sha256 it recorded itself.
- `skops` loads without running arbitrary code: only types from `sklearn.`, `numpy.` and
  `scipy.` and a short list of builtins and `collections` containers are trusted. An artifact
  holding anything else is refused on load, and refused already on save, so that training
  fails rather than the server later. `model.trusted_types` extends that list with more
  dotted type names (`mypackage.MyScaler`), for models whose types the user vouches for.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Collection
from typing import Any

import joblib

from refit.errors import ArtifactError
from refit.spec import ArtifactFormat

TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.")
TRUSTED_TYPES = frozenset(
    {
        *(
            f"builtins.{name}"
            for name in (
                "bool",
                "bytearray",
                "bytes",
                "complex",
                "dict",
                "float",
                "frozenset",
                "int",
                "list",
                "NoneType",
                "range",
                "set",
                "slice",
                "str",
                "tuple",
            )
        ),
        "collections.Counter",
        "collections.OrderedDict",
        "collections.defaultdict",
        "collections.deque",
    }
)


def save(model: Any, fmt: ArtifactFormat, trusted_types: Collection[str] = ()) -> bytes:
    """The bytes of `model` in format `fmt` (a skops artifact may hold `trusted_types` too)."""
    if fmt is ArtifactFormat.SKOPS:
        return _save_skops(model, trusted_types)
    buffer = io.BytesIO()
    try:
        joblib.dump(model, buffer, compress=3)
    except Exception as exc:
        raise ArtifactError(f"cannot save the model with joblib: {_error(exc)}") from exc
    return buffer.getvalue()


def load(data: bytes, fmt: ArtifactFormat, trusted_types: Collection[str] = ()) -> Any:
    """The model saved in `data`; a skops artifact is checked against the trust list (and
    `trusted_types`) first."""
    if fmt is ArtifactFormat.SKOPS:
        found = _listed_types(data)
        refused = [name for name in found if not is_trusted(name, trusted_types)]
        if refused:
            more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
            raise ArtifactError(
                f"untrusted type {refused[0]} in a skops artifact{more}; if you vouch for it, "
                "add it to model.trusted_types"
            )
        try:
            return _skops().loads(data, trusted=found)
        except Exception as exc:
            raise ArtifactError(f"cannot load a skops artifact: {_error(exc)}") from exc
    try:
        return joblib.load(io.BytesIO(data))
    except Exception as exc:
        raise ArtifactError(f"cannot load a joblib artifact: {_error(exc)}") from exc


def is_trusted(type_name: str, trusted_types: Collection[str] = ()) -> bool:
    """Whether a skops artifact may hold `type_name` (a dotted `module.name`): a built-in
    trusted type, or one of `trusted_types` (`model.trusted_types`)."""
    return (
        type_name.startswith(TRUSTED_PREFIXES)
        or type_name in TRUSTED_TYPES
        or type_name in trusted_types
    )


def _save_skops(model: Any, trusted_types: Collection[str]) -> bytes:
    try:
        data: bytes = _skops().dumps(model, compression=zipfile.ZIP_DEFLATED)
    except Exception as exc:
        raise ArtifactError(
            f"skops cannot save this model ({_error(exc)}); set model.format: joblib"
        ) from exc
    refused = [name for name in _listed_types(data) if not is_trusted(name, trusted_types)]
    if refused:
        raise ArtifactError(
            f"the model holds {', '.join(refused)}, which a skops artifact does not trust; "
            "add them to model.trusted_types if you vouch for them, or set model.format: joblib"
        )
    return data


def _listed_types(data: bytes) -> list[str]:
    """The types in a skops artifact that skops itself does not trust by default."""
    try:
        found: list[str] = _skops().get_untrusted_types(data=data)
    except Exception as exc:
        raise ArtifactError(f"not a readable skops artifact: {_error(exc)}") from exc
    return found


def _skops() -> Any:
    """skops.io, imported when first needed: its import takes about a second (it lists
    scikit-learn's types), which every command and server worker would otherwise pay."""
    import skops.io

    return skops.io


def _error(exc: BaseException) -> str:
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
