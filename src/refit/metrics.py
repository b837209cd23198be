"""What each metric means: the one set of formulas from true values, predictions and
probabilities, used to score a holdout at training and live rows in the monitor.

Classification: `accuracy`; `f1` (binary with `classes[1]` as the positive class, macro-averaged
otherwise); `roc_auc` (binary from the probabilities of `classes[1]`, otherwise one-vs-rest
macro over the classes present in the true values); `log_loss` (over the model's classes).
Regression: `rmse`, `mae`, `r2`. Clustering and anomaly detection: see
`refit._metrics_unsupervised`. A metric that cannot be computed for the rows given raises
`Unavailable`, whose message says why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)

from refit import _metrics_unsupervised as unsupervised
from refit._metrics_unsupervised import Unavailable
from refit.spec import Task

__all__ = ["NAMES", "Rows", "Unavailable", "checked_proba", "compute"]

NAMES: dict[Task, tuple[str, ...]] = {
    Task.CLASSIFICATION: ("accuracy", "f1", "roc_auc", "log_loss"),
    Task.REGRESSION: ("rmse", "mae", "r2"),
    Task.CLUSTERING: ("silhouette", "davies_bouldin", "calinski_harabasz"),
    Task.ANOMALY: (
        "roc_auc",
        "average_precision",
        "f1",
        "precision",
        "recall",
        "excess_mass",
        "mass_volume",
    ),
}


class Rows(Protocol):
    """Scored rows: the true values and a model's answers on them.

    `predicted` are a classifier's labels, a regressor's values, cluster ids or anomaly flags
    (bool). `truth` raises `Unavailable` without true values (an unlabelled anomaly task);
    `proba` when there are no probabilities (or no classes to read them by); `space` (the
    rows in the evaluation space, [N, D]), `score` (each row's anomaly score) and
    `uniform_score` (the scores of points drawn uniformly in the rows' bounding box) when
    they cannot be had. A lazy implementation computes each only when a metric first needs it.
    """

    @property
    def task(self) -> Task: ...

    @property
    def truth(self) -> np.ndarray[Any, Any]: ...

    @property
    def predicted(self) -> np.ndarray[Any, Any]: ...

    @property
    def classes(self) -> np.ndarray[Any, Any] | None: ...

    @property
    def proba(self) -> np.ndarray[Any, Any]: ...

    @property
    def space(self) -> np.ndarray[Any, Any]: ...

    @property
    def score(self) -> np.ndarray[Any, Any]: ...

    @property
    def uniform_score(self) -> np.ndarray[Any, Any]: ...


def compute(name: str, rows: Rows) -> float:
    """The metric `name` of `rows` as a finite float, or `Unavailable`."""
    try:
        value = float(_formula(name, rows.task)(rows))
    except (TypeError, ValueError) as exc:
        # sklearn refusing these rows: labels of mixed types, probabilities not summing to 1
        raise Unavailable(f"{type(exc).__name__}: {exc}") from exc
    if not math.isfinite(value):
        raise Unavailable(f"{name} is {value}")
    return value


def _formula(name: str, task: Task) -> Callable[[Rows], Any]:
    if task is Task.CLUSTERING:
        return lambda rows: unsupervised.clustering(name, rows.space, rows.predicted)
    if task is Task.ANOMALY:
        if name in ("roc_auc", "average_precision"):
            return lambda rows: unsupervised.ranked(name, rows.truth, rows.score)
        if name in ("f1", "precision", "recall"):
            return lambda rows: unsupervised.flagged(name, rows.truth, rows.predicted)
        return _UNLABELLED[name]
    return _FORMULAS[name]


def checked_proba(
    proba: np.ndarray[Any, Any], classes: np.ndarray[Any, Any], truth: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """`proba` if it holds one column per class and `truth` only classes among `classes`."""
    if proba.ndim != 2 or proba.shape[1] != len(classes):
        raise Unavailable(f"predict_proba gave shape {proba.shape} for {len(classes)} classes")
    unseen = sorted(set(truth.tolist()) - set(classes.tolist()), key=str)
    if unseen:
        raise Unavailable(f"the holdout has classes the model never saw: {unseen}")
    return proba


def _f1(rows: Rows) -> float:
    y, predicted, classes = rows.truth, rows.predicted, rows.classes
    seen = np.unique(np.concatenate([y, predicted]))
    if classes is None and len(seen) == 2:
        classes = seen
    if classes is not None and len(classes) == 2 and set(seen.tolist()) <= set(classes.tolist()):
        return float(f1_score(y, predicted, pos_label=classes[1], zero_division=0.0))
    return float(f1_score(y, predicted, average="macro", zero_division=0.0))


def _roc_auc(rows: Rows) -> float:
    proba, y, classes = rows.proba, rows.truth, rows.classes
    if classes is None:
        raise Unavailable("the model has no classes_")
    if len(np.unique(y)) < 2:
        raise Unavailable("the holdout has a single class")
    if len(classes) == 2:
        return float(roc_auc_score(y == classes[1], proba[:, 1]))
    scores = [
        roc_auc_score(y == label, proba[:, i])
        for i, label in enumerate(classes)
        if 0 < np.count_nonzero(y == label) < len(y)
    ]
    return float(np.mean(scores))


def _log_loss(rows: Rows) -> float:
    return float(log_loss(rows.truth, rows.proba, labels=rows.classes))


def _r2(rows: Rows) -> float:
    if len(rows.truth) < 2:
        raise Unavailable("r2 needs at least two rows")
    return float(r2_score(rows.truth, rows.predicted))


_FORMULAS: dict[str, Callable[[Rows], Any]] = {
    "accuracy": lambda rows: accuracy_score(rows.truth, rows.predicted),
    "f1": _f1,
    "roc_auc": _roc_auc,
    "log_loss": _log_loss,
    "rmse": lambda rows: root_mean_squared_error(rows.truth, rows.predicted),
    "mae": lambda rows: mean_absolute_error(rows.truth, rows.predicted),
    "r2": _r2,
}


_UNLABELLED: dict[str, Callable[[Rows], Any]] = {
    "excess_mass": lambda rows: unsupervised.excess_mass(rows.score, rows.uniform_score),
    "mass_volume": lambda rows: unsupervised.mass_volume(rows.score, rows.uniform_score),
}
