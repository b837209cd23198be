"""The python flavor: what a `model.function` returned when it is no scikit-learn estimator,
any object with `predict` (and maybe `predict_proba` and `classes_`), served by itself.

It is saved as a pickle (recorded as `format: joblib`, so `serve.allow_pickle: false` refuses
it as it refuses any pickle) that names the project's classes as the project does
(`hooks.Model`). It loads only with the version's code artifact: each class from a module of
the project is taken from that code, under the version's private package (see `refit.code`),
never from the project's files on the server's disk; any other class (NumPy, scikit-learn) is
imported as usual.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from refit.code import CODE_PREFIX, LoadedCode, load_code
from refit.errors import ArtifactError, RefitError
from refit.flavors.sklearn import NATIVE_RUNTIME, SklearnPredictor
from refit.predictions import Fetch, Ready
from refit.signature import Signature
from refit.spec import ArtifactFormat

if TYPE_CHECKING:
    from refit.registry.tables import ModelVersionRow

PYTHON_FLAVOR = "python"
STATUS = "not converted: a python model runs as it is"
"""The ONNX status of a python model (ONNX converters know scikit-learn's models only)."""


def owns(model: Any) -> bool:
    """Whether a model a user function returned is of this flavor: not a scikit-learn
    estimator (or pipeline), whose flavor is `sklearn`."""
    from sklearn.base import BaseEstimator

    return not isinstance(model, BaseEstimator)


def save(model: Any, fmt: ArtifactFormat, trusted_types: Collection[str] = ()) -> bytes:
    """The pickle of `model`."""
    if fmt is not ArtifactFormat.JOBLIB:
        raise ArtifactError(
            f"a python model (an object of type {type(model).__qualname__}, not a scikit-learn "
            f"estimator) is saved as a pickle; model.format {fmt.value} applies to scikit-learn "
            "models: set model.format: joblib"
        )
    try:
        return pickle.dumps(model, protocol=5)
    except Exception as exc:
        raise ArtifactError(
            f"cannot pickle the model the function returned: {type(exc).__name__}: {exc}"
        ) from exc


def load(data: bytes, code: LoadedCode) -> Any:
    """The model pickled in `data`, its project classes from `code`. Check the sha256 of
    both first."""
    try:
        return _Unpickler(io.BytesIO(data), code).load()
    except RefitError:
        raise
    except Exception as exc:
        raise ArtifactError(
            f"{code.where}'s python model cannot be loaded: {type(exc).__name__}: {exc}"
        ) from exc


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, code: LoadedCode) -> None:
        super().__init__(file)
        self.code = code

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith(CODE_PREFIX):  # pickled from another load of a version's code
            module = module.partition(".")[2]
        if self.code.holds(module):
            return self.code.resolve(module, name)
        return super().find_class(module, name)


class PythonPredictor(SklearnPredictor):
    """A python model, answering as a scikit-learn one does; `code` is its version's code."""

    def __init__(self, model: Any, signature: Signature, code: LoadedCode) -> None:
        super().__init__(model, signature)
        self.code = code


def serve(
    row: ModelVersionRow, signature: Signature, fetch: Fetch, trusted_types: Collection[str]
) -> Ready:
    """The model itself, loaded with the version's code."""
    where = f"{row.name} v{row.version}"
    if not row.code:
        raise ArtifactError(f"{where} is a python model with no code artifact to load it with")
    code = load_code(row.code, fetch, where)
    model = load(fetch(row.artifact_uri, row.artifact_sha256), code)
    return Ready(PythonPredictor(model, signature, code), NATIVE_RUNTIME, STATUS)


def native_reason(row: ModelVersionRow) -> str | None:
    return STATUS


def artifacts(row: ModelVersionRow) -> list[tuple[str, str, str]]:
    """The model's pickle (the code artifact is every flavor's: `version_artifacts`)."""
    return [("artifact", row.artifact_uri, row.artifact_sha256)]
