"""Drift of one feature, or of the predictions: the rows of a live window against the rows a
version was trained on (or its holdout's predictions).

Every feature gets a distribution test, an effect size and a population stability index (PSI):

    kind      test                        effect size
    numeric   Kolmogorov-Smirnov ("ks")   Wasserstein distance over the reference's spread
    category  chi-squared ("chi2")        Jensen-Shannon distance, base 2

A feature drifts when its test is significant (p below `DriftRule.p_value`) **and** an effect
passes its threshold (the effect size `min_effect`, or the PSI `psi_threshold`): at tens of
thousands of rows every test is significant for a shift nobody cares about, and the effect
gate keeps those unflagged. Two more signals flag a feature on their own: its share of missing
values rising by more than `max_missing_increase`, and (categories) the share of live values
never seen in the reference passing `max_unseen_share`. Missing values stay out of the
distributions; so do unseen categories, judged by their own signal only.

Numeric values come as floats with NaN where missing; categories as objects with None there
(booleans are categories). Each side is sorted or hashed once, so a report costs O(n log n)
in its rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats  # type: ignore[import-untyped]
from scipy.spatial import distance  # type: ignore[import-untyped]

from refit._spec_monitor import MonitorSpec

NO_ROWS = "no rows"
"""The reason of a report with an empty side: no verdict."""
OTHER = "(other)"
"""The histogram bin of the categories past the top `TOP_CATEGORIES`."""
PSI_BINS = 10
HISTOGRAM_BINS = 20
TOP_CATEGORIES = 20
EPSILON = 1e-4
"""The share given to an empty bin in the PSI, whose logarithm would be infinite."""
_KSTWO_MAX_ROWS = 10_000
_IQR_TO_SD = 1.349
"""The interquartile range of a normal distribution, in standard deviations."""


def _default(name: str) -> float:
    return float(MonitorSpec.model_fields[name].default)


@dataclass(frozen=True)
class DriftRule:
    """When a feature drifts; the defaults are those of the spec's `monitor` section."""

    p_value: float = _default("p_value")
    min_effect: float = _default("min_effect")
    psi_threshold: float = _default("psi_threshold")
    max_missing_increase: float = _default("max_missing_increase")
    max_unseen_share: float = _default("max_unseen_share")

    @classmethod
    def of(cls, monitor: MonitorSpec) -> DriftRule:
        return cls(
            p_value=monitor.p_value,
            min_effect=monitor.min_effect,
            psi_threshold=monitor.psi_threshold,
            max_missing_increase=monitor.max_missing_increase,
            max_unseen_share=monitor.max_unseen_share,
        )


def feature_drift(
    reference: pd.Series[Any], live: pd.Series[Any], numeric: bool, rule: DriftRule
) -> dict[str, Any]:
    """The drift report of one feature, JSON-ready.

    Keys: `kind` ("numeric" or "category"), `drifted`, `reasons` (why it drifted, or why there
    is no verdict), `rows`, `values` (the rows not missing) and `missing` (the share of missing
    values) of `reference` and `live`, `psi`, `test` ("ks" or "chi2") with its `statistic` and
    `p_value`, `effect` ("wasserstein" or "jensen_shannon") with its `effect_size`, `unseen`
    (categories: the share of live values never seen in the reference, and `unseen_examples`,
    the most frequent of them; None for numbers), `histogram` (`bins`: edges or category
    labels, and the shares of `reference` and `live` in them), and `score`: how far the
    strongest signal that flags is past its threshold (1 = at it), to order features by.
    """
    if numeric:
        ref = reference.to_numpy(dtype=np.float64, na_value=np.nan)
        now = live.to_numpy(dtype=np.float64, na_value=np.nan)
        ref_missing, live_missing = ~np.isfinite(ref), ~np.isfinite(now)
        compare = _numeric
    else:
        ref, now = reference.to_numpy(dtype=object), live.to_numpy(dtype=object)
        ref_missing, live_missing = reference.isna().to_numpy(), live.isna().to_numpy()
        compare = _categorical
    report: dict[str, Any] = {
        "kind": "numeric" if numeric else "category",
        "rows": {"reference": len(ref), "live": len(now)},
        "missing": {"reference": _share(ref_missing), "live": _share(live_missing)},
        "values": {
            "reference": int(np.count_nonzero(~ref_missing)),
            "live": int(np.count_nonzero(~live_missing)),
        },
    }
    report.update(compare(ref[~ref_missing], now[~live_missing]))
    if not len(ref) or not len(now):
        return report | {"drifted": False, "reasons": [NO_ROWS], "score": 0.0}
    return report | _verdict(report, rule)


