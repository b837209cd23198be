"""What the dashboard shows of a model, read from its registry: plain dicts of JSON values.

Every function is one bounded read (each query has a limit) and blocks, so the routes run it
in a thread; none of them writes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from refit.intervals import difference_text
from refit.registry import PRODUCTION, Registry
from refit.registry.heartbeats import is_stale, list_servers
from refit.registry.jobs import job_states
from refit.registry.monitoring import list_reports
from refit.registry.tables import (
    DecisionRow,
    IngestBatchRow,
    ModelVersionRow,
    MonitorReportRow,
    SnapshotRow,
    TrainingRunRow,
    utcnow,
)
from refit.schedule import parse_schedule
from refit.spec import Schedule

VERSIONS = 200
"""The newest versions the timeline shows."""
SNAPSHOTS = 50
"""The newest snapshots, and ingest batches, listed."""
REPORTS = 30
"""The newest monitor reports drift and quality are drawn from."""
DECISIONS = 1000
"""The most decisions the timeline marks."""
JOBS = ("ingest", "train", "monitor")


def summary(registry: Registry, name: str, serving: int | None) -> dict[str, Any]:
    """The version in production (with its snapshot, run and the decision that promoted it),
    the version this server serves, and the servers' heartbeats."""
    production = registry.alias_version(name, PRODUCTION)
    servers = list_servers(registry, name)[:100]
    now = utcnow()
    out: dict[str, Any] = {
        "name": name,
        "production": production,
        "serving": serving,
        "version": None,
        "snapshot": None,
        "run": None,
        "promotion": None,
        "servers": [
            {
                "instance": row.instance,
                "host": row.host,
                "pid": row.pid,
                "version": row.version,
                "serving_since": _when(row.serving_since),
                "seen_at": _when(row.seen_at),
                "started_at": _when(row.started_at),
                "stale": is_stale(row, now),
                "refused_version": row.refused_version,
                "refused_error": row.refused_error,
            }
            for row in servers
        ],
    }
    if production is None:
        return out
    with registry.read() as s:
        version = s.scalar(
            select(ModelVersionRow).where(
                ModelVersionRow.name == name, ModelVersionRow.version == production
            )
        )
        if version is None:
            return out
        snapshot = s.get(SnapshotRow, version.snapshot_id)
        run = s.get(TrainingRunRow, version.run_id)
        promotion = s.scalar(
            select(DecisionRow)
            .where(
                DecisionRow.name == name,
                DecisionRow.alias == PRODUCTION,
                DecisionRow.promoted.is_(True),
                DecisionRow.candidate_version == production,
            )
            .order_by(DecisionRow.id.desc())
            .limit(1)
        )
        first = last = None
        if snapshot is not None:
            first, last = _arrivals(s, name, snapshot)
    out["version"] = {
        "version": version.version,
        "created_at": _when(version.created_at),
        "status": version.status,
        "flavor": version.flavor,
        "task": version.task,
        "metric": version.metric,
        "value": version.metrics.get(version.metric),
        "metrics": version.metrics,
        "params": version.params,
        "code_revision": version.code_revision,
        "timings": version.timings,
        "onnx": (version.onnx or {}).get("status"),
    }
    if snapshot is not None:
        out["snapshot"] = {
            "id": snapshot.id,
            "rows": snapshot.row_count,
            "mode": snapshot.mode,
            "created_at": _when(snapshot.created_at),
            "data_from": _when(first),
            "data_to": _when(last),
            "columns": len(snapshot.columns),
        }
    if run is not None:
        out["run"] = {
            "id": run.id,
            "trigger": run.trigger,
            "cause": run.cause,
            "status": run.status,
            "started_at": _when(run.started_at),
            "finished_at": _when(run.finished_at),
        }
    if promotion is not None:
        out["promotion"] = _decision(promotion)
    return out


def versions(registry: Registry, name: str, limit: int) -> dict[str, Any]:
    """The newest `limit` versions (oldest first) with their gate metric, production's periods
    and the decisions taken since the oldest of them."""
    with registry.read() as s:
        rows = list(
            s.execute(
                select(
                    ModelVersionRow.version,
                    ModelVersionRow.created_at,
                    ModelVersionRow.status,
                    ModelVersionRow.metric,
                    ModelVersionRow.metrics,
                    TrainingRunRow.trigger,
                )
                .join(TrainingRunRow, TrainingRunRow.id == ModelVersionRow.run_id)
                .where(ModelVersionRow.name == name)
                .order_by(ModelVersionRow.version.desc())
                .limit(limit)
            )
        )
        rows.reverse()
        since = rows[0].created_at if rows else None
        query = select(DecisionRow).where(DecisionRow.name == name)
        if since is not None:
            query = query.where(DecisionRow.created_at >= since)
        decisions = list(s.scalars(query.order_by(DecisionRow.id.desc()).limit(DECISIONS)))
        decisions.reverse()
        production = s.scalar(
            select(DecisionRow.candidate_version)
            .where(DecisionRow.name == name, DecisionRow.alias == PRODUCTION)
            .where(DecisionRow.promoted.is_(True))
            .order_by(DecisionRow.id.desc())
            .limit(1)
        )
    periods: list[dict[str, Any]] = []
    for decision in decisions:
        if decision.alias != PRODUCTION or not decision.promoted:
            continue
        if periods:
            periods[-1]["to"] = _when(decision.created_at)
        periods.append(
            {"version": decision.candidate_version, "from": _when(decision.created_at), "to": None}
        )
    return {
        "name": name,
        "metric": rows[-1].metric if rows else None,
        "production": production,
        "versions": [
            {
                "version": row.version,
                "created_at": _when(row.created_at),
                "status": row.status,
                "metric": row.metric,
                "value": row.metrics.get(row.metric),
                "trigger": row.trigger,
            }
            for row in rows
        ],
        "periods": periods,
        "decisions": [_decision(d) for d in decisions],
    }


