"""The registry's tables. The schema itself is owned by the Alembic migrations beside this file."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the registry; use datetime.now(UTC)")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_name)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for column in self.__table__.columns:
            value = getattr(self, column.key)
            out[column.key] = value.isoformat() if isinstance(value, datetime) else value
        return out


class SnapshotRow(Base):
    """An immutable dataset version; its id is the sha256 of its rows."""

    __tablename__ = "snapshots"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project: Mapped[str] = mapped_column(String(63), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    uri: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    row_count: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[str | None] = mapped_column(String(64))
    columns: Mapped[dict[str, Any]] = mapped_column()
    """Column name -> type, in order."""
    stats: Mapped[dict[str, Any]] = mapped_column()
    """Per-column statistics, the reference for drift checks."""


class IngestBatchRow(Base):
    """One run of ingest that found data: accepted into a snapshot, or refused."""

    __tablename__ = "ingest_batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(63), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16))
    """accepted (made a snapshot), unchanged (same data as a snapshot already made), refused,
    or rebuilt (a snapshot made again from the rows of every batch, under the current spec:
    its counts are those of the whole rebuild)."""
    description: Mapped[str] = mapped_column(Text)
    rows_read: Mapped[int] = mapped_column(Integer)
    rows_valid: Mapped[int] = mapped_column(Integer)
    rows_rejected: Mapped[int] = mapped_column(Integer)
    rows_uri: Mapped[str | None] = mapped_column(String(512), default=None)
    """The rows as read from the source, all their columns (None: nothing new was read, or
    the batch was ingested before refit kept them)."""
    rows_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    rejects_uri: Mapped[str | None] = mapped_column(String(512))
    rejects_sha256: Mapped[str | None] = mapped_column(String(64))
    snapshot_id: Mapped[str | None] = mapped_column(ForeignKey("snapshots.id"))
    reason: Mapped[str | None] = mapped_column(Text)


class SourceMarkRow(Base):
    """How far ingest has read a source: a file's sha256, or a SQL watermark."""

    __tablename__ = "source_marks"

    project: Mapped[str] = mapped_column(String(63), primary_key=True)
    key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    batch_id: Mapped[int] = mapped_column(ForeignKey("ingest_batches.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingRunRow(Base):
    """One attempt to train; failed and interrupted runs stay, with their error."""

    __tablename__ = "training_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), index=True)
    snapshot_id: Mapped[str] = mapped_column(ForeignKey("snapshots.id"))
    status: Mapped[str] = mapped_column(String(16))
    """running, succeeded, failed or interrupted."""
    trigger: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    cause: Mapped[str | None] = mapped_column(Text, default=None)
    """Why it ran beyond its trigger: the drift or the quality drop that asked for it."""


class ModelVersionRow(Base):
    """A trained model: artifact, signature, metrics and lineage."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), index=True)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="ready")
    task: Mapped[str] = mapped_column(String(16))
    flavor: Mapped[str] = mapped_column(String(16))
    format: Mapped[str] = mapped_column(String(16))
    artifact_uri: Mapped[str] = mapped_column(String(512))
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    artifact_size: Mapped[int] = mapped_column(BigInteger)
    signature: Mapped[dict[str, Any]] = mapped_column()
    params: Mapped[dict[str, Any]] = mapped_column()
    metric: Mapped[str] = mapped_column(String(32))
    """The metric the gate compares."""
    metrics: Mapped[dict[str, Any]] = mapped_column()
    snapshot_id: Mapped[str] = mapped_column(ForeignKey("snapshots.id"))
    run_id: Mapped[str] = mapped_column(ForeignKey("training_runs.id"))
    code_revision: Mapped[str | None] = mapped_column(String(128))
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    onnx: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    """The ONNX conversion: `status` ("ok", "unsupported: ...", "parity failed: ..."), and
    when ok the second artifact's `uri`, `sha256`, `size` and the parity check's figures."""
    manifest_signature: Mapped[str | None] = mapped_column(String(64), default=None)
    """HMAC-SHA256 (hex) of the version's manifest, when the registry signs versions."""
    reference: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    """What the version answered on its holdout, the monitor's reference for the predictions:
    `labels` (the true values), `predictions` and, for classifiers, `classes` and `scores`
    (each row's probabilities), at most `REFERENCE_ROWS` rows."""
    tuning: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    """The tuning step that chose `params`: `sampler`, `metric`, `folds`, `best` (the index of
    the best trial), `warm_start` and `trials`, each `{"number", "params", "score",
    "duration_s", "state"}` (`state`: "complete", "failed: ..."), in the order they ran."""
    code: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    """The user's code the version runs with (`model.features`, `model.postprocess`, a
    function's model): the artifact's `uri`, `sha256`, `size`, the `modules` it holds and the
    entry points (`features`, `postprocess`)."""


class AliasRow(Base):
    """A movable pointer, `name@alias` -> version."""

    __tablename__ = "aliases"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    alias: Mapped[str] = mapped_column(String(63), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class DecisionRow(Base):
    """Why an alias moved, or did not: gate results, manual promotions, rollbacks."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    action: Mapped[str] = mapped_column(String(16))
    """gate, promote (manual) or rollback."""
    alias: Mapped[str] = mapped_column(String(63))
    promoted: Mapped[bool] = mapped_column(Boolean)
    candidate_version: Mapped[int] = mapped_column(Integer)
    previous_version: Mapped[int | None] = mapped_column(Integer)
    """The version the alias pointed at when the decision was taken."""
    metric: Mapped[str | None] = mapped_column(String(32))
    candidate_value: Mapped[float | None] = mapped_column()
    champion_value: Mapped[float | None] = mapped_column()
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(255))
    evidence: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    """The gate's paired comparison on the holdout: the `difference` (challenger - champion,
    positive is better), its interval `low`, `high`, the `test`, `confidence`, `rows`,
    `resamples`, `seed`, `se`, and `detectable` (the smallest difference the rows detect,
    and the rows `min_improvement` would need)."""


class ServerRow(Base):
    """The heartbeat of one server process: what it serves, and what it refused."""

    __tablename__ = "servers"

    instance: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), index=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    version: Mapped[int | None] = mapped_column(Integer)
    """The version it serves; None before its first load."""
    serving_since: Mapped[datetime | None] = mapped_column(default=None)
    """When it began to serve `version` (None while it serves nothing)."""
    refused_version: Mapped[int | None] = mapped_column(Integer)
    refused_error: Mapped[str | None] = mapped_column(Text)


class LeaseRow(Base):
    """A lock with an expiry: who may run a job now. A holder that dies lets it lapse."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime] = mapped_column()
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobStateRow(Base):
    """The last run of a scheduled job, from which its next time follows."""

    __tablename__ = "job_state"

    project: Mapped[str] = mapped_column(String(63), primary_key=True)
    job: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_started_at: Mapped[datetime] = mapped_column()
    last_finished_at: Mapped[datetime | None] = mapped_column()
    last_status: Mapped[str] = mapped_column(String(16))
    """running, succeeded, failed or skipped."""
    last_message: Mapped[str | None] = mapped_column(Text)
    holder: Mapped[str] = mapped_column(String(255))


class PredictionLogRow(Base):
    """One Parquet file a server wrote to the artifact store: predictions it answered (with
    their inputs and request ids), or feedback (request ids with their true values)."""

    __tablename__ = "prediction_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    """predictions or feedback."""
    version: Mapped[int | None] = mapped_column(Integer)
    """The version that answered (None for feedback)."""
    instance: Mapped[str] = mapped_column(String(64))
    """The server process that wrote it (`refit.registry.heartbeats.new_instance`)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    first_at: Mapped[datetime] = mapped_column()
    last_at: Mapped[datetime] = mapped_column(index=True)
    rows: Mapped[int] = mapped_column(Integer)
    uri: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)


class MonitorReportRow(Base):
    """One run of the monitor: drift of the logged inputs and predictions against the
    training data, and live quality from feedback, per version."""

    __tablename__ = "monitor_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    window_start: Mapped[datetime | None] = mapped_column()
    window_end: Mapped[datetime | None] = mapped_column()
    rows: Mapped[int] = mapped_column(Integer)
    """Logged rows judged."""
    versions: Mapped[list[Any]] = mapped_column()
    """The versions that answered them."""
    drifted: Mapped[list[Any]] = mapped_column()
    """The features (and `prediction`) flagged, most drifted first."""
    drift: Mapped[dict[str, Any]] = mapped_column()
    """Per feature: kind, statistics, verdict, reasons, reference and live histograms."""
    quality: Mapped[dict[str, Any]] = mapped_column()
    """Per version: live metrics from feedback, labelled rows, the estimate before labels."""
    cause: Mapped[str | None] = mapped_column(Text)
    """Why it asked for a training run (None: it did not)."""


class TrainRequestRow(Base):
    """A training run asked for by the monitor (drift, a drop in live quality), answered by
    the next training run that has a new snapshot to train on."""

    __tablename__ = "train_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    trigger: Mapped[str] = mapped_column(String(32))
    """drift or quality."""
    cause: Mapped[str] = mapped_column(Text)
    report_id: Mapped[int | None] = mapped_column(ForeignKey("monitor_reports.id"))
    run_id: Mapped[str | None] = mapped_column(String(32), default=None)
    """The run that answered it (None: still open)."""
    handled_at: Mapped[datetime | None] = mapped_column(default=None)
