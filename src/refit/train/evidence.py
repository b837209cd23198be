"""The gate's evidence: both models' answers on the same holdout rows, compared with an
interval (`refit.train.significance`) as `gate.test` asks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from refit._metrics_unsupervised import anomaly_truth
from refit.errors import TrainingError
from refit.signature import anomaly_score
from refit.spec import GateSpec, Spec, Task
from refit.train.significance import (
    POWER,
    Answers,
    Comparison,
    Detectable,
    NotPaired,
    compare,
    detectable,
)

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


_FLAG_CLASSES = np.array([False, True])


def answers(model: Any, X: pd.DataFrame, metric: str, task: Task = Task.CLASSIFICATION) -> Answers:
    """What `model` answers on `X` that `metric` reads. An anomaly detector's answers read as a
    binary classifier's: the flag (true: an anomaly) and its score as the positive column."""
    if task is Task.ANOMALY:
        score = _call(anomaly_score, model, X)
        return Answers(score > 0, np.column_stack([-score, score]), _FLAG_CLASSES)
    predicted = np.asarray(_call(model.predict, X))
    if metric not in _PROBABILITIES:
        return Answers(predicted)
    classes = getattr(model, "classes_", None)
    proba = np.asarray(_call(model.predict_proba, X), dtype=np.float64)
    return Answers(predicted, proba, None if classes is None else np.asarray(classes))


def paired(
    gate: GateSpec,
    metric: str,
    higher_is_better: bool,
    y: Any,
    champion: Any,
    challenger: Any,
    X: pd.DataFrame,
    task: Task = Task.CLASSIFICATION,
) -> Evidence:
    """The challenger's difference from the champion on the rows `X`, `y`, per `gate.test`."""
    if gate.test == "none":
        return Evidence(None)
    if y is None:
        return Evidence(None, note=f"no paired test of {metric}: the point values decide")
    truth = anomaly_truth(y) if task is Task.ANOMALY else np.asarray(y)
    try:
        comparison = compare(
            metric,
            truth,
            answers(champion, X, metric, task),
            answers(challenger, X, metric, task),
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


def _call(method: Any, *args: Any) -> Any:
    try:
        return method(*args)
    except Exception as exc:
        name = getattr(method, "__name__", "answer")
        raise TrainingError(
            f"the model's {name} failed on the holdout: {type(exc).__name__}: {exc}"
        ) from exc
