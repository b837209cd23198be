"""How the gate's paired comparisons read: `+0.012 [0.004, 0.020] at 95% (delong, 64 rows)`.

The gate (training) writes them into its reasons; `refit models decisions`, `refit status` and
the dashboard show each decision's recorded evidence (`DecisionRow.evidence`) the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from refit.registry.tables import DecisionRow


def interval_text(
    difference: float,
    low: float,
    high: float,
    *,
    confidence: float | None = None,
    test: str | None = None,
    rows: int | None = None,
) -> str:
    """`+0.012 [0.004, 0.020]`, then ` at 95% (delong, 64 rows)` when those are given."""
    # Enough decimals to show the interval's width with two significant digits.
    spread = abs(high - low) or abs(difference) or 1.0
    digits = min(6, max(2, 1 - math.floor(math.log10(spread))))
    shown = f"{difference:+.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
    if confidence is None:
        return shown
    return f"{shown} at {confidence * 100:g}% ({test}, {rows:,} rows)"


def difference_text(evidence: Mapping[str, Any] | None) -> str | None:
    """`+0.012 [0.004, 0.020]`: a decision's recorded difference and interval, or None."""
    if not evidence:
        return None
    return interval_text(evidence["difference"], evidence["low"], evidence["high"])


def summary(decision: DecisionRow) -> str:
    """A gate decision in a few words: "v7 is better by +0.012 [0.004, 0.020], promoted", or
    "v8: +0.003 [-0.010, 0.016], not clearly better, kept v7"; its reason otherwise."""
    shown = difference_text(decision.evidence)
    if shown is None:
        return decision.reason
    version = f"v{decision.candidate_version}"
    if decision.promoted:
        return f"{version} is better by {shown}, promoted"
    kept = f", kept v{decision.previous_version}" if decision.previous_version else ""
    return f"{version}: {shown}, not clearly better{kept}"
