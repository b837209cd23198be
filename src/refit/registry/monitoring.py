"""The monitor's records: the index of prediction logs (and feedback) the servers write to the
artifact store, the monitor's reports, and the training runs it asks for.

A server writes a log file in full to the artifact store, then indexes it here in one
transaction (`add_log`): a file the index does not name was never announced, and the monitor
deletes what retention has passed from the index first, then from the store.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from refit.registry.registry import Registry
from refit.registry.tables import (
    MonitorReportRow,
    PredictionLogRow,
    TrainingRunRow,
    TrainRequestRow,
    utcnow,
)

PREDICTIONS = "predictions"
FEEDBACK = "feedback"
LOG_KINDS = (PREDICTIONS, FEEDBACK)
DRIFT = "drift"
QUALITY = "quality"
TRIGGERS = (DRIFT, QUALITY)
"""Why the monitor asks for a training run; the run it gets records this as its trigger."""
REFERENCE_ROWS = 5_000
"""The most holdout rows a version keeps as the reference of its predictions."""


def add_log(registry: Registry, log: PredictionLogRow) -> PredictionLogRow:
    """Index a log file already written in full to the artifact store."""
    if log.kind not in LOG_KINDS:
        raise ValueError(f"a log is of kind {' or '.join(LOG_KINDS)}, not {log.kind!r}")
    with registry.write() as s:
        s.add(log)
    return log


def list_logs(
    registry: Registry,
    name: str,
    kind: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[PredictionLogRow]:
    """Model `name`'s log files of `kind` holding rows from `since` to `until`, oldest first."""
    with registry.read() as s:
        query = select(PredictionLogRow).where(
            PredictionLogRow.name == name, PredictionLogRow.kind == kind
        )
        if since is not None:
            query = query.where(PredictionLogRow.last_at >= since)
        if until is not None:
            query = query.where(PredictionLogRow.first_at <= until)
        return list(s.scalars(query.order_by(PredictionLogRow.last_at, PredictionLogRow.id)))


def forget_logs(registry: Registry, name: str, before: datetime) -> list[PredictionLogRow]:
    """Take out of the index model `name`'s log files whose newest row is older than `before`
    (retention), and return them so that their files can be deleted."""
    with registry.write() as s:
        rows = list(
            s.scalars(
                select(PredictionLogRow).where(
                    PredictionLogRow.name == name, PredictionLogRow.last_at < before
                )
            )
        )
        if rows:
            s.execute(delete(PredictionLogRow).where(PredictionLogRow.id.in_([r.id for r in rows])))
        return rows


# --- reports ----------------------------------------------------------------------------------


def add_report(registry: Registry, report: MonitorReportRow) -> MonitorReportRow:
    with registry.write() as s:
        s.add(report)
    return report


def latest_report(registry: Registry, name: str) -> MonitorReportRow | None:
    reports = list_reports(registry, name, limit=1)
    return reports[0] if reports else None


def list_reports(registry: Registry, name: str, limit: int = 20) -> list[MonitorReportRow]:
    """Model `name`'s monitor reports, newest first."""
    with registry.read() as s:
        query = (
            select(MonitorReportRow)
            .where(MonitorReportRow.name == name)
            .order_by(MonitorReportRow.id.desc())
            .limit(limit)
        )
        return list(s.scalars(query))


# --- training requests --------------------------------------------------------------------------


def request_training(
    registry: Registry, name: str, trigger: str, cause: str, report_id: int | None = None
) -> TrainRequestRow:
    """Ask for a training run of model `name`; an open request is kept (with its first cause)
    rather than doubled, so a drift seen at every run asks once."""
    with registry.write() as s:
        return _request(s, name, trigger, cause, report_id)


def add_report_asking(
    registry: Registry, report: MonitorReportRow, trigger: str, cause: str
) -> TrainRequestRow:
    """Store `report` and, in the same transaction, ask for a training run (as
    `request_training`) whose cause, and the report's, is `cause (report N)`."""
    with registry.write() as s:
        s.add(report)
        s.flush()
        report.cause = f"{cause} (report {report.id})"
        return _request(s, report.name, trigger, report.cause, report.id)


def _request(
    s: Session, name: str, trigger: str, cause: str, report_id: int | None
) -> TrainRequestRow:
    open_ = s.scalar(
        select(TrainRequestRow)
        .where(TrainRequestRow.name == name, TrainRequestRow.run_id.is_(None))
        .order_by(TrainRequestRow.id)
        .limit(1)
    )
    if open_ is not None:
        return open_
    request = TrainRequestRow(name=name, trigger=trigger, cause=cause, report_id=report_id)
    s.add(request)
    s.flush()
    return request


def open_request(registry: Registry, name: str) -> TrainRequestRow | None:
    """The oldest training request of model `name` no run has answered yet."""
    with registry.read() as s:
        return s.scalar(
            select(TrainRequestRow)
            .where(TrainRequestRow.name == name, TrainRequestRow.run_id.is_(None))
            .order_by(TrainRequestRow.id)
            .limit(1)
        )


def last_answered(registry: Registry, name: str) -> TrainRequestRow | None:
    """The training request of model `name` a run answered last (None: none yet)."""
    with registry.read() as s:
        return s.scalar(
            select(TrainRequestRow)
            .where(TrainRequestRow.name == name, TrainRequestRow.handled_at.is_not(None))
            .order_by(TrainRequestRow.handled_at.desc())
            .limit(1)
        )


def answer_request(registry: Registry, request_id: int, run_id: str) -> None:
    """Record that training run `run_id` answers request `request_id` (and gives the run its
    cause)."""
    with registry.write() as s:
        request = s.get_one(TrainRequestRow, request_id)
        request.run_id, request.handled_at = run_id, utcnow()
        run = s.get(TrainingRunRow, run_id)
        if run is not None:
            run.cause = request.cause
