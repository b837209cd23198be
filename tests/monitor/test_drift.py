from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from refit.monitor.drift import (
    NO_ROWS,
    OTHER,
    DriftRule,
    feature_drift,
    prediction_drift,
    psi,
)
from refit.spec import MonitorSpec

RULE = DriftRule()


def numbers(values: Any) -> pd.Series[Any]:
    return pd.Series(np.asarray(values, dtype=np.float64))


def categories(values: Any) -> pd.Series[Any]:
    return pd.Series(list(values), dtype=object)


def drawn(rng: np.random.Generator, labels: list[Any], shares: list[float], n: int) -> Any:
    return categories(rng.choice(np.asarray(labels, dtype=object), size=n, p=shares))


def test_the_rule_comes_from_the_spec_with_its_defaults() -> None:
    spec = MonitorSpec(p_value=0.05, min_effect=0.3, psi_threshold=0.5, max_unseen_share=0.2)
    assert DriftRule.of(spec) == DriftRule(
        p_value=0.05, min_effect=0.3, psi_threshold=0.5, max_unseen_share=0.2
    )
    assert DriftRule.of(MonitorSpec()) == DriftRule()


def test_the_same_distribution_is_not_flagged_at_large_n() -> None:
    rng = np.random.default_rng(0)
    report = feature_drift(
        numbers(rng.normal(size=200_000)), numbers(rng.normal(size=200_000)), True, RULE
    )
    assert not report["drifted"] and report["reasons"] == []
    assert report["effect_size"] < 0.01 and report["psi"] < 0.001


def test_a_tiny_shift_significant_at_large_n_is_kept_unflagged_by_the_effect_gate() -> None:
    rng = np.random.default_rng(1)
    reference, live = rng.normal(size=500_000), rng.normal(loc=0.02, size=500_000)
    report = feature_drift(numbers(reference), numbers(live), True, RULE)
    assert report["p_value"] < RULE.p_value  # the test alone would flag it
    assert report["effect_size"] < RULE.min_effect and report["psi"] < RULE.psi_threshold
    assert not report["drifted"] and report["score"] < 1


def test_one_shifted_feature_among_several_is_flagged_and_only_it() -> None:
    rng = np.random.default_rng(2)
    n = 50_000

    def frame(shift: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "normal": rng.normal(size=n),
                "shifted": rng.normal(loc=10 + shift * 3, scale=3, size=n),
                "skewed": rng.exponential(size=n),
                "uniform": rng.uniform(-5, 5, size=n),
                "plan": rng.choice(np.array(["basic", "pro", "team"], dtype=object), size=n),
            }
        )

    reference, live = frame(0.0), frame(0.5)
    reports = {
        name: feature_drift(reference[name], live[name], name != "plan", RULE)
        for name in reference.columns
    }
    assert [name for name, report in reports.items() if report["drifted"]] == ["shifted"]
    shifted = reports["shifted"]
    assert shifted["effect_size"] == pytest.approx(0.5, abs=0.03)
    assert shifted["reasons"][0].startswith("distribution shifted: ks p=")
    assert max(reports, key=lambda name: reports[name]["score"]) == "shifted"
    assert reports["plan"]["kind"] == "category" and reports["plan"]["test"] == "chi2"


def test_the_numeric_statistics_are_scipys() -> None:
    rng = np.random.default_rng(3)
    reference, live = rng.normal(size=3_000), rng.gamma(2.0, size=2_000)
    report = feature_drift(numbers(reference), numbers(live), True, RULE)
    ks = stats.ks_2samp(reference, live, method="asymp")
    assert report["statistic"] == pytest.approx(ks.statistic)
    assert report["p_value"] == pytest.approx(ks.pvalue)
    large = rng.normal(size=30_000), rng.normal(loc=0.02, size=30_000)
    assert feature_drift(numbers(large[0]), numbers(large[1]), True, RULE)["p_value"] == (
        pytest.approx(stats.ks_2samp(*large, method="asymp").pvalue, rel=0.01)
    )
    q1, q3 = np.quantile(reference, [0.25, 0.75])
    assert report["effect_size"] == pytest.approx(
        stats.wasserstein_distance(reference, live) / ((q3 - q1) / 1.349)
    )


def test_a_categorical_shift_is_flagged_by_chi2_and_jensen_shannon() -> None:
    rng = np.random.default_rng(4)
    labels = ["basic", "pro", "team", "enterprise"]
    reference = drawn(rng, labels, [0.4, 0.3, 0.2, 0.1], 20_000)
    moved = feature_drift(reference, drawn(rng, labels, [0.2, 0.3, 0.2, 0.3], 20_000), False, RULE)
    assert moved["drifted"]
    assert moved["test"] == "chi2" and moved["effect"] == "jensen_shannon"
    assert moved["effect_size"] == pytest.approx(
        _jensen_shannon([0.4, 0.3, 0.2, 0.1], [0.2, 0.3, 0.2, 0.3]), abs=0.02
    )
    still = feature_drift(reference, drawn(rng, labels, [0.4, 0.3, 0.2, 0.1], 20_000), False, RULE)
    assert not still["drifted"] and still["p_value"] > RULE.p_value


