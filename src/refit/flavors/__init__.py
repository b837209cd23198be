"""Flavors: how a fitted model becomes bytes for the artifact store, and back.

    data = save_model(pipeline, ArtifactFormat.SKOPS)   # bytes
    path = f"model{SUFFIXES[ArtifactFormat.SKOPS]}"      # model.skops
    model = load_model(data, ArtifactFormat.SKOPS)

A flavor is a pair of functions; `FLAVORS` maps a flavor's name (recorded with each model
version) to it:

- `sklearn`: a model refit trained (a scikit-learn pipeline, or what a user function returned),
  saved with joblib or skops;
- `onnx`: a user's own ONNX model, stored as given and loaded with the signature it was
  registered with (its graph does not say which feature is which, nor the class order).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from refit.errors import ArtifactError
from refit.flavors import onnx as _onnx
from refit.flavors import sklearn as _sklearn
from refit.signature import Signature
from refit.spec import ArtifactFormat


@dataclass(frozen=True)
class Flavor:
    """A named pair of functions: `save(model, fmt, trusted_types) -> bytes` and
    `load(data, fmt, signature, trusted_types) -> model` (`trusted_types`: the types a
    user vouches for beyond the flavor's own, `model.trusted_types`)."""

    name: str
    save: Callable[[Any, ArtifactFormat, Collection[str]], bytes]
    load: Callable[[bytes, ArtifactFormat, Signature | None, Collection[str]], Any]


FLAVORS: dict[str, Flavor] = {
    "sklearn": Flavor(
        "sklearn", _sklearn.save, lambda data, fmt, _, trusted: _sklearn.load(data, fmt, trusted)
    ),
    "onnx": Flavor(
        "onnx",
        lambda model, fmt, _: _onnx.save(model, fmt),
        lambda data, fmt, signature, _: _onnx.load(data, fmt, signature),
    ),
}
DEFAULT_FLAVOR = "sklearn"

SUFFIXES: dict[ArtifactFormat, str] = {
    ArtifactFormat.JOBLIB: ".joblib",
    ArtifactFormat.SKOPS: ".skops",
    ArtifactFormat.ONNX: ".onnx",
}
"""The file suffix of an artifact in each format."""


def get_flavor(name: str) -> Flavor:
    """The flavor recorded as `name` with a model version."""
    try:
        return FLAVORS[name]
    except KeyError:
        raise ArtifactError(
            f"unknown model flavor {name!r}; expected one of {', '.join(FLAVORS)}"
        ) from None


def save_model(
    model: Any,
    fmt: ArtifactFormat,
    flavor: str = DEFAULT_FLAVOR,
    trusted_types: Collection[str] = (),
) -> bytes:
    """The bytes of a fitted model, in format `fmt`."""
    return get_flavor(flavor).save(model, fmt, trusted_types)


def load_model(
    data: bytes,
    fmt: ArtifactFormat,
    flavor: str = DEFAULT_FLAVOR,
    signature: Signature | None = None,
    trusted_types: Collection[str] = (),
) -> Any:
    """The fitted model held in `data`. Verify its sha256 before calling this."""
    return get_flavor(flavor).load(data, fmt, signature, trusted_types)
