"""How sure the gate can be: the difference between two models' metric on the same rows, with
an interval.

    comparison = compare("roc_auc", truth, champion, challenger, higher_is_better=True)
    comparison.difference, comparison.low, comparison.high   # challenger - champion

Both models answered the same holdout rows, so the comparison is paired: each resample of the
rows scores both models on that resample. The difference is direction-aware (positive: the
challenger is better, for every metric), and its interval holds `confidence` of the resampled
differences (two-sided).

- `bootstrap`: the paired bootstrap over rows, for every metric that decomposes into weighted
  sums over rows (accuracy, f1, precision, recall, log_loss, rmse, mae, r2) or over rows in
  score order (roc_auc, average_precision). Each resample is a row of multinomial weights, and
  the metric of all resamples is computed at once from those weights: no Python loop over rows
  or resamples. Seeded, so a decision can be computed again exactly.
- `mcnemar` (accuracy) and `delong` (binary roc_auc): the exact paired tests, in closed form,
  used by `compare` where they apply (they agree with the bootstrap and cost one pass).

`detectable` says how large a difference the rows can tell from noise, and how many rows a
smaller one would need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]

BOOTSTRAP, MCNEMAR, DELONG = "bootstrap", "mcnemar", "delong"
DEFAULT_RESAMPLES = 1000
POWER = 0.8
"""The chance of detecting a difference of the minimum detectable size."""
_CHUNK_CELLS = 4_000_000
"""Resample weights are drawn in blocks of at most this many (resamples x rows)."""


@dataclass(frozen=True)
class Answers:
    """One model's answers on the rows: `predicted` labels or values ([N]) and, for a
    classifier, `proba` ([N, C], columns `classes`)."""

    predicted: Array
    proba: Array | None = None
    classes: Array | None = None


@dataclass(frozen=True)
class Comparison:
    """The challenger's metric minus the champion's (direction-aware: positive is better)."""

    difference: float
    low: float
    high: float
    confidence: float
    test: str
    rows: int
    resamples: int | None
    seed: int
    se: float
    """The standard error of the difference (the spread of the resampled differences)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "difference": self.difference,
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "test": self.test,
            "rows": self.rows,
            "resamples": self.resamples,
            "seed": self.seed,
            "se": self.se,
        }


class NotPaired(ValueError):
    """The metric has no paired form refit can compute for these answers."""


def compare(
    metric: str,
    truth: Array,
    champion: Answers,
    challenger: Answers,
    *,
    higher_is_better: bool,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    exact: bool = True,
) -> Comparison:
    """The paired difference challenger - champion of `metric` on the rows of `truth`, with
    its interval at `confidence`; `exact`: use McNemar or DeLong where they apply."""
    rows = len(truth)
    if rows == 0:
        raise NotPaired("no rows to compare on")
    sign = 1.0 if higher_is_better else -1.0
    if exact and metric == "accuracy":
        return _mcnemar(truth, champion, challenger, confidence, seed)
    if exact and metric == "roc_auc" and _binary(champion) and _binary(challenger):
        return _delong(truth, champion, challenger, confidence, seed)
    raw, resampled = _bootstrap(metric, truth, champion, challenger, resamples, seed)
    point, differences = sign * raw, sign * resampled
    differences = differences[np.isfinite(differences)]
    if len(differences) < resamples // 2:
        raise NotPaired(f"{metric} could not be computed on most resamples of {rows} rows")
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(differences, [tail, 1.0 - tail])
    return Comparison(
        point,
        float(low),
        float(high),
        confidence,
        BOOTSTRAP,
        rows,
        resamples,
        seed,
        float(differences.std(ddof=1)),
    )


@dataclass(frozen=True)
class Detectable:
    """The smallest difference the rows detect at the confidence (with `POWER`), and the rows
    a difference of `wanted` would need (None: these rows are enough)."""

    difference: float
    rows: int
    needed: int | None
    wanted: float


def detectable(comparison: Comparison, wanted: float) -> Detectable:
    """How small a difference these rows can tell from noise, from the spread of the paired
    differences; the rows needed to detect `wanted` (the standard error falls as 1/sqrt(rows)),
    unless the interval clears `wanted` already."""
    z = NormalDist().inv_cdf(1.0 - (1.0 - comparison.confidence) / 2.0) + NormalDist().inv_cdf(
        POWER
    )
    smallest = z * comparison.se
    needed = None
    if wanted > 0 and smallest > wanted and comparison.low <= wanted:
        needed = int(np.ceil(comparison.rows * (smallest / wanted) ** 2))
    return Detectable(smallest, comparison.rows, needed, wanted)


