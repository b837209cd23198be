"""The registry: training runs, model versions, aliases and decisions, and (inherited from
`SnapshotRecords`) ingest batches and snapshots.

Every method is one transaction. Writes that must not interleave (allocating a version
number, moving an alias) are compare-and-set operations that either apply whole or raise
`ConflictError`, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import hashlib
import os
import socket
from typing import Any

from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from refit.errors import ConflictError, NotFoundError
from refit.registry.database import create_registry_engine, migrate
from refit.registry.signing import sign
from refit.registry.snapshots import SnapshotRecords
from refit.registry.tables import (
    AliasRow,
    DecisionRow,
    ModelVersionRow,
    TrainingRunRow,
    utcnow,
)

PRODUCTION = "production"
_VERSION_ATTEMPTS = 5


class Registry(SnapshotRecords):
    """Operations on the metadata store. Open one with `open_registry(url)`."""

    def __init__(self, engine: Engine, signing_key: bytes | None = None) -> None:
        super().__init__(engine)
        self.signing_key = signing_key
        """Signs each version registered (`refit.registry.signing`); None: versions unsigned."""

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
