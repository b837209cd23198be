"""The kinds of estimator each task takes: a classifier, a regressor, a clusterer that can
assign new rows to its clusters, an anomaly detector that scores new rows.

`check_kind` refuses the others before any work, saying why and what would do. An object that
is not a scikit-learn estimator (no `__sklearn_tags__`) is not judged here. `estimator_params`
gives a detector `model.contamination` as its own parameter.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from refit.errors import SpecError
from refit.spec import ModelSpec, Task


def check_kind(path: str, estimator: Any, task: Task) -> None:
    """Refuse an estimator of another kind than `task` learns (a regressor for a
    classification, a clusterer that cannot assign new rows, ...), saying what would do."""
    kind = _kind(estimator)
    if kind is None:
        return
    got = f"model.estimator: got {path!r}"
    wanted = {
        Task.CLASSIFICATION: ("classifier",),
        Task.REGRESSION: ("regressor",),
        Task.CLUSTERING: ("clusterer", "mixture"),
        Task.ANOMALY: ("outlier_detector",),
    }[task]
    if kind not in wanted:
        raise SpecError(f"{got}: {_KIND_WORDS[kind]}, but model.task is {task.value}")
    name = type(estimator).__name__
    if task is Task.CLUSTERING and not _has(estimator, "predict"):
        raise SpecError(
            f"{got}: {name} cannot assign new rows to its clusters (it has no predict), so "
            "a server could not answer with it; use one that can, such as "
            f"{', '.join(PREDICTING_CLUSTERERS)}"
        )
    if task is Task.ANOMALY and getattr(estimator, "novelty", True) is False:
        raise SpecError(
            f"{got}: {name} with novelty=False only scores the rows it was fitted on; "
            "set model.params.novelty: true to score new rows"
        )
    if task is Task.ANOMALY and not _has(estimator, "predict", "decision_function"):
        raise SpecError(
            f"{got}: {name} has no predict and decision_function to score new rows; use one "
            f"that has, such as {', '.join(DETECTORS)}"
        )


def _kind(estimator: Any) -> str | None:
    """classifier, regressor, clusterer, mixture (a density estimator that assigns
    clusters), outlier_detector, or None (not a scikit-learn estimator, or none of these)."""
    if not hasattr(estimator, "__sklearn_tags__"):
        return None
    try:
        kind = estimator.__sklearn_tags__().estimator_type
    except (AttributeError, TypeError):
        return None
    if kind == "density_estimator" and _has(estimator, "predict"):
        return "mixture"
    return kind if kind in _KIND_WORDS else None


_KIND_WORDS = {
    "classifier": "a classifier",
    "regressor": "a regressor",
    "clusterer": "a clusterer",
    "mixture": "a mixture model (a clusterer)",
    "outlier_detector": "an anomaly detector",
}
PREDICTING_CLUSTERERS = (
    "KMeans",
    "MiniBatchKMeans",
    "BisectingKMeans",
    "Birch",
    "GaussianMixture",
    "BayesianGaussianMixture",
    "MeanShift",
    "AffinityPropagation",
)
"""The scikit-learn clusterers that assign new rows (a clustering's `predict`)."""
DETECTORS = (
    "IsolationForest",
    "OneClassSVM",
    "SGDOneClassSVM",
    "EllipticEnvelope",
    "LocalOutlierFactor (novelty=True)",
)


def _has(value: Any, *names: str) -> bool:
    return all(callable(getattr(value, name, None)) for name in names)


def estimator_params(model: ModelSpec, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`params` (default `model.params`) with `model.contamination` as the detector's own
    parameter: `contamination`, or `nu` for the one-class SVMs."""
    merged = dict(model.params if params is None else params)
    if model.contamination is None or model.estimator is None:
        return merged
    module_name, _, class_name = model.estimator.rpartition(".")
    try:
        taken = inspect.signature(getattr(importlib.import_module(module_name), class_name))
    except Exception:  # an estimator that does not resolve is resolve_estimator's to report
        return merged
    names = None if _any_keyword(taken) else set(taken.parameters)
    field = next((n for n in CONTAMINATION_PARAMS if names is None or n in names), None)
    if field is None:
        raise SpecError(
            f"model.contamination: {class_name} takes neither "
            f"{' nor '.join(CONTAMINATION_PARAMS)}; remove model.contamination"
        )
    if field in merged:
        raise SpecError(
            f"model.contamination and model.params.{field} both set {class_name}'s {field}: "
            "give one of them"
        )
    merged[field] = model.contamination
    return merged


CONTAMINATION_PARAMS = ("contamination", "nu")
"""The parameters `model.contamination` sets, the first a detector takes."""


def _any_keyword(signature: inspect.Signature) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
