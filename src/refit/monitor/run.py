"""One run of the monitor: `refit monitor`, scheduled by `refit up` or a Kubernetes CronJob.

A run

1. enforces retention: the log files whose newest row is older than `monitor.retention` leave
   the registry's index, then the artifact store;
2. reads the window: the predictions logged over the last `monitor.window` (then only the
   newest `monitor.window_rows` rows, if set);
3. judges drift for each version that served at least `monitor.min_rows` rows of it: each
   input of the version's signature against the version's training snapshot, and its
   predictions against those it made on its holdout (`ModelVersionRow.reference`): a
   classifier's labels and a clustering's cluster ids as categories, a regressor's values
   and an anomaly detector's scores as numbers. The report's drift is that of the version
   that served the newest rows;
4. measures live quality per version: the feedback of the window joined by request id and row
   to the predictions logged within the retention period, for versions with at least
   `monitor.min_labels` labelled rows, beside the estimate from the predicted probabilities of
   the window's rows (classifiers); a clustering is not judged, an anomaly detector on its
   flags' feedback only (the report's `skipped` says why);
5. asks for a training run when the newest version drifts (`monitor.retrain_on_drift`) or its
   live metric passes `monitor.min_quality` or falls further than `monitor.max_quality_drop`
   below its holdout's, and stores the report, both in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from refit.monitor.drift import DriftRule, feature_drift, prediction_drift
from refit.monitor.live import served_rows, version_quality
from refit.parquet import read_snapshot
from refit.prediction_logs import (
    AT,
    PREDICTION,
    SCORE,
    VERSION,
    input_column,
    label_text,
    labelled,
    read_logs,
)
from refit.registry import ModelVersionRow
from refit.registry.monitoring import (
    DRIFT,
    PREDICTIONS,
    QUALITY,
    add_report,
    add_report_asking,
    forget_logs,
    last_answered,
    list_logs,
)
from refit.registry.tables import MonitorReportRow, TrainRequestRow, utcnow
from refit.schedule import parse_duration
from refit.services import Services
from refit.signature import Signature
from refit.spec import METRICS, FeatureType, Spec

PREDICTION_KEY = "prediction"
"""The entry of a report's drift that judges the predictions, beside the features'."""
NUMERIC = frozenset({FeatureType.FLOAT, FeatureType.INT})

NOTHING_LOGGED = "nothing_logged"
TOO_FEW_ROWS = "too_few_rows"
JUDGED = "judged"


@dataclass(frozen=True)
class MonitorResult:
    """What one run found: its stored report, the training request it made or found open
    (None: it asked for none), how many log files retention deleted, and one line."""

    report: MonitorReportRow
    request: TrainRequestRow | None
    forgotten: int
    status: str
    """judged, too_few_rows (no verdict on drift) or nothing_logged."""
    line: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "line": self.line,
            "forgotten": self.forgotten,
            "report": self.report.to_dict(),
            "request": None if self.request is None else self.request.to_dict(),
        }


def run_monitor(services: Services, now: datetime | None = None) -> MonitorResult:
    """One run of the monitor on the project of `services` (see the module)."""
    spec, registry, store = services.project.spec, services.registry, services.store
    monitor, name = spec.monitor, spec.name
    now = now or utcnow()
    forgotten = forget_logs(
        registry, name, now - timedelta(seconds=parse_duration(monitor.retention))
    )
    for log in forgotten:
        store.delete(log.uri)
    since = now - timedelta(seconds=parse_duration(monitor.window))
    window = _window(
        read_logs(store, list_logs(registry, name, PREDICTIONS, since=since, until=now)),
        since,
        now,
        monitor.window_rows,
    )
    rule = DriftRule.of(monitor)
    rows = served_rows(window)
    newest = int(window[VERSION].iloc[-1]) if len(window) else None
    rows_of = {v: registry.get_version(name, v) for v in rows}
    snapshots: dict[str, pd.DataFrame] = {}
    versions: list[dict[str, Any]] = []
    drift: dict[str, Any] = {}
    for version in sorted(rows):
        entry: dict[str, Any] = {
            "version": version,
            "rows": rows[version],
            "newest": version == newest,
        }
        entry["drifted"] = None
        if rows[version] >= monitor.min_rows:
            judged = _version_drift(services, rows_of[version], window, rule, snapshots)
            entry["drifted"] = [f for f, d in judged.items() if d["drifted"]]
            if version == newest:
                drift = judged
        versions.append(entry)
    drifted = [f for f, d in drift.items() if d["drifted"]]
    quality = version_quality(services, window, rows_of, now, since)

    status = NOTHING_LOGGED if not len(window) else JUDGED if drift else TOO_FEW_ROWS
    report = MonitorReportRow(
        name=name,
        created_at=now,
        window_start=since,
        window_end=now,
        rows=len(window),
        versions=versions,
        drifted=drifted,
        drift=_finite(drift),
        quality=_finite(quality),
        cause=None,
    )
    ask = _asking(spec, drifted, quality.get(str(newest)) if newest is not None else None)
    answered = last_answered(registry, name)
    acted_on = (
        ask is not None
        and answered is not None
        and answered.handled_at is not None
        and window[AT].max() <= answered.handled_at
    )
    if acted_on:
        # Every row judged was answered before a run took up the last request: what they
        # show was acted on already, and asking again would retrain for the same evidence.
        ask = None
    request = None
    if ask is None:
        add_report(registry, report)
    else:
        request = add_report_asking(registry, report, *ask)
    line = describe(report, spec, status)
    if acted_on and answered is not None:
        line += f"; no new rows since run {answered.run_id} answered the last request"
    if ask is not None:
        line += f"; asked for training by {ask[0]} (report {report.id})"
    return MonitorResult(report, request, len(forgotten), status, line)


def _finite(value: Any) -> Any:
    """`value` with NaN and infinities as None: JSON that every registry takes (PostgreSQL's
    refuses NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _window(
    frame: pd.DataFrame, since: datetime, until: datetime, last_rows: int | None
) -> pd.DataFrame:
    """The logged rows answered from `since` to `until`, oldest first, the newest
    `last_rows` of them if set (a file may hold rows on both sides of the window's edge)."""
    if frame.empty:
        return pd.DataFrame({AT: pd.Series([], dtype="datetime64[us, UTC]"), VERSION: []})
    at = frame[AT]
    frame = frame[(at >= pd.Timestamp(since)) & (at <= pd.Timestamp(until))]
    frame = frame.sort_values(AT, kind="stable")
    if last_rows is not None:
        frame = frame.tail(last_rows)
    return frame.reset_index(drop=True)


def _version_drift(
    services: Services,
    version: ModelVersionRow,
    window: pd.DataFrame,
    rule: DriftRule,
    snapshots: dict[str, pd.DataFrame],
) -> dict[str, Any]:
    """Drift of what `version` answered in the window: each input against its training
    snapshot and its predictions against its holdout's; flagged first, most drifted first."""
    live = window[window[VERSION] == version.version]
    if version.snapshot_id not in snapshots:
        snapshot = services.registry.get_snapshot(version.snapshot_id, version.name)
        snapshots[version.snapshot_id] = read_snapshot(services.store, snapshot)
    training = snapshots[version.snapshot_id]
    signature = Signature.from_dict(version.signature)
    judged: dict[str, Any] = {}
    for column in signature.inputs:
        logged = input_column(column.name)
        if column.name not in training.columns or logged not in live.columns:
            continue  # a version of another spec: nothing to compare this input with
        numeric = column.type in NUMERIC
        judged[column.name] = feature_drift(
            _series(training[column.name], numeric), _series(live[logged], numeric), numeric, rule
        )
    reference = version.reference
    if reference is not None and SCORE in live.columns and "score" in reference:
        # an anomaly detector's answer is judged by its score, of which the flag is a cut
        ref_scores = [float(v) for v in reference["score"]]
        live_scores = live[SCORE].astype("float64").dropna().tolist()
        judged[PREDICTION_KEY] = prediction_drift(ref_scores, live_scores, True, rule)
    elif reference is not None and PREDICTION in live.columns:
        classifier = labelled(signature.output)  # labels are logged as text
        if classifier:
            ref_values: list[Any] = [label_text(v) for v in reference["predictions"]]
            live_values: list[Any] = live[PREDICTION].tolist()
        else:
            ref_values = [float(v) for v in reference["predictions"]]
            live_values = live[PREDICTION].astype("float64").tolist()
        judged[PREDICTION_KEY] = prediction_drift(ref_values, live_values, not classifier, rule)
    for entry in judged.values():
        entry["version"] = version.version
    order = sorted(judged, key=lambda f: (not judged[f]["drifted"], -float(judged[f]["score"])))
    return {f: judged[f] for f in order}


def _series(values: pd.Series[Any], numeric: bool) -> pd.Series[Any]:
    """Numbers as float64 with NaN for missing; anything else as objects with None."""
    if numeric:
        return pd.to_numeric(values, errors="coerce").astype("float64")
    return values.astype(object).where(values.notna(), None)


# --- asking for training -------------------------------------------------------------------


def _asking(
    spec: Spec, drifted: list[str], quality: dict[str, Any] | None
) -> tuple[str, str] | None:
    """(trigger, cause) of the training run to ask for, if any: drift of the newest version
    first, then a live metric of it past its bounds."""
    monitor = spec.monitor
    if drifted and monitor.retrain_on_drift:
        return DRIFT, f"drift in {named(drifted)}"
    if quality is None or quality["live"] is None:
        return None
    metric = quality["metric"]
    value = quality["live"].get(metric)
    if value is None:
        return None
    higher = METRICS[metric][1]
    labelled = quality["labelled"]
    if monitor.min_quality is not None and (
        value < monitor.min_quality if higher else value > monitor.min_quality
    ):
        side = "below" if higher else "above"
        return QUALITY, (
            f"live quality: {metric} {value:.4f} on {labelled} labelled rows is {side} "
            f"min_quality {monitor.min_quality:g}"
        )
    holdout = quality["holdout"]
    if monitor.max_quality_drop is not None and holdout is not None:
        drop = holdout - value if higher else value - holdout
        if drop > monitor.max_quality_drop:
            return QUALITY, (
                f"live quality: {metric} {value:.4f} on {labelled} labelled rows, {drop:.4f} worse "
                f"than the holdout's {holdout:.4f} (max_quality_drop {monitor.max_quality_drop:g})"
            )
    return None


# --- saying what it found ------------------------------------------------------------------


def describe(report: MonitorReportRow, spec: Spec, status: str | None = None) -> str:
    """One line for a report: rows judged, features flagged, live quality."""
    monitor = spec.monitor
    newest = next((v for v in report.versions if v["newest"]), None)
    if newest is None:
        return f"nothing logged in the window ({monitor.window})"
    head = f"{report.rows} rows in the window ({monitor.window}), newest from v{newest['version']}"
    if newest["drifted"] is None:
        head += (
            f": v{newest['version']} served {newest['rows']} of them, fewer than min_rows "
            f"{monitor.min_rows}: no verdict on drift"
        )
    elif report.drifted:
        head += f": drift in {named(report.drifted)}"
    else:
        head += f": no drift in {len(report.drift)} checked"
    parts = [head, *_quality_words(report.quality.get(str(newest["version"])))]
    return "; ".join(parts)


def named(features: list[str], most: int = 5) -> str:
    """The first `most` features, and how many more: `a, b, c and 4 more`."""
    shown = ", ".join(features[:most])
    return shown if len(features) <= most else f"{shown} and {len(features) - most} more"


def _quality_words(quality: dict[str, Any] | None) -> Iterator[str]:
    if quality is None:
        return
    metric = quality["metric"]
    live, estimate = quality["live"], quality["estimated"]
    if live is not None and metric in live:
        yield f"live {metric} {live[metric]:.4f} on {quality['labelled']} labelled rows"
    elif quality["labelled"]:
        yield f"{quality['labelled']} labelled rows so far"
    if estimate is not None and metric in estimate:
        yield f"estimated {metric} {estimate[metric]:.4f}"
    if quality.get("skipped"):
        yield quality["skipped"]
