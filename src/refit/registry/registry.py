"""The registry: snapshots, model versions, aliases, training runs and decisions.

Every method is one transaction. Writes that must not interleave (allocating a version
number, moving an alias) are compare-and-set operations that either apply whole or raise
`ConflictError`, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from refit.errors import ConflictError, NotFoundError, StoreError
from refit.registry.database import WRITE, create_registry_engine, migrate
from refit.registry.signing import sign
from refit.registry.tables import (
    AliasRow,
    DecisionRow,
    IngestBatchRow,
    ModelVersionRow,
    SnapshotRow,
    SourceMarkRow,
    TrainingRunRow,
    utcnow,
)

PRODUCTION = "production"
_VERSION_ATTEMPTS = 5


class Registry:
    """Operations on the metadata store. Open one with `open_registry(url)`."""

    def __init__(self, engine: Engine, signing_key: bytes | None = None) -> None:
        self.engine = engine
        self.signing_key = signing_key
        """Signs each version registered (`refit.registry.signing`); None: versions unsigned."""
        self._reader = sessionmaker(engine, expire_on_commit=False)
        self._writer = sessionmaker(engine.execution_options(**WRITE), expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session, session.begin(), _reachable(self.engine):
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._writer() as session, session.begin(), _reachable(self.engine):
            yield session

    # --- ingest and snapshots ---------------------------------------------------------------

    def source_marks(self, project: str) -> dict[str, str]:
        with self.read() as s:
            rows = s.scalars(select(SourceMarkRow).where(SourceMarkRow.project == project))
            return {row.key: row.value for row in rows}

    def record_batch(
        self,
        batch: IngestBatchRow,
        marks: dict[str, str],
        snapshot: SnapshotRow | None = None,
    ) -> IngestBatchRow:
        """Record an ingest batch, its snapshot (unless already known) and the source marks."""
        with self.write() as s:
            if snapshot is not None and s.get(SnapshotRow, snapshot.id) is None:
                s.add(snapshot)
                s.flush()
            s.add(batch)
            s.flush()
            for key, value in marks.items():
                s.merge(
                    SourceMarkRow(
                        project=batch.project,
                        key=key,
                        value=value,
                        batch_id=batch.id,
                        updated_at=utcnow(),
                    )
                )
            return batch

    def restate_marks(self, project: str, marks: dict[str, str]) -> None:
        """Replace the values of marks already recorded (a file's new stamp over the same
        content); keys not recorded are left alone, and each row keeps its batch."""
        if not marks:
            return
        with self.write() as s:
            rows = s.scalars(
                select(SourceMarkRow).where(
                    SourceMarkRow.project == project, SourceMarkRow.key.in_(list(marks))
                )
            )
            for row in rows:
                row.value = marks[row.key]
                row.updated_at = utcnow()

    def get_snapshot(self, snapshot_id: str, project: str | None = None) -> SnapshotRow:
        """A snapshot by id or by a unique prefix of its id (at least 4 characters)."""
        with self.read() as s:
            query = select(SnapshotRow).where(SnapshotRow.id.startswith(snapshot_id.lower()))
            if project is not None:
                query = query.where(SnapshotRow.project == project)
            rows = list(s.scalars(query.limit(2))) if len(snapshot_id) >= 4 else []
        if not rows:
            raise NotFoundError(f"no snapshot {snapshot_id!r}; `refit snapshots list` shows them")
        if len(rows) > 1:
            raise NotFoundError(f"snapshot id {snapshot_id!r} is ambiguous: give more characters")
        return rows[0]

    def latest_snapshot(self, project: str) -> SnapshotRow | None:
        """The snapshot of the newest accepted (or rebuilt) ingest batch."""
        with self.read() as s:
            return s.scalar(
                select(SnapshotRow)
                .join(IngestBatchRow, IngestBatchRow.snapshot_id == SnapshotRow.id)
                .where(
                    IngestBatchRow.project == project,
                    IngestBatchRow.status.in_(("accepted", "rebuilt")),
                )
                .order_by(IngestBatchRow.id.desc())
                .limit(1)
            )

    def list_snapshots(self, project: str, limit: int = 50) -> list[SnapshotRow]:
        with self.read() as s:
            query = (
                select(SnapshotRow)
                .where(SnapshotRow.project == project)
                .order_by(SnapshotRow.created_at.desc(), SnapshotRow.id)
                .limit(limit)
            )
            return list(s.scalars(query))

    def get_batch(self, project: str, batch_id: int) -> IngestBatchRow:
        """One ingest batch of a project, by its id."""
        with self.read() as s:
            row = s.get(IngestBatchRow, batch_id)
        if row is None or row.project != project:
            raise NotFoundError(f"no ingest batch {batch_id}; `refit batches list` shows them")
        return row

    def list_batches(self, project: str, limit: int | None = 50) -> list[IngestBatchRow]:
        """The project's ingest batches, newest first (all of them with `limit=None`)."""
        with self.read() as s:
            query = (
                select(IngestBatchRow)
                .where(IngestBatchRow.project == project)
                .order_by(IngestBatchRow.id.desc())
                .limit(limit)
            )
            return list(s.scalars(query))

    # --- training runs and versions ---------------------------------------------------------

    def start_run(self, run_id: str, name: str, snapshot_id: str, trigger: str) -> TrainingRunRow:
        run = TrainingRunRow(
            id=run_id,
            name=name,
            snapshot_id=snapshot_id,
            status="running",
            trigger=trigger,
            host=socket.gethostname(),
            pid=os.getpid(),
            timings={},
        )
        with self.write() as s:
            s.add(run)
        return run

    def end_run(
        self,
        run_id: str,
        status: str,
        error: str | None = None,
        timings: dict[str, Any] | None = None,
    ) -> None:
        with self.write() as s:
            run = s.get_one(TrainingRunRow, run_id)
            run.status, run.error, run.finished_at = status, error, utcnow()
            if timings is not None:
                run.timings = timings

    def register_version(self, run_id: str, version: ModelVersionRow) -> ModelVersionRow:
        """Give `version` the next number, store it and mark its run succeeded, at once.

        With a signing key, the version is stored with the signature of its manifest."""
        for attempt in range(_VERSION_ATTEMPTS):
            try:
                with self.write() as s:
                    _lock_name(s, version.name)
                    latest = s.scalar(
                        select(func.max(ModelVersionRow.version)).where(
                            ModelVersionRow.name == version.name
                        )
                    )
                    version.version = (latest or 0) + 1
                    version.run_id = run_id
                    if self.signing_key is not None:
                        version.manifest_signature = sign(version, self.signing_key)
                    s.add(version)
                    run = s.get_one(TrainingRunRow, run_id)
                    run.status, run.finished_at = "succeeded", utcnow()
                    run.version, run.timings = version.version, dict(version.timings)
                    s.flush()
                return version
            except IntegrityError:
                # Another writer took the same number first despite the lock; take the next.
                version = _copy(version)
                if attempt == _VERSION_ATTEMPTS - 1:
                    raise ConflictError(
                        f"could not allocate a version number for {version.name} after "
                        f"{_VERSION_ATTEMPTS} attempts: too many trainers at once"
                    ) from None
        raise AssertionError("unreachable")

    def get_version(self, name: str, version: int) -> ModelVersionRow:
        with self.read() as s:
            row = s.scalar(
                select(ModelVersionRow).where(
                    ModelVersionRow.name == name, ModelVersionRow.version == version
                )
            )
        if row is None:
            raise NotFoundError(f"model {name} has no version {version}")
        return row

    def set_manifest_signature(self, name: str, version: int, signature: str) -> None:
        """Store the signature of a version registered before signing was turned on."""
        with self.write() as s:
            s.execute(
                update(ModelVersionRow)
                .where(ModelVersionRow.name == name, ModelVersionRow.version == version)
                .values(manifest_signature=signature)
            )

    def list_versions(self, name: str) -> list[ModelVersionRow]:
        with self.read() as s:
            query = (
                select(ModelVersionRow)
                .where(ModelVersionRow.name == name)
                .order_by(ModelVersionRow.version.desc())
            )
            return list(s.scalars(query))

    def list_runs(self, name: str, limit: int = 20) -> list[TrainingRunRow]:
        with self.read() as s:
            query = (
                select(TrainingRunRow)
                .where(TrainingRunRow.name == name)
                .order_by(TrainingRunRow.started_at.desc())
                .limit(limit)
            )
            return list(s.scalars(query))

    # --- aliases and decisions --------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, int]:
        with self.read() as s:
            rows = s.scalars(select(AliasRow).where(AliasRow.name == name))
            return {row.alias: row.version for row in rows}

    def alias_version(self, name: str, alias: str = PRODUCTION) -> int | None:
        with self.read() as s:
            row = s.get(AliasRow, (name, alias))
            return None if row is None else row.version

    def move_alias(self, decision: DecisionRow, expected: int | None) -> DecisionRow:
        """Point `decision.alias` at `decision.candidate_version` if it still points at
        `expected` (None: the alias does not exist yet), and record the decision with it.

        Raises `ConflictError` when the alias moved in the meantime: nothing is changed.
        """
        name, alias, target = decision.name, decision.alias, decision.candidate_version
        try:
            with self.write() as s:
                version = s.scalar(
                    select(ModelVersionRow).where(
                        ModelVersionRow.name == name, ModelVersionRow.version == target
                    )
                )
                if version is None:
                    raise NotFoundError(f"model {name} has no version {target}")
                if version.status != "ready":
                    raise ConflictError(f"{name} v{target} is {version.status}; cannot promote it")
                if expected is None:
                    if s.get(AliasRow, (name, alias)) is not None:
                        raise _moved(name, alias, expected, s)
                    s.add(AliasRow(name=name, alias=alias, version=target, updated_at=utcnow()))
                    s.flush()
                else:
                    moved = s.execute(
                        update(AliasRow)
                        .where(
                            AliasRow.name == name,
                            AliasRow.alias == alias,
                            AliasRow.version == expected,
                        )
                        .values(version=target, updated_at=utcnow())
                    )
                    if moved.rowcount != 1:  # type: ignore[attr-defined]
                        raise _moved(name, alias, expected, s)
                decision.previous_version = expected
                decision.promoted = True
                s.add(decision)
            return decision
        except IntegrityError:
            # Two first promotions raced on PostgreSQL; the other one inserted the alias.
            raise ConflictError(
                f"{name}@{alias} was created by another process while promoting v{target}"
            ) from None

    def record_decision(self, decision: DecisionRow) -> DecisionRow:
        with self.write() as s:
            s.add(decision)
        return decision

    def list_decisions(self, name: str, limit: int = 20) -> list[DecisionRow]:
        with self.read() as s:
            query = (
                select(DecisionRow)
                .where(DecisionRow.name == name)
                .order_by(DecisionRow.id.desc())
                .limit(limit)
            )
            return list(s.scalars(query))

    def rollback_target(self, name: str, alias: str = PRODUCTION) -> tuple[int, int]:
        """(current, previous): the version the alias holds and the one it held before that
        version was promoted. Rollbacks are skipped, so rolling back twice goes two steps."""
        current = self.alias_version(name, alias)
        if current is None:
            raise NotFoundError(f"{name}@{alias} is not set: there is nothing to roll back")
        with self.read() as s:
            promoted = s.scalar(
                select(DecisionRow)
                .where(
                    DecisionRow.name == name,
                    DecisionRow.alias == alias,
                    DecisionRow.promoted.is_(True),
                    DecisionRow.action != "rollback",
                    DecisionRow.candidate_version == current,
                )
                .order_by(DecisionRow.id.desc())
                .limit(1)
            )
        if promoted is None or promoted.previous_version is None:
            raise NotFoundError(
                f"{name}@{alias} (v{current}) has no earlier version to roll back to"
            )
        return current, promoted.previous_version


