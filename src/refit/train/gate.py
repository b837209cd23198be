"""The quality gate: does a newly trained version (challenger) replace production (champion)?

The rules, for a metric where higher is better (mirrored where lower is better):

1. The challenger must reach the floor `gate.min` (for lower-is-better metrics, stay at or
   under the ceiling `gate.max`). An unset bound is no bound; the bound of the other direction
   does not apply (the spec refuses it).
2. With no champion, that is enough.
3. Otherwise the improvement (challenger - champion, direction-aware) must be more than
   `gate.min_improvement`: a tie keeps production, so retraining on the same data moves no
   server. With `gate.promote_ties: true` an improvement of exactly `min_improvement` is
   enough (a tie promotes when it is 0: the challenger was trained on fresher data).
   Differences within float rounding count as equal.

With a paired comparison (`gate.test`: paired or bootstrap, `refit.train.significance`), rule 3
reads the interval of the difference on the same holdout rows instead of the point values: the
challenger is promoted when the whole interval lies past `min_improvement` (it is clearly
better), and with `promote_ties` when the interval reaches it (it is not clearly worse).

`decide` is pure: it reads numbers and returns a decision with a reason naming both numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from refit.intervals import interval_text
from refit.spec import GateSpec
from refit.train.significance import Comparison


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict, e.g. `GateDecision(False, "roc_auc 0.61 is below the floor 0.7")`."""

    promote: bool
    reason: str
    """One sentence with the numbers compared, e.g. "rmse 54.2 is above the ceiling 50"."""


def decide(
    metric: str,
    higher_is_better: bool,
    gate: GateSpec,
    challenger: float,
    champion: float | None,
    champion_version: int | None = None,
    comparison: Comparison | None = None,
) -> GateDecision:
    """Whether the challenger (its `metric` value) replaces the champion; see the module rules.
    With `comparison` (the paired difference on the holdout), its interval decides rule 3."""
    shown = f"{metric} {_num(challenger)}"
    if not math.isfinite(challenger):
        return GateDecision(False, f"{shown} is not a finite number")
    if higher_is_better and gate.min is not None and not _at_least(challenger, gate.min):
        return GateDecision(False, f"{shown} is below the floor {_num(gate.min)}")
    if not higher_is_better and gate.max is not None and not _at_least(gate.max, challenger):
        return GateDecision(False, f"{shown} is above the ceiling {_num(gate.max)}")

    if champion is None or not math.isfinite(champion):
        why = "there is no production version" if champion is None else "production has no score"
        return GateDecision(True, f"{shown} {_bound_met(higher_is_better, gate)} and {why}")

    production = "production" if champion_version is None else f"production v{champion_version}"
    if comparison is not None:
        return _by_interval(metric, gate, challenger, champion, production, comparison)
    versus = f"{production} ({_num(champion)})"
    improvement = challenger - champion if higher_is_better else champion - challenger
    margin = gate.min_improvement
    # An improvement within float rounding of the margin is a tie with it.
    tie = math.isclose(improvement, margin, rel_tol=1e-9, abs_tol=1e-12)
    if improvement > margin and not tie:
        return GateDecision(
            True, f"{shown} beats {versus} by {_num(abs(improvement))} > {_num(margin)}"
        )
    if not tie:
        by = f" by more than {_num(margin)}" if margin else ""
        return GateDecision(False, f"{shown} is not better than {versus}{by}")
    what = f"ties {versus}" if margin == 0 else f"beats {versus} by exactly {_num(margin)}"
    if gate.promote_ties:
        return GateDecision(True, f"{shown} {what}, which is enough with gate.promote_ties")
    return GateDecision(
        False, f"{shown} {what}: a tie keeps production (gate.promote_ties is false)"
    )


def _by_interval(
    metric: str,
    gate: GateSpec,
    challenger: float,
    champion: float,
    production: str,
    comparison: Comparison,
) -> GateDecision:
    margin = gate.min_improvement
    shown = f"{metric} {_num(challenger)} vs {production} {_num(champion)}: {interval(comparison)}"
    past = f" by more than {_num(margin)}" if margin else ""
    if comparison.low > margin and not _close(comparison.low, margin):
        return GateDecision(True, f"{shown}, clearly better{past}")
    if gate.promote_ties and (comparison.high > margin or _close(comparison.high, margin)):
        return GateDecision(
            True, f"{shown}, not clearly worse{past}, which is enough with gate.promote_ties"
        )
    return GateDecision(False, f"{shown}, not clearly better{past}: kept {production}")


def interval(comparison: Comparison) -> str:
    """`+0.012 [0.004, 0.020] at 95% (delong, 64 rows)`: a comparison as people read it."""
    c = comparison
    return interval_text(
        c.difference, c.low, c.high, confidence=c.confidence, test=c.test, rows=c.rows
    )


def _close(value: float, bound: float) -> bool:
    return math.isclose(value, bound, rel_tol=1e-9, abs_tol=1e-12)


def _bound_met(higher_is_better: bool, gate: GateSpec) -> str:
    if higher_is_better:
        return "has no floor" if gate.min is None else f"reaches the floor {_num(gate.min)}"
    return "has no ceiling" if gate.max is None else f"is within the ceiling {_num(gate.max)}"


def _at_least(value: float, bound: float) -> bool:
    """`value >= bound`, treating a difference within float rounding as equal."""
    return value >= bound or math.isclose(value, bound, rel_tol=1e-9, abs_tol=1e-12)


def _num(value: float) -> str:
    return f"{value:.6g}"