# --- the exact tests --------------------------------------------------------------------------


def _mcnemar(
    truth: Array, champion: Answers, challenger: Answers, confidence: float, seed: int
) -> Comparison:
    """Accuracy: only the rows where exactly one model is right carry the difference."""
    n = len(truth)
    first = np.asarray(champion.predicted) == truth
    second = np.asarray(challenger.predicted) == truth
    gained = int(np.count_nonzero(second & ~first))
    lost = int(np.count_nonzero(first & ~second))
    difference = (gained - lost) / n
    variance = max(((gained + lost) - (gained - lost) ** 2 / n) / n**2, 0.0)
    return _normal(difference, variance, confidence, MCNEMAR, n, seed)


def _delong(
    truth: Array, champion: Answers, challenger: Answers, confidence: float, seed: int
) -> Comparison:
    """Binary ROC AUC: DeLong's variance of the paired difference, from midranks (Sun & Xu's
    fast form)."""
    assert champion.classes is not None
    positive = truth == champion.classes[1]
    m, k = int(positive.sum()), int((~positive).sum())
    if m == 0 or k == 0:
        raise NotPaired("the rows hold a single class: ROC AUC is undefined")
    scores = np.stack([_positive_scores(champion), _positive_scores(challenger)])
    v10 = np.empty((2, m))
    v01 = np.empty((2, k))
    aucs = np.empty(2)
    for i, score in enumerate(scores):
        pos, neg = score[positive], score[~positive]
        every = _midranks(np.concatenate([pos, neg]))
        pos_ranks, neg_ranks = _midranks(pos), _midranks(neg)
        v10[i] = (every[:m] - pos_ranks) / k
        v01[i] = 1.0 - (every[m:] - neg_ranks) / m
        aucs[i] = v10[i].mean()
    s10, s01 = np.cov(v10), np.cov(v01)
    contrast = np.array([-1.0, 1.0])
    variance = float(contrast @ s10 @ contrast / m + contrast @ s01 @ contrast / k)
    return _normal(
        float(aucs[1] - aucs[0]), max(variance, 0.0), confidence, DELONG, len(truth), seed
    )


def _normal(
    difference: float, variance: float, confidence: float, test: str, rows: int, seed: int
) -> Comparison:
    se = variance**0.5
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)
    return Comparison(
        difference, difference - z * se, difference + z * se, confidence, test, rows, None, seed, se
    )


def _midranks(values: Array) -> Array:
    """1-based ranks with ties given their mean rank."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0  # the mean of ranks starts+1 .. ends
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


# --- the bootstrap ----------------------------------------------------------------------------

Summed = tuple[Array, Callable[[Array, int], Array]]
"""A metric as per-row components ([N, K]) and the metric of their sums over a resample of a
number of rows (sums [B, K], rows -> [B]): every metric that is a function of sums over rows."""
Weighted = Callable[[Array], Array]
"""Count weights [B, N] -> the metric on each of the B resamples ([B]), for metrics of rows in
score order (roc_auc, average_precision)."""


def _bootstrap(
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
    block = max(1, _CHUNK_CELLS // rows)
    parts = []
    for start in range(0, resamples, block):
        picks = rng.integers(0, rows, size=(min(block, resamples - start), rows), dtype=np.int64)
        sums = np.stack([column[picks].sum(axis=1) for column in both.T], axis=1)
        parts.append(difference(sums))
    return point, np.concatenate(parts)


def _count_weights(rng: np.random.Generator, rows: int, resamples: int) -> list[Array]:
    """`resamples` resamples of `rows` rows as count weights [B, N], in blocks."""
    block = max(1, _CHUNK_CELLS // rows)
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


def _binary(answers: Answers) -> bool:
    return answers.proba is not None and answers.classes is not None and len(answers.classes) == 2


def _positive_scores(answers: Answers) -> Array:
    if answers.proba is None:
        raise NotPaired("roc_auc needs probabilities")
    return np.asarray(answers.proba, dtype=np.float64)[:, 1]


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
