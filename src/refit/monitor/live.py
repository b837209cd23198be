"""Live quality, per version: the feedback of the monitor's window joined by (request id,
row) to the predictions logged within the retention period, measured once a version has
`monitor.min_labels` labelled rows, beside the estimate from the predicted probabilities of
the window's rows (classifiers), calibrated on the version's holdout.

A clustering has no true values to be judged by, and an anomaly detector only its flags'
feedback (true: an anomaly), with no estimate before it: each version's entry says so in
`skipped`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from refit.monitor.quality import estimated_quality, live_quality
from refit.prediction_logs import (
    AT,
    PREDICTION,
    PROBABILITIES,
    REQUEST_ID,
    ROW,
    SCORE,
    VALUE,
    VERSION,
    from_label_text,
    read_logs,
)
from refit.registry import ModelVersionRow
from refit.registry.monitoring import FEEDBACK, PREDICTIONS, list_logs
from refit.schedule import parse_duration
from refit.services import Services
from refit.signature import Signature
from refit.spec import Spec, Task

FALLBACK_METRIC = {
    Task.CLASSIFICATION: "accuracy",
    Task.REGRESSION: "rmse",
    Task.CLUSTERING: "silhouette",
    Task.ANOMALY: "f1",
}
"""The live metric judged when live quality cannot measure the spec's `model.metric`."""
NO_LIVE_QUALITY = "a clustering has no true values: live quality is not judged"
NO_FEEDBACK_YET = (
    "an anomaly detector's live quality is judged on feedback flags only (no estimate "
    "before them): {labelled} of min_labels {min_labels} so far"
)


def served_rows(window: pd.DataFrame) -> dict[int, int]:
    """The rows of the window by the version that answered them."""
    if not len(window):
        return {}
    counts = window[VERSION].astype("int64").value_counts()
    return {int(v): int(n) for v, n in zip(counts.index, counts, strict=True)}


# --- live quality --------------------------------------------------------------------------


def version_quality(
    services: Services,
    window: pd.DataFrame,
    versions: dict[int, ModelVersionRow],
    now: datetime,
    since: datetime,
) -> dict[str, Any]:
    """Per version: the rows it served in the window, its labelled rows, its live metrics
    (with at least `min_labels` of them), the estimate before labels, and its holdout metric."""
    spec, registry = services.project.spec, services.registry
    joined = _labelled(services, now, since)
    served = served_rows(window)
    numbers = sorted({*served, *served_rows(joined)})
    task = spec.model.task
    quality: dict[str, Any] = {}
    for number in numbers:
        row = versions.get(number) or registry.get_version(spec.name, number)
        signature = Signature.from_dict(row.signature)
        classes = signature.output.classes
        mine = joined[joined[VERSION] == number] if len(joined) else joined
        live = None
        if len(mine) >= spec.monitor.min_labels:
            truth = [from_label_text(v) for v in mine[VALUE]]
            if task is not Task.REGRESSION:
                predicted: list[Any] = [from_label_text(v) for v in mine[PREDICTION]]
            else:
                truth = [float(v) for v in truth]
                predicted = mine[PREDICTION].astype("float64").tolist()
            scores = _anomaly_scores(mine) if task is Task.ANOMALY else _scores(mine, classes)
            live = live_quality(task, truth, predicted, scores, classes)
        rows = window[window[VERSION] == number] if len(window) else window
        estimate = _estimate(rows, row, classes) if task is Task.CLASSIFICATION else None
        metric = _metric(spec, live or estimate or {})
        quality[str(number)] = {
            "rows": served.get(number, 0),
            "labelled": len(mine),
            "metric": metric,
            "holdout": row.metrics.get(metric),
            "live": live,
            "estimated": estimate,
        }
        skipped = _skipped(spec, len(mine), live)
        if skipped is not None:
            quality[str(number)]["skipped"] = skipped
    return quality


def _skipped(spec: Spec, labelled: int, live: dict[str, Any] | None) -> str | None:
    """Why live quality is not judged for a task without true values, or not yet."""
    if spec.model.task is Task.CLUSTERING:
        return NO_LIVE_QUALITY
    if spec.model.task is Task.ANOMALY and live is None:
        return NO_FEEDBACK_YET.format(labelled=labelled, min_labels=spec.monitor.min_labels)
    return None


def _anomaly_scores(rows: pd.DataFrame) -> np.ndarray[Any, Any] | None:
    """The rows' anomaly scores, when every row has one."""
    if SCORE not in rows or not len(rows) or rows[SCORE].isna().any():
        return None
    return rows[SCORE].to_numpy(dtype=np.float64)


def _labelled(services: Services, now: datetime, since: datetime) -> pd.DataFrame:
    """The feedback of the window joined by (request id, row) to the predictions logged
    within the retention period: one row per labelled prediction, the latest value sent."""
    spec, registry, store = services.project.spec, services.registry, services.store
    feedback = read_logs(store, list_logs(registry, spec.name, FEEDBACK, since=since, until=now))
    if feedback.empty:
        return feedback
    feedback = feedback[feedback[AT] >= pd.Timestamp(since)]
    if feedback.empty:
        return feedback
    kept = now - timedelta(seconds=parse_duration(spec.monitor.retention))
    latest = feedback[AT].max().to_pydatetime()
    logged = read_logs(store, list_logs(registry, spec.name, PREDICTIONS, since=kept, until=latest))
    if logged.empty:
        return logged
    keys = [REQUEST_ID, ROW]
    feedback = feedback.sort_values(AT, kind="stable").drop_duplicates(keys, keep="last")
    columns = [*keys, VERSION, PREDICTION, *(c for c in (PROBABILITIES, SCORE) if c in logged)]
    logged = logged.sort_values(AT, kind="stable").drop_duplicates(keys, keep="last")[columns]
    return feedback[[*keys, VALUE]].merge(logged, on=keys, how="inner", validate="one_to_one")


def _scores(rows: pd.DataFrame, classes: list[Any] | None) -> np.ndarray[Any, Any] | None:
    """The rows' probabilities as a matrix, when every row has them for every class."""
    if classes is None or PROBABILITIES not in rows or not len(rows):
        return None
    values = rows[PROBABILITIES].tolist()
    if any(v is None or len(v) != len(classes) for v in values):
        return None
    return np.asarray(values, dtype=np.float64)


def _estimate(
    rows: pd.DataFrame, version: ModelVersionRow, classes: list[Any] | None
) -> dict[str, Any] | None:
    """The estimate of a classifier's quality on rows without labels, calibrated on its
    holdout's probabilities and true labels."""
    reference = version.reference
    scores = _scores(rows, classes)
    if scores is None or classes is None or reference is None or "scores" not in reference:
        return None
    if reference.get("classes") != classes:
        return None
    return estimated_quality(
        scores, classes, np.asarray(reference["scores"], dtype=np.float64), reference["labels"]
    )


def _metric(spec: Spec, measured: dict[str, Any]) -> str:
    metric = spec.model.metric_name
    return metric if metric in measured else FALLBACK_METRIC[spec.model.task]