def _jensen_shannon(p: list[float], q: list[float]) -> float:
    middle = [(a + b) / 2 for a, b in zip(p, q, strict=True)]

    def kl(x: list[float]) -> float:
        return sum(a * math.log2(a / m) for a, m in zip(x, middle, strict=True) if a)

    return math.sqrt((kl(p) + kl(q)) / 2)


def test_unseen_categories_are_a_signal_of_their_own() -> None:
    rng = np.random.default_rng(5)
    labels = ["a", "b", "c"]
    reference = drawn(rng, labels, [0.5, 0.3, 0.2], 10_000)
    live = drawn(rng, [*labels, "new", "newer"], [0.45, 0.27, 0.18, 0.07, 0.03], 10_000)
    report = feature_drift(reference, live, False, RULE)
    assert report["drifted"]
    assert report["unseen"] == pytest.approx(0.10, abs=0.01)
    assert report["unseen_examples"] == ["new", "newer"]
    assert report["reasons"] == [
        f"{report['unseen']:.1%} of live values are categories never seen in training "
        "(more than 5.0%), such as 'new', 'newer'"
    ]
    # the categories seen keep their proportions: the test and the effect are left alone
    assert report["effect_size"] < 0.05

    few = drawn(rng, [*labels, "new"], [0.49, 0.294, 0.196, 0.02], 10_000)
    quiet = feature_drift(reference, few, False, RULE)
    assert not quiet["drifted"] and 0 < quiet["unseen"] < RULE.max_unseen_share


def test_a_rise_in_missing_values_is_flagged_on_its_own() -> None:
    rng = np.random.default_rng(6)
    reference = rng.normal(size=10_000)
    live = rng.normal(size=10_000)
    live[:2_500] = np.nan
    report = feature_drift(numbers(reference), numbers(live), True, RULE)
    assert report["drifted"]
    assert report["missing"] == {"reference": 0.0, "live": 0.25}
    assert report["values"] == {"reference": 10_000, "live": 7_500}
    assert report["reasons"] == ["missing values rose from 0.0% to 25.0% (by more than 10 points)"]
    assert report["p_value"] > RULE.p_value  # the values present are alike

    live[:9_000] = rng.normal(size=9_000)  # 5% missing now
    assert not feature_drift(numbers(reference), numbers(live), True, RULE)["drifted"]

    plans = categories(["a", "b", None, None] * 100)
    grown = feature_drift(categories(["a", "b"] * 200), plans, False, RULE)
    assert grown["drifted"] and grown["missing"]["live"] == 0.5
    assert grown["reasons"] == ["missing values rose from 0.0% to 50.0% (by more than 10 points)"]


def test_psi_over_reference_deciles_as_computed_by_hand() -> None:
    reference = np.arange(1_000, dtype=np.float64)  # deciles: 100 values in each
    # live: 55% in the first decile, 5% in each of the nine others
    live = np.concatenate([np.full(550, 50.0), np.repeat(np.arange(150.0, 1_000.0, 100.0), 50)])
    report = feature_drift(numbers(reference), numbers(live), True, RULE)
    by_hand = (0.55 - 0.1) * math.log(0.55 / 0.1) + 9 * (0.05 - 0.1) * math.log(0.05 / 0.1)
    assert report["psi"] == pytest.approx(by_hand) == pytest.approx(1.07905, abs=1e-5)