def snapshots(
    registry: Registry, name: str, schedule: Schedule | None, limit: int
) -> dict[str, Any]:
    """The newest `limit` snapshots and ingest batches, and each job's last run and, by
    `schedule` (None: unknown here), its next."""
    snaps = registry.list_snapshots(name, limit=limit)
    batches = registry.list_batches(name, limit=limit)
    states = job_states(registry, name)
    now = utcnow()
    jobs = []
    for job in JOBS:
        text = getattr(schedule, job) if schedule is not None else None
        state = states.get(job)
        last = state.last_started_at if state else None
        nxt = None
        if text is not None:
            nxt = parse_schedule(text).next_run(last, now)
        jobs.append(
            {
                "job": job,
                "schedule": text,
                "last_started_at": _when(last),
                "last_finished_at": _when(state.last_finished_at if state else None),
                "last_status": state.last_status if state else None,
                "last_message": state.last_message if state else None,
                "next_at": _when(nxt),
            }
        )
    return {
        "name": name,
        "snapshots": [
            {
                "id": row.id,
                "created_at": _when(row.created_at),
                "rows": row.row_count,
                "mode": row.mode,
                "size_bytes": row.size_bytes,
            }
            for row in snaps
        ],
        "batches": [
            {
                "id": row.id,
                "created_at": _when(row.created_at),
                "status": row.status,
                "rows_read": row.rows_read,
                "rows_valid": row.rows_valid,
                "rows_rejected": row.rows_rejected,
                "snapshot_id": row.snapshot_id,
                "reason": row.reason,
            }
            for row in batches
        ],
        "jobs": jobs,
    }


def drift(registry: Registry, name: str, limit: int) -> dict[str, Any]:
    """Each feature's drift score over the newest `limit` monitor reports (oldest first), and
    the newest report's features, flagged first, with their reference and live histograms."""
    reports = list_reports(registry, name, limit=limit)
    latest = reports[0] if reports else None
    series = [
        {
            "id": report.id,
            "created_at": _when(report.created_at),
            "rows": report.rows,
            "drifted": report.drifted,
            "scores": {f: d.get("score") for f, d in report.drift.items()},
        }
        for report in reversed(reports)
    ]
    return {"name": name, "reports": series, "latest": _latest(latest) if latest else None}


def quality(registry: Registry, name: str, limit: int) -> dict[str, Any]:
    """Live quality (from feedback) and its estimate before labels, per version, over the
    newest `limit` monitor reports (oldest first)."""
    reports = list_reports(registry, name, limit=limit)
    return {
        "name": name,
        "reports": [
            {"id": r.id, "created_at": _when(r.created_at), "versions": r.quality}
            for r in reversed(reports)
        ],
    }


def _arrivals(
    s: Session, name: str, snapshot: SnapshotRow
) -> tuple[datetime | None, datetime | None]:
    """When the first and the last rows of `snapshot` arrived: the ingest batch that made it
    and, for an appended snapshot, the project's first accepted batch before it."""
    made = s.scalar(
        select(IngestBatchRow)
        .where(IngestBatchRow.project == name, IngestBatchRow.snapshot_id == snapshot.id)
        .order_by(IngestBatchRow.id)
        .limit(1)
    )
    if made is None:
        return None, None
    if snapshot.mode != "append":
        return made.created_at, made.created_at
    first = s.scalar(
        select(IngestBatchRow.created_at)
        .where(
            IngestBatchRow.project == name,
            IngestBatchRow.status.in_(("accepted", "rebuilt")),
            IngestBatchRow.id <= made.id,
        )
        .order_by(IngestBatchRow.id)
        .limit(1)
    )
    return first, made.created_at


def _latest(report: MonitorReportRow) -> dict[str, Any]:
    features = [{"name": feature, **detail} for feature, detail in report.drift.items()]
    features.sort(key=lambda f: (not f.get("drifted"), -(f.get("score") or 0.0)))
    return {
        "id": report.id,
        "created_at": _when(report.created_at),
        "window_start": _when(report.window_start),
        "window_end": _when(report.window_end),
        "rows": report.rows,
        "versions": report.versions,
        "drifted": report.drifted,
        "cause": report.cause,
        "features": features,
    }


def _decision(row: DecisionRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "created_at": _when(row.created_at),
        "action": row.action,
        "alias": row.alias,
        "promoted": row.promoted,
        "candidate_version": row.candidate_version,
        "previous_version": row.previous_version,
        "metric": row.metric,
        "candidate_value": row.candidate_value,
        "champion_value": row.champion_value,
        "reason": row.reason,
        "actor": row.actor,
        "evidence": row.evidence,
        "difference": difference_text(row.evidence),
    }


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
