"""What ingest records in the registry: its batches, the source marks each batch moved on,
and the snapshots they made.

Every method is one transaction; `Registry` (`refit.registry.registry`) has them all.
"""

from __future__ import annotations

from sqlalchemy import select

from refit.errors import NotFoundError
from refit.registry.database import Database
from refit.registry.tables import IngestBatchRow, SnapshotRow, SourceMarkRow, utcnow


class SnapshotRecords(Database):
    """Ingest batches, source marks and snapshots."""

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
