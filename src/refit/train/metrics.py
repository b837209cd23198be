"""Scoring a fitted model on held-out rows, by the formulas of `refit.metrics`.

`evaluate` leaves out a metric that cannot be computed (no `predict_proba`, one class in `y`,
...); `score` says why instead.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from refit.errors import TrainingError
from refit.metrics import NAMES, Unavailable, checked_proba, compute
from refit.spec import Task, metrics_of
from refit.train.pipeline import as_target

__all__ = ["NAMES", "evaluate", "score"]


def evaluate(
    model: Any, X: pd.DataFrame, y: pd.Series[Any] | np.ndarray[Any, Any], task: Task
) -> dict[str, float]:
    """Every metric of `task` that can be computed, by name."""
    rows = _Rows(model, X, y)
    results: dict[str, float] = {}
    for name in NAMES[task]:
        try:
            results[name] = compute(name, rows)
        except Unavailable:
            continue
    return results


def score(
    model: Any,
    X: pd.DataFrame,
    y: pd.Series[Any] | np.ndarray[Any, Any],
    task: Task,
    metric: str,
) -> float:
    """One metric; a `TrainingError` names it when it cannot be computed."""
    if metric not in NAMES[task]:
        known = ", ".join(metrics_of(task))
        raise TrainingError(f"unknown metric {metric!r} for {task.value}; expected one of {known}")
    try:
        return compute(metric, _Rows(model, X, y))
    except Unavailable as exc:
        raise TrainingError(f"cannot compute {metric} for this model: {exc}") from None


class _Rows:
    """Held-out rows and the model's answers on them, each computed once when first needed."""

    def __init__(self, model: Any, X: pd.DataFrame, y: pd.Series[Any] | np.ndarray[Any, Any]):
        self.model = model
        self.X = X
        self.truth = as_target(y)
        if len(self.truth) == 0:
            raise TrainingError("cannot evaluate a model on an empty holdout")

    @cached_property
    def predicted(self) -> np.ndarray[Any, Any]:
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

    def _call(self, method: str) -> np.ndarray[Any, Any]:
        try:
            return np.asarray(getattr(self.model, method)(self.X))
        except Exception as exc:
            raise TrainingError(
                f"the model's {method} failed on the holdout: {type(exc).__name__}: {exc}"
            ) from exc
