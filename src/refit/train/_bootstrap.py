"""The paired bootstrap over rows (`refit.train.significance` uses it): each resample is a
draw of the rows with replacement, and the metric of every resample is computed at once, from
per-row components (for metrics that are functions of sums over rows: a gather of the drawn
rows) or from count weights over the rows in score order (roc_auc, average_precision)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]

CHUNK_CELLS = 4_000_000
"""Resamples are drawn in blocks of at most this many (resamples x rows) cells."""


@dataclass(frozen=True)
class Answers:
    """One model's answers on the rows: `predicted` labels or values ([N]) and, for a
    classifier, `proba` ([N, C], columns `classes`)."""

    predicted: Array
    proba: Array | None = None
    classes: Array | None = None


class NotPaired(ValueError):
    """The metric has no paired form refit can compute for these answers."""


Summed = tuple[Array, Callable[[Array, int], Array]]
"""A metric as per-row components ([N, K]) and the metric of their sums over a resample of a
number of rows (sums [B, K], rows -> [B]): every metric that is a function of sums over rows."""
Weighted = Callable[[Array], Array]
"""Count weights [B, N] -> the metric on each of the B resamples ([B]), for metrics of rows in
score order (roc_auc, average_precision)."""


def bootstrap(
    metric: str, truth: Array, champion: Answers, challenger: Answers, resamples: int, seed: int
) -> tuple[float, Array]:
    """The point difference (challenger - champion, raw) and the resampled ones."""
    rows = len(truth)
    rng = np.random.default_rng(seed)
    if metric in _RANKED:
        first, second = (_RANKED[metric](truth, a) for a in (champion, challenger))
        ones = np.ones((1, rows))
        point = float(second(ones)[0] - first(ones)[0])
        parts = [second(w) - first(w) for w in _count_weights(rng, rows, resamples)]
        return point, np.concatenate(parts)
    (c1, f1), (c2, f2) = (_summed(metric, truth, a) for a in (champion, challenger))
    if f1 is _MEAN:  # a mean's difference is the mean of the rows' differences: one column
        both, k = (c2 - c1).astype(np.float64), 0

        def difference(sums: Array) -> Array:
            return sums[:, 0] / rows

    else:
        both, k = np.column_stack([c1, c2]).astype(np.float64), c1.shape[1]

        def difference(sums: Array) -> Array:
            return f2(sums[:, k:], rows) - f1(sums[:, :k], rows)

    both = both.reshape(rows, -1)
    point = float(difference(both.sum(axis=0)[None, :])[0])
    block = max(1, CHUNK_CELLS // rows)
    parts = []
    for start in range(0, resamples, block):
        picks = rng.integers(0, rows, size=(min(block, resamples - start), rows), dtype=np.int64)
        sums = np.stack([column[picks].sum(axis=1) for column in both.T], axis=1)
        parts.append(difference(sums))
    return point, np.concatenate(parts)


def _count_weights(rng: np.random.Generator, rows: int, resamples: int) -> list[Array]:
    """`resamples` resamples of `rows` rows as count weights [B, N], in blocks."""
    block = max(1, CHUNK_CELLS // rows)
    out = []
    for start in range(0, resamples, block):
        count = min(block, resamples - start)
        picks = rng.integers(0, rows, size=(count, rows))
        picks += np.arange(count)[:, None] * rows
        counts = np.bincount(picks.ravel(), minlength=count * rows).reshape(count, rows)
        out.append(counts.astype(np.float64))
    return out


def _summed(metric: str, truth: Array, answers: Answers) -> Summed:
    predicted = np.asarray(answers.predicted)
    if metric == "accuracy":
        return _mean((predicted == truth).astype(float))
    if metric == "mae":
        return _mean(np.abs(_numbers(truth) - _numbers(predicted)))
    if metric == "log_loss":
        return _mean(_row_losses(truth, answers))
    if metric == "rmse":
        squared = (_numbers(truth) - _numbers(predicted)) ** 2
        return squared[:, None], lambda sums, rows: np.sqrt(sums[:, 0] / rows)
    if metric == "r2":
        y = _numbers(truth)
        errors = (y - _numbers(predicted)) ** 2
        return np.column_stack([errors, y, y**2]), _r2
    if metric in ("f1", "precision", "recall"):
        return _counted(metric, truth, predicted, answers.classes)
    raise NotPaired(f"{metric} has no paired bootstrap in refit")


def _numbers(values: Array) -> Array:
    return np.asarray(values, dtype=np.float64)


def _MEAN(sums: Array, rows: int) -> Array:
    return np.asarray(sums[:, 0] / rows)


def _mean(per_row: Array) -> Summed:
    return per_row[:, None], _MEAN


def _r2(sums: Array, rows: int) -> Array:
    errors, y, squares = sums.T
    spread = squares - y**2 / rows
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(1.0 - errors / spread)


def _row_losses(truth: Array, answers: Answers) -> Array:
    if answers.proba is None or answers.classes is None:
        raise NotPaired("log_loss needs probabilities")
    proba = np.asarray(answers.proba, dtype=np.float64)
    proba = proba / proba.sum(axis=1, keepdims=True)
    column = {c: i for i, c in enumerate(np.asarray(answers.classes).tolist())}
    index = np.fromiter((column[v] for v in truth.tolist()), np.int64, len(truth))
    eps = np.finfo(proba.dtype).eps
    return np.asarray(-np.log(np.clip(proba[np.arange(len(truth)), index], eps, 1 - eps)))


def _counted(metric: str, truth: Array, predicted: Array, classes: Array | None) -> Summed:
    """f1, precision, recall: of `classes[1]` with two classes, else macro over the labels."""
    seen = np.unique(np.concatenate([truth, predicted]))
    labels = classes if classes is not None and len(classes) == 2 else seen
    binary = len(labels) == 2 and set(seen.tolist()) <= set(np.asarray(labels).tolist())
    positives = [labels[1]] if binary else list(seen)
    columns = []
    for label in positives:
        real, said = truth == label, predicted == label
        columns += [real & said, ~real & said, real & ~said]  # tp, fp, fn

    def value(sums: Array, rows: int) -> Array:
        tp, fp, fn = sums[:, 0::3], sums[:, 1::3], sums[:, 2::3]
        if metric == "precision":
            top, bottom = tp, tp + fp
        elif metric == "recall":
            top, bottom = tp, tp + fn
        else:
            top, bottom = 2 * tp, 2 * tp + fp + fn
        scores = np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), 0.0)
        return np.asarray(scores.mean(axis=1))

    return np.column_stack(columns).astype(np.float64), value


def _ranked(positive: Array, score: Array, descending: bool) -> tuple[Array, Array, Array]:
    """The rows in score order, the start of each run of equal scores, and which are positive."""
    order = np.argsort(-score if descending else score, kind="mergesort")
    ordered = score[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return order, starts, positive[order]


def _auc_of(positive: Array, score: Array) -> Weighted:
    order, starts, pos = _ranked(positive, score, descending=False)

    def auc(w: Array) -> Array:
        w = w[:, order]
        p = np.add.reduceat(w * pos, starts, axis=1)
        n = np.add.reduceat(w * ~pos, starts, axis=1)
        below = np.cumsum(p, axis=1) - p  # positives scored under each run
        total_p, total_n = p.sum(axis=1), n.sum(axis=1)
        above = total_p[:, None] - below - p
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray((n * (above + 0.5 * p)).sum(axis=1) / (total_p * total_n))

    return auc


def _roc_auc(truth: Array, answers: Answers) -> Weighted:
    if answers.proba is None or answers.classes is None:
        raise NotPaired("roc_auc needs probabilities")
    proba = np.asarray(answers.proba, dtype=np.float64)
    classes = np.asarray(answers.classes)
    if len(classes) == 2:
        return _auc_of(truth == classes[1], proba[:, 1])
    present = [i for i, c in enumerate(classes) if 0 < np.count_nonzero(truth == c) < len(truth)]
    parts = [_auc_of(truth == classes[i], proba[:, i]) for i in present]
    return lambda w: np.asarray(np.mean([part(w) for part in parts], axis=0))


def _average_precision(truth: Array, answers: Answers) -> Weighted:
    """Of a binary classifier's probability of `classes[1]`, or of an anomaly score ([N]
    `proba`) against a true/1 label."""
    if answers.proba is None:
        raise NotPaired("average_precision needs scores")
    proba = np.asarray(answers.proba, dtype=np.float64)
    score = proba[:, 1] if proba.ndim == 2 else proba
    positive = truth == answers.classes[1] if answers.classes is not None else truth.astype(bool)
    order, starts, pos = _ranked(positive, score, descending=True)

    def average_precision(w: Array) -> Array:
        w = w[:, order]
        p = np.add.reduceat(w * pos, starts, axis=1)
        every = np.add.reduceat(w, starts, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.cumsum(p, axis=1) / np.cumsum(every, axis=1)
            return np.asarray((p * precision).sum(axis=1) / p.sum(axis=1))

    return average_precision


_RANKED: dict[str, Callable[[Array, Answers], Weighted]] = {
    "roc_auc": _roc_auc,
    "average_precision": _average_precision,
}
