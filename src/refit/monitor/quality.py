"""The quality of a version on live rows: measured where clients sent the true values back
(feedback), and estimated from the predicted probabilities where they have not, yet.

The measured metrics are training's own (`refit.metrics`), so a live `f1` or `roc_auc` means
what the holdout's does. The estimate is confidence-based performance estimation (CBPE, as
NannyML does it): the probabilities are calibrated on the holdout (its scores and true
labels), and each unlabelled row then counts as right with the calibrated probability of the
class it was given. It holds as long as the relation between inputs and labels does (a
covariate shift moves it with the true quality; a change of concept does not show in it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from refit._metrics_unsupervised import anomaly_truth
from refit.metrics import NAMES, Unavailable, checked_proba, compute
from refit.spec import Task

ISOTONIC_ROWS = 1_000
"""A holdout of at least this many rows calibrates isotonically, class by class; a smaller one
by Platt scaling (a logistic curve over the logit of the score), which cannot overfit it."""
_CLIP = 1e-6


def live_quality(
    task: Task,
    truth: Sequence[Any],
    predicted: Sequence[Any],
    scores: np.ndarray[Any, Any] | None,
    classes: Sequence[Any] | None,
) -> dict[str, float]:
    """Training's metrics of `task` (see `refit.metrics`) on labelled live rows, and `rows`.

    `scores` are a classifier's probabilities, one column per class of `classes`, or an
    anomaly detector's scores (None when they were not logged). An anomaly task's true values
    and predictions are flags (true or 1: an anomaly). A metric that cannot be computed, such
    as `roc_auc` with one class among the true labels, is left out; a clustering has none.
    """
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} true values for {len(predicted)} predictions")
    result: dict[str, float] = {"rows": len(truth)}
    if not len(truth):
        return result
    if task is Task.REGRESSION:
        rows = _Labelled(task, np.asarray(truth, np.float64), np.asarray(predicted, np.float64))
    elif task is Task.ANOMALY:
        try:
            flags = anomaly_truth(list(truth)), anomaly_truth(list(predicted))
        except ValueError:  # feedback that is no flag: nothing to measure it by
            return result
        score = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
        rows = _Labelled(task, *flags, None, score)
    elif task is Task.CLUSTERING:
        return result
    else:
        rows = _Labelled(
            task,
            _labels(truth),
            _labels(predicted),
            None if classes is None else _labels(classes),
            None if scores is None else np.asarray(scores, dtype=np.float64),
        )
    for name in NAMES[task]:
        try:
            result[name] = compute(name, rows)
        except Unavailable:
            continue
    return result


def estimated_quality(
    scores: np.ndarray[Any, Any],
    classes: Sequence[Any],
    reference_scores: np.ndarray[Any, Any],
    reference_truth: Sequence[Any],
) -> dict[str, float]:
    """The expected `accuracy`, `f1` and `roc_auc` of unlabelled rows from their `scores` (a
    classifier's probabilities, one column per class), calibrated on the holdout's scores and
    true labels; with `rows` and `reference_rows`.

    Each row is taken as predicted the class of its highest score. `f1` and `roc_auc` are those
    of `classes[1]` for two classes, macro averages over the classes otherwise, as at training.
    Nothing is estimated without reference rows.
    """
    scores = _matrix(scores, len(classes), "scores")
    reference = _matrix(reference_scores, len(classes), "reference scores")
    if len(reference) != len(reference_truth):
        raise ValueError(f"{len(reference_truth)} true values for {len(reference)} reference rows")
    result: dict[str, float] = {"rows": len(scores), "reference_rows": len(reference)}
    if not len(scores) or not len(reference):
        return result
    truth, labels = _labels(reference_truth), _labels(classes)
    chosen = np.argmax(scores, axis=1)
    if len(labels) == 2:
        positive = _calibrated(reference[:, 1], truth == labels[1], scores[:, 1])
        proba = np.column_stack([1 - positive, positive])
        considered = [1]
    else:
        proba = np.column_stack(
            [
                _calibrated(reference[:, i], truth == label, scores[:, i])
                for i, label in enumerate(labels)
            ]
        )
        total = proba.sum(axis=1, keepdims=True)
        proba = np.where(total > 0, proba / np.where(total > 0, total, 1), scores)
        considered = list(range(len(labels)))
    result["accuracy"] = float(proba[np.arange(len(scores)), chosen].mean())
    f1 = [_expected_f1(proba[:, i], chosen == i) for i in considered]
    result["f1"] = float(np.mean(f1))
    auc = [
        value
        for i in considered
        if (value := _expected_roc_auc(scores[:, i], proba[:, i])) is not None
    ]
    if auc:
        result["roc_auc"] = float(np.mean(auc))
    return result


@dataclass(frozen=True)
class _Labelled:
    """Live rows with their true values, as `refit.metrics.Rows`."""

    task: Task
    truth: np.ndarray[Any, Any]
    predicted: np.ndarray[Any, Any]
    classes: np.ndarray[Any, Any] | None = None
    scores: np.ndarray[Any, Any] | None = None

    @property
    def proba(self) -> np.ndarray[Any, Any]:
        if self.scores is None:
            raise Unavailable("no probabilities")
        if self.classes is None:
            raise Unavailable("no classes to read the probabilities by")
        return checked_proba(self.scores, self.classes, self.truth)

    @property
    def score(self) -> np.ndarray[Any, Any]:
        if self.scores is None or self.scores.ndim != 1:
            raise Unavailable("no anomaly scores")
        return self.scores

    @property
    def space(self) -> np.ndarray[Any, Any]:
        raise Unavailable("live rows are not judged in an evaluation space")

    @property
    def uniform_score(self) -> np.ndarray[Any, Any]:
        raise Unavailable("live rows are judged against their labels only")


def _labels(values: Sequence[Any]) -> np.ndarray[Any, Any]:
    # pandas infers int64, float64, bool or object (text, or mixed) as training's targets are
    return pd.Series(list(values)).to_numpy()


def _matrix(values: np.ndarray[Any, Any], columns: int, name: str) -> np.ndarray[Any, Any]:
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != columns:
        raise ValueError(f"{name} of shape {matrix.shape}: expected one column per class")
    return matrix


def _calibrated(
    reference: np.ndarray[Any, Any], hits: np.ndarray[Any, Any], scores: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """The probability that a row is of a class, given its score for it: learnt from the
    holdout's scores and whether each of its rows is of that class (`hits`)."""
    if hits.all() or not hits.any():
        return np.full(len(scores), float(hits[0]))
    if len(reference) >= ISOTONIC_ROWS:
        isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        return np.asarray(isotonic.fit(reference, hits).predict(scores), dtype=np.float64)
    platt = LogisticRegression(C=1e4).fit(_logit(reference), hits)  # all but unregularised
    return np.asarray(platt.predict_proba(_logit(scores))[:, 1], dtype=np.float64)


def _logit(p: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    p = np.clip(p, _CLIP, 1 - _CLIP)
    logit: np.ndarray[Any, Any] = np.log(p / (1 - p))
    return logit.reshape(-1, 1)


def _expected_f1(p: np.ndarray[Any, Any], chosen: np.ndarray[Any, Any]) -> float:
    true_positive = float(np.dot(p, chosen))
    false_positive = float(chosen.sum()) - true_positive
    false_negative = float(p.sum()) - true_positive
    denominator = 2 * true_positive + false_positive + false_negative
    return 2 * true_positive / denominator if denominator > 0 else 0.0


def _expected_roc_auc(score: np.ndarray[Any, Any], p: np.ndarray[Any, Any]) -> float | None:
    """The ROC AUC of `score` when each row is a positive with weight `p` and a negative with
    weight `1 - p`; None when the rows expect no positive or no negative."""
    positives, negatives = float(p.sum()), float(len(p) - p.sum())
    if positives <= _CLIP or negatives <= _CLIP:
        return None
    thresholds, group = np.unique(-score, return_inverse=True)  # highest score first
    true_positive = np.concatenate([[0.0], np.cumsum(np.bincount(group, p, len(thresholds)))])
    false_positive = np.concatenate([[0.0], np.cumsum(np.bincount(group, 1 - p, len(thresholds)))])
    return float(np.trapezoid(true_positive / positives, false_positive / negatives))
