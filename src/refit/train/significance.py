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

from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from refit.train._bootstrap import Answers, NotPaired, bootstrap

Array = np.ndarray[Any, Any]

__all__ = ["Answers", "NotPaired", "compare", "detectable"]

BOOTSTRAP, MCNEMAR, DELONG = "bootstrap", "mcnemar", "delong"
DEFAULT_RESAMPLES = 1000
POWER = 0.8
"""The chance of detecting a difference of the minimum detectable size."""


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
        return asdict(self)


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
    raw, resampled = bootstrap(metric, truth, champion, challenger, resamples, seed)
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


def _binary(answers: Answers) -> bool:
    return answers.proba is not None and answers.classes is not None and len(answers.classes) == 2


def _positive_scores(answers: Answers) -> Array:
    if answers.proba is None:
        raise NotPaired("roc_auc needs probabilities")
    return np.asarray(answers.proba, dtype=np.float64)[:, 1]
