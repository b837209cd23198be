"""The paired comparison the gate runs: its point values are the metrics' own, its intervals
cover, its exact tests agree with the bootstrap, and it is reproducible."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    root_mean_squared_error,
)

from refit.train.significance import (
    BOOTSTRAP,
    DELONG,
    MCNEMAR,
    Answers,
    NotPaired,
    compare,
    detectable,
)

CLASSES = np.array([False, True])


def binary(rows: int, signal: float, seed: int) -> tuple[np.ndarray[Any, Any], Answers]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows).astype(bool)
    return y, scored(y, signal, rng)


def scored(y: np.ndarray[Any, Any], signal: float, rng: np.random.Generator) -> Answers:
    p = np.clip(0.5 + signal * (y - 0.5) + rng.normal(0, 0.25, len(y)), 0.001, 0.999)
    return Answers(p > 0.5, np.c_[1 - p, p], CLASSES)


SKLEARN = {
    "accuracy": lambda y, a: accuracy_score(y, a.predicted),
    "f1": lambda y, a: f1_score(y, a.predicted),
    "precision": lambda y, a: precision_score(y, a.predicted),
    "recall": lambda y, a: recall_score(y, a.predicted),
    "roc_auc": lambda y, a: roc_auc_score(y, a.proba[:, 1]),
    "average_precision": lambda y, a: average_precision_score(y, a.proba[:, 1]),
    "log_loss": lambda y, a: log_loss(y, a.proba, labels=CLASSES),
}


@pytest.mark.parametrize("metric", list(SKLEARN))
def test_the_difference_is_that_of_the_metrics_themselves(metric: str) -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500).astype(bool)
    first, second = scored(y, 0.3, rng), scored(y, 0.5, rng)
    higher = metric != "log_loss"
    result = compare(metric, y, first, second, higher_is_better=higher, exact=False)
    expected = SKLEARN[metric](y, second) - SKLEARN[metric](y, first)
    assert result.difference == pytest.approx(expected if higher else -expected, abs=1e-9)
    assert result.low <= result.difference <= result.high
    assert result.test == BOOTSTRAP and result.rows == 500


@pytest.mark.parametrize(
    ("metric", "score"),
    [
        ("rmse", root_mean_squared_error),
        ("mae", mean_absolute_error),
        ("r2", r2_score),
    ],
)
def test_regression_metrics_compare_too(metric: str, score: Any) -> None:
    rng = np.random.default_rng(4)
    y = rng.normal(size=400)
    worse, better = y + rng.normal(0, 1.0, 400), y + rng.normal(0, 0.5, 400)
    higher = metric == "r2"
    result = compare(metric, y, Answers(worse), Answers(better), higher_is_better=higher)
    raw = score(y, better) - score(y, worse)
    assert result.difference == pytest.approx(raw if higher else -raw)
    assert result.low > 0  # clearly better, whichever the direction of the metric


def test_macro_f1_and_multiclass_auc() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 600)
    classes = np.arange(3)

    def answers(noise: float) -> Answers:
        logits = np.eye(3)[y] + rng.normal(0, noise, (600, 3))
        proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return Answers(proba.argmax(axis=1), proba, classes)

    first, second = answers(1.0), answers(0.6)
    f1 = compare("f1", y, first, second, higher_is_better=True)
    expected = f1_score(y, second.predicted, average="macro") - f1_score(
        y, first.predicted, average="macro"
    )
    assert f1.difference == pytest.approx(expected)
    auc = compare("roc_auc", y, first, second, higher_is_better=True, resamples=200)
    assert auc.test == BOOTSTRAP
    expected = roc_auc_score(y, second.proba, multi_class="ovr") - roc_auc_score(
        y, first.proba, multi_class="ovr"
    )
    assert auc.difference == pytest.approx(expected)


@pytest.mark.parametrize(("metric", "test"), [("accuracy", MCNEMAR), ("roc_auc", DELONG)])
def test_the_exact_tests_agree_with_the_bootstrap(metric: str, test: str) -> None:
    y, first = binary(3000, 0.3, 6)
    second = scored(y, 0.36, np.random.default_rng(7))
    exact = compare(metric, y, first, second, higher_is_better=True)
    boot = compare(metric, y, first, second, higher_is_better=True, exact=False, resamples=2000)
    assert exact.test == test and boot.test == BOOTSTRAP
    assert exact.difference == pytest.approx(boot.difference)
    assert exact.se == pytest.approx(boot.se, rel=0.1)
    assert exact.low == pytest.approx(boot.low, abs=0.3 * boot.se)
    assert exact.high == pytest.approx(boot.high, abs=0.3 * boot.se)


def test_the_same_seed_gives_the_same_interval_and_another_seed_another() -> None:
    y, first = binary(800, 0.3, 8)
    second = scored(y, 0.35, np.random.default_rng(9))
    one = compare("f1", y, first, second, higher_is_better=True, seed=11)
    again = compare("f1", y, first, second, higher_is_better=True, seed=11)
    other = compare("f1", y, first, second, higher_is_better=True, seed=12)
    assert one == again
    assert (one.low, one.high) != (other.low, other.high)


def test_two_models_of_the_same_quality_are_rarely_told_apart() -> None:
    """The interval at 0.95 holds 0 for about 95% of pairs of equally good models."""
    held = 0
    trials = 60
    for seed in range(trials):
        y, first = binary(300, 0.4, 100 + seed)
        second = scored(y, 0.4, np.random.default_rng(1000 + seed))
        result = compare("roc_auc", y, first, second, higher_is_better=True, exact=False)
        held += result.low <= 0 <= result.high
    assert held >= 0.88 * trials


def test_a_real_margin_is_detected_where_the_rows_suffice_and_not_where_they_do_not() -> None:
    y, first = binary(20_000, 0.30, 10)
    second = scored(y, 0.34, np.random.default_rng(11))
    large = compare("accuracy", y, first, second, higher_is_better=True)
    assert large.low > 0
    small = compare("accuracy", y[:60], _head(first, 60), _head(second, 60), higher_is_better=True)
    assert small.low <= 0 < small.high
    needs = detectable(small, wanted=large.difference)
    assert needs.difference > large.difference and needs.needed is not None
    assert needs.needed > 60
    assert detectable(large, wanted=large.low / 2).needed is None  # cleared already
    assert detectable(large, wanted=1.0).needed is None


def _head(answers: Answers, rows: int) -> Answers:
    proba = None if answers.proba is None else answers.proba[:rows]
    return Answers(answers.predicted[:rows], proba, answers.classes)


def test_a_metric_without_a_paired_form_says_so() -> None:
    y, first = binary(50, 0.3, 12)
    with pytest.raises(NotPaired, match="silhouette"):
        compare("silhouette", y, first, first, higher_is_better=True)
    with pytest.raises(NotPaired, match="single class"):
        compare("roc_auc", np.ones(50, dtype=bool), first, first, higher_is_better=True)