def open_registry(url: str, *, create: bool = True, signing_key: bytes | None = None) -> Registry:
    """Open (and migrate, if needed) the registry at a SQLAlchemy URL.

    A SQLite file that does not exist is made only with `create`; otherwise it is a
    `NoRegistryError`, so that a mistyped path never becomes a new, empty registry.
    """
    engine = create_registry_engine(url, create=create)
    migrate(engine)
    return Registry(engine, signing_key)


@contextmanager
def _reachable(engine: Engine) -> Iterator[None]:
    try:
        yield
    except OperationalError as exc:
        where = engine.url.render_as_string(hide_password=True)
        raise StoreError(f"registry database {where} failed: {exc.orig}") from None


def _moved(name: str, alias: str, expected: int | None, s: Session) -> ConflictError:
    row = s.get(AliasRow, (name, alias))
    now = "unset" if row is None else f"v{row.version}"
    was = "unset" if expected is None else f"v{expected}"
    return ConflictError(
        f"{name}@{alias} moved from {was} to {now} while this decision was being made; "
        "nothing was changed"
    )


def _lock_name(s: Session, name: str) -> None:
    """Serialise writers of one model's rows (SQLite's BEGIN IMMEDIATE already does)."""
    if s.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _copy(version: ModelVersionRow) -> ModelVersionRow:
    columns = {c.key: getattr(version, c.key) for c in ModelVersionRow.__table__.columns}
    columns.pop("id", None)
    return ModelVersionRow(**columns)