def test_psi_over_categories_as_computed_by_hand() -> None:
    report = feature_drift(
        categories(["a", "b"] * 50), categories(["a"] * 80 + ["b"] * 20), False, RULE
    )
    by_hand = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert report["psi"] == pytest.approx(by_hand)
    # an empty bin counts as a small share instead of an infinite logarithm
    assert psi(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == pytest.approx(
        0.5 * math.log(1 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    )


def test_numeric_histograms_share_twenty_bins_over_both_ranges() -> None:
    rng = np.random.default_rng(7)
    reference, live = rng.normal(size=5_000), rng.normal(loc=3, size=4_000)
    live[:100] = np.nan
    histogram = feature_drift(numbers(reference), numbers(live), True, RULE)["histogram"]
    assert len(histogram["bins"]) == 21
    assert histogram["bins"][0] == reference.min()
    assert histogram["bins"][-1] == np.nanmax(live)
    assert sum(histogram["reference"]) == pytest.approx(1)
    assert sum(histogram["live"]) == pytest.approx(1)
    assert len(histogram["reference"]) == len(histogram["live"]) == 20


def test_category_histograms_keep_the_top_twenty_and_the_rest_as_other() -> None:
    rng = np.random.default_rng(8)
    labels = [f"c{i:02}" for i in range(30)]
    weights = np.arange(30, 0, -1) / np.arange(30, 0, -1).sum()
    reference = drawn(rng, labels, list(weights), 20_000)
    live = drawn(rng, [*labels, "fresh"], [*(weights * 0.5), 0.5], 20_000)
    histogram = feature_drift(reference, live, False, RULE)["histogram"]
    assert len(histogram["bins"]) == 21 and histogram["bins"][-1] == OTHER
    assert histogram["bins"][:2] == ["fresh", "c00"]
    assert sum(histogram["reference"]) == pytest.approx(1)
    assert sum(histogram["live"]) == pytest.approx(1)
    assert histogram["reference"][0] == 0.0 and histogram["live"][0] == pytest.approx(0.5, 0.05)


def test_an_empty_side_has_no_verdict() -> None:
    for reference, live in [([], [1.0, 2.0]), ([1.0, 2.0], []), ([], [])]:
        report = feature_drift(numbers(reference), numbers(live), True, RULE)
        assert not report["drifted"] and report["reasons"] == [NO_ROWS]
        assert report["rows"] == {"reference": len(reference), "live": len(live)}
    report = feature_drift(categories([]), categories(["a"]), False, RULE)
    assert not report["drifted"] and report["reasons"] == [NO_ROWS]


def test_an_all_missing_side_is_judged_by_its_missing_values_only() -> None:
    report = feature_drift(numbers([1.0, 2.0, 3.0] * 10), numbers([np.nan] * 30), True, RULE)
    assert report["drifted"]
    assert report["reasons"] == [
        "missing values rose from 0.0% to 100.0% (by more than 10 points)",
        "every live value is missing: no distributions to compare",
    ]
    report = feature_drift(numbers([np.nan] * 30), numbers([1.0, 2.0] * 15), True, RULE)
    assert not report["drifted"]
    assert report["reasons"] == ["every reference value is missing: no distributions to compare"]
    report = feature_drift(categories([None] * 30), categories(["a"] * 30), False, RULE)
    assert report["drifted"] and report["unseen"] == 1.0


def test_a_constant_column_drifts_only_when_its_value_moves() -> None:
    same = feature_drift(numbers([3.0] * 500), numbers([3.0] * 400), True, RULE)
    assert not same["drifted"] and same["effect_size"] == 0.0
    assert same["histogram"]["bins"][0] == 2.5 and same["histogram"]["bins"][-1] == 3.5
    moved = feature_drift(numbers([3.0] * 500), numbers([3.5] * 400), True, RULE)
    assert moved["drifted"] and moved["effect_size"] == pytest.approx(0.5)  # spread 1


def test_booleans_are_categories() -> None:
    reference = pd.Series([True, False] * 500 + [None] * 10, dtype=object)
    live = pd.Series([True] * 900 + [False] * 100, dtype=bool)
    report = feature_drift(reference, live, False, RULE)
    assert report["kind"] == "category" and report["drifted"]
    assert report["histogram"]["bins"] == [True, False]
    assert report["missing"]["reference"] == pytest.approx(10 / 1010)


def test_prediction_drift_reads_labels_as_categories_and_values_as_numbers() -> None:
    rng = np.random.default_rng(9)
    labels = prediction_drift(["yes", "no"] * 500, ["yes"] * 800 + ["no"] * 200, False, RULE)
    assert labels["kind"] == "category" and labels["drifted"]
    values = prediction_drift(
        list(rng.normal(size=2_000)), [*rng.normal(size=1_998), None, None], True, RULE
    )
    assert values["kind"] == "numeric" and not values["drifted"]
    assert values["missing"]["live"] == 0.001


def test_reports_are_json_without_nan() -> None:
    rng = np.random.default_rng(10)
    cases = [
        feature_drift(numbers(rng.normal(size=300)), numbers([np.nan] * 5), True, RULE),
        feature_drift(numbers([]), numbers([]), True, RULE),
        feature_drift(pd.Series(np.arange(50)), pd.Series(np.arange(50) + 40), True, RULE),
        feature_drift(pd.Series([1, None, 3], dtype="Int64"), numbers([1.0, 2.0]), True, RULE),
        feature_drift(categories([1, 2, 2]), categories(np.array([2, 5, 5])), False, RULE),
    ]
    for report in cases:
        json.loads(json.dumps(report, allow_nan=False))
    assert cases[3]["missing"]["reference"] == pytest.approx(1 / 3)
    assert cases[4]["unseen_examples"] == [5] and type(cases[4]["unseen_examples"][0]) is int
