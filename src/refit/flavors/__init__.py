"""Flavors: how a kind of model is stored, loaded for scoring, and served.

    data = save_model(pipeline, ArtifactFormat.SKOPS)   # bytes
    path = f"model{SUFFIXES[ArtifactFormat.SKOPS]}"      # model.skops
    model = load_model(data, ArtifactFormat.SKOPS)

A flavor is the one extension point for a kind of model: how it is saved, loaded for scoring,
and served (on which runtime); `FLAVORS` maps a flavor's name (recorded with each model
version) to it:

- `sklearn`: a model refit trained (a scikit-learn pipeline, or what a user function returned),
  saved with joblib or skops;
- `onnx`: a user's own ONNX model, stored as given and loaded with the signature it was
  registered with (its graph does not say which feature is which, nor the class order).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from refit.errors import ArtifactError
from refit.flavors import onnx as _onnx
from refit.flavors import sklearn as _sklearn
from refit.predictions import Fetch, Ready
from refit.signature import Signature
from refit.spec import ArtifactFormat

if TYPE_CHECKING:
    from refit.registry.tables import ModelVersionRow


Serve = Callable[["ModelVersionRow", Signature, Fetch, Collection[str]], Ready]
Artifacts = Callable[["ModelVersionRow"], list[tuple[str, str, str]]]


@dataclass(frozen=True)
class Flavor:
    """What refit needs of one kind of model, as functions:

    - `save(model, fmt, trusted_types) -> bytes`, or None for a flavor whose artifact is stored
      as given (`refit models register`);
    - `load(data, fmt, signature, trusted_types) -> model`, the model with a scikit-learn face
      (`predict`, `predict_proba`), which training scores and gates;
    - `serve(row, signature, fetch, trusted_types) -> Ready`: the predictor a server runs for
      a version, on the runtime the flavor chooses for it (ONNX Runtime, or the model itself);
    - `artifacts(row)`: the (what, key, sha256) of every file `serve` may fetch, which
      promotion checks and a server confines to the store before reading any;
    - `native_reason(row)`: why `serve` does not use ONNX Runtime for the version (None: it
      does);
    - `converts`: whether training converts its models to ONNX (a flavor whose artifact is
      ONNX already does not).

    `trusted_types`: the types a user vouches for beyond the flavor's own
    (`model.trusted_types`).
    """

    name: str
    save: Callable[[Any, ArtifactFormat, Collection[str]], bytes] | None
    load: Callable[[bytes, ArtifactFormat, Signature | None, Collection[str]], Any]
    serve: Serve
    artifacts: Artifacts
    native_reason: Callable[[ModelVersionRow], str | None]
    converts: bool


ONNX_FLAVOR = "onnx"
FLAVORS: dict[str, Flavor] = {
    "sklearn": Flavor(
        "sklearn",
        _sklearn.save,
        lambda data, fmt, _, trusted: _sklearn.load(data, fmt, trusted),
        _sklearn.serve,
        _sklearn.artifacts,
        _sklearn.native_reason,
        converts=True,
    ),
    ONNX_FLAVOR: Flavor(
        ONNX_FLAVOR,
        None,
        lambda data, fmt, signature, _: _onnx.load(data, fmt, signature),
        _onnx.serve,
        _onnx.artifacts,
        lambda row: None,
        converts=False,
    ),
}
RUNTIMES = (_sklearn.NATIVE_RUNTIME, _onnx.RUNTIME)
"""What may run a served version (`runtime` in `/v1/models`)."""
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
    save = get_flavor(flavor).save
    if save is None:
        raise ArtifactError(f"a model of the {flavor} flavor is stored as it was given")
    return save(model, fmt, trusted_types)


def load_model(
    data: bytes,
    fmt: ArtifactFormat,
    flavor: str = DEFAULT_FLAVOR,
    signature: Signature | None = None,
    trusted_types: Collection[str] = (),
) -> Any:
    """The fitted model held in `data`. Verify its sha256 before calling this."""
    return get_flavor(flavor).load(data, fmt, signature, trusted_types)
