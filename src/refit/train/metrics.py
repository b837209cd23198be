"""Scoring a fitted model on held-out rows, by the formulas of `refit.metrics`.

`evaluate` leaves out a metric that cannot be computed (no `predict_proba`, one class in `y`,
no label, ...); `score` says why instead. `y` is None where the task has no label (clustering,
an anomaly task without `data.target`). A clustering's metrics also give `clusters`, how many
clusters its holdout rows fell in (fewer than two score the worst of each metric).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from refit._metrics_unsupervised import anomaly_truth, cluster_count
from refit.errors import TrainingError
from refit.metrics import NAMES, Unavailable, checked_proba, compute
from refit.signature import anomaly_score
from refit.spec import Task, metrics_of
from refit.train.pipeline import as_target
from refit.train.unsupervised import evaluation_space, uniform_rows

Target: TypeAlias = "pd.Series[Any] | np.ndarray[Any, Any] | None"

__all__ = ["NAMES", "evaluate", "score"]


def evaluate(model: Any, X: pd.DataFrame, y: Target, task: Task) -> dict[str, float]:
    """Every metric of `task` that can be computed, by name."""
    rows = _Rows(model, X, y, task)
    results: dict[str, float] = {}
    for name in NAMES[task]:
        try:
            results[name] = compute(name, rows)
        except Unavailable:
            continue
    if task is Task.CLUSTERING:
        results["clusters"] = cluster_count(rows.predicted)
    return results


def score(
    model: Any,
    X: pd.DataFrame,
    y: Target,
    task: Task,
    metric: str,
) -> float:
    """One metric; a `TrainingError` names it when it cannot be computed."""
    if metric not in NAMES[task]:
        known = ", ".join(metrics_of(task))
        raise TrainingError(f"unknown metric {metric!r} for {task.value}; expected one of {known}")
    try:
        return compute(metric, _Rows(model, X, y, task))
    except Unavailable as exc:
        raise TrainingError(f"cannot compute {metric} for this model: {exc}") from None


class _Rows:
    """Held-out rows and the model's answers on them, each computed once when first needed."""

    def __init__(self, model: Any, X: pd.DataFrame, y: Target, task: Task):
        self.model = model
        self.X = X
        self.task = task
        self._y = y
        if len(X) == 0:
            raise TrainingError("cannot evaluate a model on an empty holdout")

    @cached_property
    def truth(self) -> np.ndarray[Any, Any]:
        if self._y is None:
            raise Unavailable("there is no label (data.target is not set)")
        if self.task is not Task.ANOMALY:
            return as_target(self._y)
        try:
            return anomaly_truth(np.asarray(self._y, dtype=object))
        except ValueError as exc:
            raise TrainingError(f"the holdout's label {exc}") from None

    @cached_property
    def predicted(self) -> np.ndarray[Any, Any]:
        if self.task is Task.ANOMALY:
            return self.score > 0
        return self._call("predict")

    @cached_property
    def classes(self) -> np.ndarray[Any, Any] | None:
        classes = getattr(self.model, "classes_", None)
        return None if classes is None else np.asarray(classes)

    @cached_property
    def proba(self) -> np.ndarray[Any, Any]:
        if not hasattr(self.model, "predict_proba"):
            raise Unavailable("the model has no predict_proba")
        if self.classes is None:
            raise Unavailable("the model has predict_proba but no classes_")
        return checked_proba(self._call("predict_proba"), self.classes, self.truth)

    @cached_property
    def space(self) -> np.ndarray[Any, Any]:
        return evaluation_space(self.X)

    @cached_property
    def score(self) -> np.ndarray[Any, Any]:
        return self._scores(self.X, "the holdout")

    @cached_property
    def uniform_score(self) -> np.ndarray[Any, Any]:
        return self._scores(uniform_rows(self.X), "points drawn in the holdout's bounding box")

    def _scores(self, X: pd.DataFrame, what: str) -> np.ndarray[Any, Any]:
        try:
            return anomaly_score(self.model, X)
        except Exception as exc:
            raise TrainingError(
                f"the model failed to score {what}: {type(exc).__name__}: {exc}"
            ) from exc

    def _call(self, method: str) -> np.ndarray[Any, Any]:
        try:
            return np.asarray(getattr(self.model, method)(self.X))
        except Exception as exc:
            raise TrainingError(
                f"the model's {method} failed on the holdout: {type(exc).__name__}: {exc}"
            ) from exc