def prediction_drift(
    reference: Sequence[Any], live: Sequence[Any], numeric: bool, rule: DriftRule
) -> dict[str, Any]:
    """The same report for predictions: a regressor's values as numbers (None or NaN where
    missing), a classifier's labels as categories, given in the same form on both sides (the
    holdout's predicted labels, and the logged ones read back with `from_label_text`)."""
    if numeric:
        ref = pd.Series(np.asarray(reference, dtype=np.float64))
        now = pd.Series(np.asarray(live, dtype=np.float64))
    else:
        ref, now = pd.Series(list(reference), dtype=object), pd.Series(list(live), dtype=object)
    return feature_drift(ref, now, numeric, rule)


def psi(reference: np.ndarray[Any, Any], live: np.ndarray[Any, Any]) -> float:
    """The population stability index of two sets of shares over the same bins."""
    ref, now = np.maximum(reference, EPSILON), np.maximum(live, EPSILON)
    return float(np.sum((now - ref) * np.log(now / ref)))


def _numeric(ref: np.ndarray[Any, Any], now: np.ndarray[Any, Any]) -> dict[str, Any]:
    ref, now = np.sort(ref), np.sort(now)
    report: dict[str, Any] = {
        "test": "ks",
        "effect": "wasserstein",
        "unseen": None,
        "histogram": _numeric_histogram(ref, now),
    }
    if not len(ref) or not len(now):
        return report | {"statistic": 0.0, "p_value": 1.0, "effect_size": 0.0, "psi": 0.0}
    # One merged grid gives both statistics: KS is the largest gap between the two empirical
    # distribution functions, Wasserstein the area between them.
    grid = np.sort(np.concatenate([ref, now]))
    gap = np.abs(
        np.searchsorted(ref, grid, side="right") / len(ref)
        - np.searchsorted(now, grid, side="right") / len(now)
    )
    ks = float(gap.max())
    p_value = _ks_p_value(ks, len(ref) * len(now) / (len(ref) + len(now)))
    wasserstein = float(np.dot(gap[:-1], np.diff(grid)))
    quantiles = np.quantile(ref, [0.25, 0.75, *np.linspace(0, 1, PSI_BINS + 1)[1:-1]])
    spread = (quantiles[1] - quantiles[0]) / _IQR_TO_SD or float(np.std(ref)) or 1.0
    edges = np.unique(quantiles[2:])
    ref_shares = _counts(np.searchsorted(edges, ref, side="right"), len(edges) + 1) / len(ref)
    live_shares = _counts(np.searchsorted(edges, now, side="right"), len(edges) + 1) / len(now)
    return report | {
        "statistic": ks,
        "p_value": p_value,
        "effect_size": wasserstein / spread,
        "psi": psi(ref_shares, live_shares),
    }


def _ks_p_value(statistic: float, rows: float) -> float:
    """The two-sample Kolmogorov-Smirnov p-value of `statistic` at `rows` effective rows."""
    if rows < _KSTWO_MAX_ROWS:
        return float(stats.kstwo.sf(statistic, np.round(rows)))  # ks_2samp's "asymp" method
    # kstwo's cost grows with the rows (a second at 500,000); past 10,000 effective rows
    # Stephens' approximation of the limiting distribution agrees with it to a fraction of a
    # percent, at constant cost.
    root = math.sqrt(rows)
    return float(stats.kstwobign.sf((root + 0.12 + 0.11 / root) * statistic))


def _numeric_histogram(ref: np.ndarray[Any, Any], now: np.ndarray[Any, Any]) -> dict[str, Any]:
    ends = [side[i] for side in (ref, now) if len(side) for i in (0, -1)]
    low, high = (min(ends), max(ends)) if ends else (0.0, 1.0)
    if low == high:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    return {
        "bins": edges.tolist(),
        "reference": _shares(np.histogram(ref, bins=HISTOGRAM_BINS, range=(low, high))[0]),
        "live": _shares(np.histogram(now, bins=HISTOGRAM_BINS, range=(low, high))[0]),
    }


