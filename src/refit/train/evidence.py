"""The gate's evidence: both models' answers on the same holdout rows, compared with an
interval (`refit.train.significance`) as `gate.test` asks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from refit.errors import TrainingError
from refit.spec import GateSpec, Spec
from refit.train.gate import interval
from refit.train.significance import (
    POWER,
    Answers,
    Comparison,
    Detectable,
    NotPaired,
    compare,
    detectable,
)

if TYPE_CHECKING:
    from refit.registry.tables import DecisionRow

_PROBABILITIES = frozenset({"roc_auc", "log_loss", "average_precision"})
"""The metrics read from probabilities rather than from the predicted labels."""


@dataclass(frozen=True)
class Evidence:
    """A paired comparison and what its rows can detect, or why there is none (`note`)."""

    comparison: Comparison | None
    detectable: Detectable | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any] | None:
        if self.comparison is None:
            return None
        found: dict[str, Any] = self.comparison.to_dict()
        if self.detectable is not None:
            found["detectable"] = {
                "difference": self.detectable.difference,
                "wanted": self.detectable.wanted,
                "needed_rows": self.detectable.needed,
            }
        return found


def answers(model: Any, X: pd.DataFrame, metric: str) -> Answers:
    """What `model` answers on `X` that `metric` reads."""
    predicted = np.asarray(_call(model, "predict", X))
    if metric not in _PROBABILITIES:
        return Answers(predicted)
    classes = getattr(model, "classes_", None)
    proba = np.asarray(_call(model, "predict_proba", X), dtype=np.float64)
    return Answers(predicted, proba, None if classes is None else np.asarray(classes))


def paired(
    gate: GateSpec,
    metric: str,
    higher_is_better: bool,
    y: Any,
    champion: Any,
    challenger: Any,
    X: pd.DataFrame,
) -> Evidence:
    """The challenger's difference from the champion on the rows `X`, `y`, per `gate.test`."""
    if gate.test == "none":
        return Evidence(None)
    truth = np.asarray(y)
    try:
        comparison = compare(
            metric,
            truth,
            answers(champion, X, metric),
            answers(challenger, X, metric),
            higher_is_better=higher_is_better,
            confidence=gate.confidence,
            resamples=gate.resamples,
            seed=gate.seed,
            exact=gate.test == "paired",
        )
    except NotPaired as exc:
        return Evidence(None, note=f"no paired test ({exc}): the point values decide")
    return Evidence(comparison, detectable(comparison, gate.min_improvement))


def detection_note(
    evidence: dict[str, Any] | None, spec: Spec, earlier: dict[str, Any] | None
) -> str | None:
    """What a decision's holdout (its recorded `evidence`) can detect, to be said once: when
    `gate.min_improvement` is 0, by the first decision compared with an interval; otherwise
    when the rows are too few to detect it (with the rows it would need), unless the decision
    before (`earlier`) said so already."""
    found = (evidence or {}).get("detectable")
    if evidence is None or not found:
        return None
    before = (earlier or {}).get("detectable")
    needed = found.get("needed_rows")
    detects = (
        f"the holdout's {evidence['rows']:,} rows detect a difference in "
        f"{spec.model.metric_name} of {found['difference']:.3g} or more (at "
        f"{evidence['confidence'] * 100:g}% with {POWER:.0%} power)"
    )
    if not found["wanted"]:
        return None if before else f"{detects}: a smaller improvement is not promoted"
    if not needed or (before and before.get("needed_rows")):
        return None
    return (
        f"{detects}, not gate.min_improvement {found['wanted']:g}: that needs about "
        f"{needed:,} holdout rows (more data, or a larger model.holdout.fraction)"
    )


def recorded(evidence: Mapping[str, Any] | None) -> Comparison | None:
    """The comparison a decision recorded (`DecisionRow.evidence`), or None."""
    if not evidence:
        return None
    return Comparison(**{name: evidence[name] for name in _FIELDS})


def difference_text(evidence: Mapping[str, Any] | None) -> str | None:
    """`+0.012 [0.004, 0.020]`: a decision's difference and interval, or None without one."""
    comparison = recorded(evidence)
    return None if comparison is None else interval(comparison, detail=False)


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


_FIELDS = tuple(field.name for field in fields(Comparison))


def _call(model: Any, method: str, X: pd.DataFrame) -> Any:
    try:
        return getattr(model, method)(X)
    except Exception as exc:
        raise TrainingError(
            f"the model's {method} failed on the holdout: {type(exc).__name__}: {exc}"
        ) from exc
