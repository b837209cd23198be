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
  registered with (its graph does not say which feature is which, nor the class order);
- `python`: what a user function returned that is no scikit-learn estimator (any object with
  `predict`), pickled and loaded with the version's code artifact.

A version with hooks (`model.features`, `model.postprocess`) runs them around its model with
the code it was trained with (`refit.flavors.hooked`), whatever its flavor.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from refit.code import load_code
from refit.errors import ArtifactError
from refit.flavors import onnx as _onnx
from refit.flavors import python as _python
from refit.flavors import sklearn as _sklearn
from refit.flavors.hooked import HookedModel, code_artifacts
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
    _python.PYTHON_FLAVOR: Flavor(
        _python.PYTHON_FLAVOR,
        _python.save,
        lambda data, fmt, signature, trusted: _refuse_without_code(),
        _python.serve,
        _python.artifacts,
        _python.native_reason,
        converts=False,
    ),
}
PYTHON_FLAVOR = _python.PYTHON_FLAVOR
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


def version_artifacts(row: ModelVersionRow) -> list[tuple[str, str, str]]:
    """(what, key, sha256) of every file a server may fetch for a version: its flavor's, and
    its code artifact (`model.features`, `model.postprocess`, a python model's code)."""
    return get_flavor(row.flavor).artifacts(row) + code_artifacts(row)


def load_version(row: ModelVersionRow, fetch: Fetch, trusted_types: Collection[str] = ()) -> Any:
    """A version's model with its own code, as training scores it: with the face of a
    scikit-learn model on the raw input rows, its features hook (if any) in front."""
    where = f"{row.name} v{row.version}"
    signature = Signature.from_dict(row.signature)
    code = load_code(row.code, fetch, where) if row.code else None
    data = fetch(row.artifact_uri, row.artifact_sha256)
    if row.flavor == PYTHON_FLAVOR:
        if code is None:
            raise ArtifactError(f"{where} is a python model with no code artifact")
        model = _python.load(data, code)
    else:
        model = load_model(data, ArtifactFormat(row.format), row.flavor, signature, trusted_types)
    features = (row.code or {}).get("features")
    if code is not None and features:
        columns = dict((row.code or {}).get("columns") or {})
        model = HookedModel(model, code.function(str(features)), str(features), columns)
    return model


def _refuse_without_code() -> Any:
    raise ArtifactError("a python model loads with its version's code: use load_version")