def _categorical(ref: np.ndarray[Any, Any], now: np.ndarray[Any, Any]) -> dict[str, Any]:
    codes, labels = pd.factorize(np.concatenate([ref, now]))
    ref_counts = _counts(codes[: len(ref)], len(labels))
    live_counts = _counts(codes[len(ref) :], len(labels))
    seen = ref_counts > 0
    unseen = live_counts[~seen]
    examples = np.argsort(-live_counts * ~seen, kind="stable")[: min(5, np.count_nonzero(unseen))]
    report: dict[str, Any] = {
        "test": "chi2",
        "effect": "jensen_shannon",
        "unseen": float(unseen.sum() / len(now)) if len(now) else 0.0,
        "unseen_examples": [_plain(labels[i]) for i in examples],
        "histogram": _categorical_histogram(labels, ref_counts, live_counts),
    }
    ref_seen, live_seen = ref_counts[seen], live_counts[seen]
    if not live_seen.sum():
        return report | {"statistic": 0.0, "p_value": 1.0, "effect_size": 0.0, "psi": 0.0}
    ref_shares, live_shares = ref_seen / ref_seen.sum(), live_seen / live_seen.sum()
    statistic, p_value = 0.0, 1.0
    if len(ref_seen) > 1:
        test = stats.chi2_contingency(np.vstack([ref_seen, live_seen]), correction=False)
        statistic, p_value = float(test.statistic), float(test.pvalue)
    return report | {
        "statistic": statistic,
        "p_value": p_value,
        "effect_size": float(distance.jensenshannon(ref_shares, live_shares, base=2)),
        "psi": psi(ref_shares, live_shares),
    }


def _categorical_histogram(
    labels: np.ndarray[Any, Any],
    ref_counts: np.ndarray[Any, Any],
    live_counts: np.ndarray[Any, Any],
) -> dict[str, Any]:
    weight = _shares(ref_counts, as_list=False) + _shares(live_counts, as_list=False)
    top = np.argsort(-weight, kind="stable")[:TOP_CATEGORIES]
    bins = [_plain(labels[i]) for i in top]
    ref_top, live_top = ref_counts[top], live_counts[top]
    if len(labels) > TOP_CATEGORIES:
        bins.append(OTHER)
        ref_top = np.append(ref_top, ref_counts.sum() - ref_top.sum())
        live_top = np.append(live_top, live_counts.sum() - live_top.sum())
    return {"bins": bins, "reference": _shares(ref_top), "live": _shares(live_top)}


def _verdict(report: dict[str, Any], rule: DriftRule) -> dict[str, Any]:
    flags: list[str] = []
    signals = [0.0]
    if report["p_value"] < rule.p_value:
        effect, psi_ = report["effect_size"], report["psi"]
        signals += [effect / rule.min_effect, psi_ / rule.psi_threshold]
        passed = []
        if effect >= rule.min_effect:
            passed.append(f"{report['effect']} {effect:.3g} >= {rule.min_effect:g}")
        if psi_ >= rule.psi_threshold:
            passed.append(f"psi {psi_:.3g} >= {rule.psi_threshold:g}")
        if passed:
            flags.append(
                f"distribution shifted: {report['test']} p={report['p_value']:.2g} "
                f"< {rule.p_value:g}, " + ", ".join(passed)
            )
    was, now = report["missing"]["reference"], report["missing"]["live"]
    signals.append((now - was) / rule.max_missing_increase)
    if now - was > rule.max_missing_increase:
        flags.append(
            f"missing values rose from {was:.1%} to {now:.1%} "
            f"(by more than {rule.max_missing_increase * 100:g} points)"
        )
    unseen = report["unseen"]
    if unseen is not None:
        signals.append(unseen / rule.max_unseen_share)
        if unseen > rule.max_unseen_share:
            examples = ", ".join(map(repr, report["unseen_examples"]))
            flags.append(
                f"{unseen:.1%} of live values are categories never seen in training "
                f"(more than {rule.max_unseen_share:.1%}), such as {examples}"
            )
    notes = [
        f"every {side} value is missing: no distributions to compare"
        for side, count in report["values"].items()
        if not count
    ]
    return {"drifted": bool(flags), "reasons": flags + notes, "score": float(max(signals))}


def _counts(codes: np.ndarray[Any, Any], size: int) -> np.ndarray[Any, Any]:
    return np.bincount(codes, minlength=size)[:size]


def _share(flags: np.ndarray[Any, Any]) -> float:
    return float(np.count_nonzero(flags) / len(flags)) if len(flags) else 0.0


def _shares(counts: np.ndarray[Any, Any], as_list: bool = True) -> Any:
    total = counts.sum()
    shares = counts / total if total else np.zeros(len(counts))
    return shares.tolist() if as_list else shares


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
