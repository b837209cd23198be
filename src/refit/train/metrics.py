"""Scoring a fitted model on held-out rows.

Classification: `accuracy`; `f1` (binary with the model's `classes_[1]` as the positive
class, macro-averaged otherwise); `roc_auc` (binary from `predict_proba[:, 1]`, otherwise
one-vs-rest macro over the classes present in `y`); `log_loss` (over the model's classes).
Regression: `rmse`, `mae`, `r2`. `evaluate` leaves out a metric that cannot be computed
(no `predict_proba`, one class in `y`, ...); `score` says why instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)

from refit.errors import TrainingError
from refit.spec import METRICS, Task
from refit.train.pipeline import as_target

NAMES: dict[Task, tuple[str, ...]] = {
    Task.CLASSIFICATION: ("accuracy", "f1", "roc_auc", "log_loss"),
    Task.REGRESSION: ("rmse", "mae", "r2"),
}


class _Unavailable(Exception):
    """A metric cannot be computed for this model and these rows; the message says why."""


def evaluate(
    model: Any, X: pd.DataFrame, y: pd.Series[Any] | np.ndarray[Any, Any], task: Task
) -> dict[str, float]:
    """Every metric of `task` that can be computed, by name."""
    rows = _Rows(model, X, y)
    results: dict[str, float] = {}
    for name in NAMES[task]:
        try:
            results[name] = _compute(name, rows)
        except _Unavailable:
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
        known = ", ".join(name for name, (t, _) in METRICS.items() if t is task)
        raise TrainingError(f"unknown metric {metric!r} for {task.value}; expected one of {known}")
    try:
        return _compute(metric, _Rows(model, X, y))
    except _Unavailable as exc:
        raise TrainingError(f"cannot compute {metric} for this model: {exc}") from None


class _Rows:
    """Held-out rows and the model's answers on them, each computed once when first needed."""

    def __init__(self, model: Any, X: pd.DataFrame, y: pd.Series[Any] | np.ndarray[Any, Any]):
        self.model = model
        self.X = X
        self.y = as_target(y)
        if len(self.y) == 0:
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
            raise _Unavailable("the model has no predict_proba")
        if self.classes is None:
            raise _Unavailable("the model has predict_proba but no classes_")
        proba = self._call("predict_proba")
        if proba.ndim != 2 or proba.shape[1] != len(self.classes):
            raise _Unavailable(
                f"predict_proba gave shape {proba.shape} for {len(self.classes)} classes"
            )
        unseen = sorted(set(self.y.tolist()) - set(self.classes.tolist()), key=str)
        if unseen:
            raise _Unavailable(f"the holdout has classes the model never saw: {unseen}")
        return proba

    def _call(self, method: str) -> np.ndarray[Any, Any]:
        try:
            return np.asarray(getattr(self.model, method)(self.X))
        except Exception as exc:
            raise TrainingError(
                f"the model's {method} failed on the holdout: {type(exc).__name__}: {exc}"
            ) from exc


def _compute(name: str, rows: _Rows) -> float:
    try:
        value = float(_METRICS[name](rows))
    except (TypeError, ValueError) as exc:
        # sklearn refusing these rows: labels of mixed types, probabilities not summing to 1
        raise _Unavailable(f"{type(exc).__name__}: {exc}") from exc
    if not math.isfinite(value):
        raise _Unavailable(f"{name} is {value}")
    return value


def _f1(rows: _Rows) -> float:
    y, predicted, classes = rows.y, rows.predicted, rows.classes
    seen = np.unique(np.concatenate([y, predicted]))
    if classes is None and len(seen) == 2:
        classes = seen
    if classes is not None and len(classes) == 2 and set(seen.tolist()) <= set(classes.tolist()):
        return float(f1_score(y, predicted, pos_label=classes[1], zero_division=0.0))
    return float(f1_score(y, predicted, average="macro", zero_division=0.0))


def _roc_auc(rows: _Rows) -> float:
    proba, y, classes = rows.proba, rows.y, rows.classes
    if classes is None:
        raise _Unavailable("the model has no classes_")
    if len(np.unique(y)) < 2:
        raise _Unavailable("the holdout has a single class")
    if len(classes) == 2:
        return float(roc_auc_score(y == classes[1], proba[:, 1]))
    scores = [
        roc_auc_score(y == label, proba[:, i])
        for i, label in enumerate(classes)
        if 0 < np.count_nonzero(y == label) < len(y)
    ]
    return float(np.mean(scores))


def _log_loss(rows: _Rows) -> float:
    return float(log_loss(rows.y, rows.proba, labels=rows.classes))


def _r2(rows: _Rows) -> float:
    if len(rows.y) < 2:
        raise _Unavailable("r2 needs at least two rows")
    return float(r2_score(rows.y, rows.predicted))


_METRICS: dict[str, Callable[[_Rows], Any]] = {
    "accuracy": lambda rows: accuracy_score(rows.y, rows.predicted),
    "f1": _f1,
    "roc_auc": _roc_auc,
    "log_loss": _log_loss,
    "rmse": lambda rows: root_mean_squared_error(rows.y, rows.predicted),
    "mae": lambda rows: mean_absolute_error(rows.y, rows.predicted),
    "r2": _r2,
}
