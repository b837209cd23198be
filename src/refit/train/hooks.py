"""The project's own code in a training run: bundled before the run, applied from the bundle.

A run that has hooks (`model.features`, `model.postprocess`) or whose `model.function` lives
in the project bundles that code first (`refit.code.bundle_code`) and runs the hooks from the
bundle, loaded privately, exactly as a server will run them:

- `featured` applies `model.features` to the training rows and gives the frame and the
  feature types the model is fitted on (numbers, bools and text, as the hook returned them);
- the fitted model is kept behind its hook (`HookedModel`), so that the holdout, the probe of
  nullable features and the gate see the raw rows, as a server does;
- `check_postprocess` runs `model.postprocess` on every holdout answer, so that a hook that
  raises or changes a prediction's type fails training, not a server later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from refit.artifacts import ArtifactStore
from refit.code import Bundle, LoadedCode, bundle_code
from refit.errors import TrainingError
from refit.flavors import DEFAULT_FLAVOR, PYTHON_FLAVOR, get_flavor
from refit.flavors import python as python_flavor
from refit.flavors.hooked import HookedModel, checked_features, frame_kinds, postprocessed
from refit.predictions import Predictions, columns_of
from refit.signature import Signature
from refit.spec import DataSpec, Feature, FeatureType, Spec


@dataclass(frozen=True)
class ProjectCode:
    """The project's code of one run: its bundle, loaded privately, and the entry points."""

    bundle: Bundle
    loaded: LoadedCode
    features: str | None
    postprocess: str | None
    function: str | None
    """`model.function`, when its module is the project's (and so in the bundle)."""

    @property
    def hooked(self) -> bool:
        return self.features is not None or self.postprocess is not None


def project_code(spec: Spec, root: Path) -> ProjectCode | None:
    """The run's code: None when the spec names no hook and no function."""
    model = spec.model
    hooks = {
        field: path
        for field, path in (
            ("model.features", model.features),
            ("model.postprocess", model.postprocess),
        )
        if path is not None
    }
    optional = {"model.function": model.function} if model.function is not None else {}
    if not hooks and not optional:
        return None
    bundle = bundle_code(root, hooks, optional)
    function = model.function
    if function is not None and function.partition(".")[0].partition(":")[0] not in bundle.modules:
        function = None
    if not hooks and function is None:
        return None
    loaded = LoadedCode(bundle.data, f"{spec.name}'s project")
    return ProjectCode(bundle, loaded, model.features, model.postprocess, function)


def featured(
    frame: pd.DataFrame, data: DataSpec, code: ProjectCode
) -> tuple[pd.DataFrame, DataSpec, dict[str, str]]:
    """The training rows after `model.features` (the target beside them), the data spec of
    its columns, and their types (name -> `FeatureType` value)."""
    assert code.features is not None
    function = code.loaded.function(code.features)
    out = checked_features(function, code.features, frame[list(data.features)])
    kinds = frame_kinds(out, f"model.features {code.features}")
    target = data.target
    if target is not None:
        if target in out.columns:
            raise TrainingError(
                f"model.features {code.features} returned a column named {target!r}, the "
                "target: a model cannot learn from it"
            )
        out = out.assign(**{target: frame[target]})
    features = {
        name: Feature(type=FeatureType(kind), nullable=bool(out[name].isna().any()))
        for name, kind in kinds.items()
    }
    return out, data.model_copy(update={"features": features}), kinds


def hooked(model: Any, code: ProjectCode | None, kinds: dict[str, str] | None) -> Any:
    """`model` behind the features hook it was fitted with (as it is without one)."""
    if code is None or code.features is None or kinds is None:
        return model
    return HookedModel(model, code.loaded.function(code.features), code.features, kinds)


def check_postprocess(
    code: ProjectCode | None,
    model: Any,
    X: pd.DataFrame,
    signature: Signature,
    step: Callable[[str], None],
) -> int | None:
    """Run `model.postprocess` on each holdout answer (as a server runs it); the number of
    rows it withheld (None: the run has no postprocess)."""
    if code is None or code.postprocess is None:
        return None
    step(f"running model.postprocess {code.postprocess} on the holdout answers")
    function = code.loaded.function(code.postprocess)
    output = signature.output
    labels = np.asarray(model.predict(X))
    proba = None
    if output.probabilities and hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(X), dtype=float).round(6)
    classes = tuple(str(c) for c in output.classes or [])
    answers = Predictions(labels, proba, classes)
    names = signature.names
    done = postprocessed(function, code.postprocess, names, columns_of(X, names), answers, output)
    return 0 if done.withheld is None else int(np.count_nonzero(done.withheld))


def flavor_of(model: Any, spec: Spec, code: ProjectCode | None) -> str:
    """The flavor of a model a run fitted: `python` for what a function returned that is no
    scikit-learn estimator (whose function must then be the project's), else `sklearn`."""
    function = spec.model.function
    if function is None or not python_flavor.owns(model):
        return DEFAULT_FLAVOR
    if code is None or code.function is None:
        raise TrainingError(
            f"model.function {function} returned a python model (an object of type "
            f"{type(model).__qualname__}, not a scikit-learn estimator), whose code is stored "
            "with each version: its module must be a file of the project folder"
        )
    return PYTHON_FLAVOR


def not_converted(flavor: str, code: ProjectCode | None) -> str | None:
    """Why a run's model is not converted to ONNX (None: training tries)."""
    if flavor == PYTHON_FLAVOR:
        return python_flavor.STATUS
    if code is not None and code.features is not None:
        return "not converted: model.features runs the project's Python code before the model"
    if not get_flavor(flavor).converts:
        return "the model is ONNX"
    return None


def store_code(
    store: ArtifactStore,
    code: ProjectCode | None,
    model: Any,
    flavor: str,
    withheld: int | None,
    step: Callable[[str], None],
) -> dict[str, Any] | None:
    """Store the run's code as one more artifact when the version runs with it (hooks, or a
    python model); what `ModelVersionRow.code` records of it."""
    if code is None or not (code.hooked or flavor == PYTHON_FLAVOR):
        return None
    step(f"storing the project's code ({', '.join(code.bundle.modules)})")
    ref = store.put(code.bundle.data, kind="code", suffix=".zip")
    return {
        "uri": ref.uri,
        "sha256": ref.sha256,
        "size": ref.size,
        "modules": code.bundle.modules,
        "files": code.bundle.files,
        "features": code.features,
        "postprocess": code.postprocess,
        "function": code.function if flavor == PYTHON_FLAVOR else None,
        "columns": model.columns if isinstance(model, HookedModel) else None,
        "holdout_withheld": withheld,
    }
