"""A version's reference: what it answered on its holdout, kept with the version so that the
monitor can compare what it answers when served (the predictions' drift) and calibrate its
estimate of live quality before labels arrive (the holdout's scores and true labels).

`holdout_reference(model, X, y, task)` gives, for at most `REFERENCE_ROWS` holdout rows (an
even sample of them when there are more), JSON-ready lists: `labels` (the true values; for an
anomaly task, its label as flags; absent without a label), `predictions` (a clustering's
cluster ids, an anomaly detector's flags) and, for a classifier with probabilities, `classes`
and `scores` (each row's probabilities in the order of `classes`); for an anomaly detector,
`score` (each row's anomaly score). Labels and predictions are plain JSON values, so
that `refit.prediction_logs.label_text` writes them as the server logs its answers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from refit._metrics_unsupervised import anomaly_truth
from refit.registry.monitoring import REFERENCE_ROWS
from refit.signature import anomaly_score
from refit.spec import Task


def holdout_reference(
    model: Any,
    X: pd.DataFrame,
    y: np.ndarray[Any, Any] | None,
    task: Task,
    rows: int = REFERENCE_ROWS,
) -> dict[str, Any]:
    """The model's answers on (at most `rows` of) the holdout `X`, `y`; see the module."""
    if len(X) > rows:
        keep = np.linspace(0, len(X) - 1, rows).round().astype(int)
        X, y = X.iloc[keep], None if y is None else y[keep]
    reference: dict[str, Any] = {}
    if y is not None:
        reference["labels"] = _plain(anomaly_truth(y) if task is Task.ANOMALY else y)
    if task is Task.ANOMALY:
        score = anomaly_score(model, X)
        reference["predictions"] = _plain(score > 0)
        reference["score"] = [round(float(s), 6) for s in score]
        return reference
    reference["predictions"] = _plain(np.asarray(model.predict(X)))
    classes = getattr(model, "classes_", None)
    if classes is not None and hasattr(model, "predict_proba"):
        scores = np.asarray(model.predict_proba(X), dtype=np.float64)
        reference["classes"] = _plain(np.asarray(classes))
        reference["scores"] = [[round(float(p), 6) for p in row] for row in scores]
    return reference


def _plain(values: np.ndarray[Any, Any]) -> list[Any]:
    """Plain Python values (numpy's become theirs), JSON-ready: a float that is whole stays a
    float here, and `label_text` writes `1.0` and `1` alike."""
    return [value.item() if isinstance(value, np.generic) else value for value in values]
