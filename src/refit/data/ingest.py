"""One ingest run: read what is new, validate it, and make the next snapshot.

The order of writes is what makes a crash harmless: the snapshot's Parquet file (and the file of
rejected rows) are written in full to the artifact store first; then one registry transaction
records the batch, the snapshot and the source marks together. A process killed before that
transaction leaves at most an unreferenced file, and the next run reads the same rows again.

Every batch's rows are kept as read (all their columns) beside it, so that when the spec's
columns change (a feature added, removed or retyped) the snapshot is rebuilt from every row
read so far, validated again under the current spec; `rebuild=True` forces the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from refit.artifacts import ArtifactRef, ArtifactStore
from refit.columns import schema_change
from refit.data.batches import (
    Reader,
    duplicate_rows,
    keep_rows,
    kept_reader,
    reconcile,
    replay,
    too_many_rejects,
)
from refit.data.snapshots import combine, content_id
from refit.data.sources import LINE, Batch, Source, open_source
from refit.data.stats import column_stats
from refit.data.validation import validate
from refit.errors import DataError
from refit.parquet import from_parquet, to_parquet
from refit.project import Project
from refit.registry import IngestBatchRow, Registry, SnapshotRow
from refit.spec import SnapshotMode

Status = Literal["accepted", "rebuilt", "unchanged", "refused", "empty"]
REBUILD = "refit ingest --rebuild"
"""The reason recorded for a rebuild that was asked for."""
_LISTED_BATCHES = 3


@dataclass(frozen=True)
class IngestResult:
    """What one ingest run did."""

    status: Status
    """accepted: a new latest snapshot; rebuilt: a new latest snapshot made again from every
    batch read so far; unchanged: the data was already the latest snapshot; refused: the batch
    failed validation as a whole; empty: the source had nothing new."""
    message: str
    batch: IngestBatchRow | None = None
    snapshot: SnapshotRow | None = None
    duplicates: int = 0
    """Valid new rows equal in every column to a row of the previous snapshot (unless the
    mode is `latest`) or to an earlier row of the batch; dropped if `data.drop_duplicates`."""


def run_ingest(
    project: Project,
    registry: Registry,
    store: ArtifactStore,
    source: Source | None = None,
    *,
    rebuild: bool = False,
) -> IngestResult:
    """Read new data from the project's source into a snapshot (or refuse it).

    When the latest snapshot does not have the columns the spec gives (or with `rebuild`),
    the snapshot is rebuilt from the rows of every batch read so far and the new ones.
    """
    spec = project.spec
    source = source or open_source(spec.data.source, project.root, spec.storage.s3)
    batch = source.read_new(registry.source_marks(spec.name))
    # The same content under a new stamp: safe to record at any time, and apart from the batch.
    registry.restate_marks(spec.name, batch.restated)
    previous = registry.latest_snapshot(spec.name)
    changed = None if previous is None else schema_change(previous.columns, spec.data)
    if rebuild or changed:
        why = REBUILD if changed is None else str(changed)
        return _rebuild(project, registry, store, source, batch, previous, why)
    if not batch.marks:
        return IngestResult("empty", "no new data")
    rows_read = _rows_read(batch)
    try:
        validated = validate(batch.frame, spec.data)
    except DataError as exc:
        # A batch without the spec's columns: keep all its rows aside, and move past it.
        kept = _located(_kept_aside(batch.frame, str(exc)), batch)
        return _refuse(project, registry, store, batch, kept, exc)
    valid, rejects = validated.valid, _located(validated.rejects, batch)
    if error := too_many_rejects(rejects, rows_read, spec.data.max_reject_rate):
        refused = _kept_aside(batch.frame, "valid, but its batch was refused", validated.rejects)
        return _refuse(project, registry, store, batch, _located(refused, batch), error)

    rejected = _store_rejects(store, rejects)
    previous_frame = None
    if previous is not None:
        previous_frame = from_parquet(store.get(previous.uri, previous.sha256))
        previous_frame, valid = reconcile(previous_frame, valid, spec.data.target)
    rows_valid = len(valid)
    latest_only = spec.data.snapshot.mode is SnapshotMode.LATEST
    duplicated = duplicate_rows(None if latest_only else previous_frame, valid)
    duplicates = int(duplicated.sum())
    if spec.data.drop_duplicates and duplicates:
        valid = valid[~duplicated].reset_index(drop=True)
    frame = combine(previous_frame, valid, spec.data.snapshot, spec.data.time_column)
    snapshot_id = snapshot_key(spec.name, frame)
    kept_rows = keep_rows(store, batch.frame)
    record = IngestBatchRow(
        project=spec.name,
        status="accepted",
        description=batch.description,
        rows_read=rows_read,
        rows_valid=rows_valid,
        rows_rejected=len(rejects),
        rejects_uri=rejected.uri if rejected else None,
        rejects_sha256=rejected.sha256 if rejected else None,
        rows_uri=kept_rows.uri,
        rows_sha256=kept_rows.sha256,
        reason=None,
    )
    if len(frame) == 0 or (previous is not None and previous.id == snapshot_id):
        record.status, record.snapshot_id = "unchanged", previous.id if previous else None
        registry.record_batch(record, batch.marks)
        why = "no valid rows" if len(frame) == 0 else "the data is the same as the latest snapshot"
        why += _duplicates_note(duplicates, spec.data.drop_duplicates, ", ")
        return IngestResult(
            "unchanged", f"{batch.description}: {why}", record, previous, duplicates
        )

    snapshot = _new_snapshot(project, store, frame, snapshot_id, previous)
    record.snapshot_id = snapshot_id
    registry.record_batch(record, batch.marks, snapshot)
    latest = registry.get_snapshot(snapshot_id)
    message = (
        f"snapshot {snapshot_id[:12]}: {len(frame)} rows ({len(valid)} new"
        + (f", {len(rejects)} rejected" if len(rejects) else "")
        + _duplicates_note(duplicates, spec.data.drop_duplicates, ", ")
        + f") from {batch.description}"
    )
    return IngestResult("accepted", message, record, latest, duplicates)


def _new_snapshot(
    project: Project,
    store: ArtifactStore,
    frame: pd.DataFrame,
    snapshot_id: str,
    previous: SnapshotRow | None,
) -> SnapshotRow:
    """Write the snapshot's file in full; the row is for the registry transaction to add."""
    data = project.spec.data
    ref = store.put(to_parquet(frame), kind="snapshots", suffix=".parquet")
    return SnapshotRow(
        id=snapshot_id,
        project=project.spec.name,
        uri=ref.uri,
        sha256=ref.sha256,
        size_bytes=ref.size,
        row_count=len(frame),
        mode=data.snapshot.mode.value,
        parent_id=previous.id if previous else None,
        columns={str(name): str(dtype) for name, dtype in frame.dtypes.items()},
        stats=column_stats(frame, data),
    )


def _rebuild(
    project: Project,
    registry: Registry,
    store: ArtifactStore,
    source: Source,
    batch: Batch,
    previous: SnapshotRow | None,
    why: str,
) -> IngestResult:
    """Make the snapshot again from every batch read so far (and `batch`), each validated
    under the current spec in the order it was read, as if the spec had always been this one.

    The rows come from the copies kept beside the batches; when some batch was ingested
    before refit kept them, the whole source is read again from the start instead.
    """
    spec = project.spec
    if previous is not None and why != REBUILD:
        why = f"the spec's columns changed since snapshot {previous.id[:12]} ({why})"
    earlier = registry.list_batches(spec.name, limit=None)[::-1]
    unkept = [b for b in earlier if b.rows_uri is None and b.rows_read and b.status != "rebuilt"]
    if unkept:
        batch = source.read_new({})
        before = f"{_batches(len(unkept))} ingested before refit kept the rows it reads"
        if not batch.marks:
            return IngestResult(
                "refused", f"{why}: cannot rebuild the snapshot: {before}, and the source is empty"
            )
        parts: list[tuple[str, Reader]] = [(batch.description, lambda: batch.frame)]
        where = f"the source read again from the start ({before}): {batch.description}"
    else:
        parts = [(b.description, kept_reader(store, b)) for b in earlier if b.rows_uri]
        where = _kept_description([label for label, _ in parts])
        if batch.marks:
            parts.append((batch.description, lambda: batch.frame))
            where = f"{where}, and {batch.description}" if where else batch.description
    if not parts:
        return IngestResult("empty", f"{why}: no data was read yet, so there is nothing to rebuild")

    replayed = replay(spec.data, parts)
    refused = ""
    if replayed.refused:
        more = len(replayed.refused) - 1
        refused = f"; {_batches(len(replayed.refused))} refused under the current spec: "
        refused += replayed.refused[0] + (f" (and {more} more)" if more else "")
    kept_rows = keep_rows(store, batch.frame) if batch.marks else None
    rejected = _store_rejects(store, replayed.rejects)
    record = IngestBatchRow(
        project=spec.name,
        status="rebuilt",
        description=batch.description,
        rows_read=replayed.rows_read,
        rows_valid=replayed.rows_valid,
        rows_rejected=len(replayed.rejects),
        rejects_uri=rejected.uri if rejected else None,
        rejects_sha256=rejected.sha256 if rejected else None,
        rows_uri=kept_rows.uri if kept_rows else None,
        rows_sha256=kept_rows.sha256 if kept_rows else None,
        reason=why,
    )
    frame = replayed.frame
    if frame is None or len(frame) == 0:
        message = f"{why}: cannot rebuild the snapshot: no valid rows in {where}{refused}"
        if not batch.marks:
            return IngestResult("refused", message)
        record.status, record.reason = "refused", message
        registry.record_batch(record, batch.marks)
        return IngestResult("refused", message, record)

    snapshot_id = snapshot_key(spec.name, frame)
    rejects = f", {len(replayed.rejects)} rows rejected" if len(replayed.rejects) else ""
    if previous is not None and previous.id == snapshot_id:
        record.status, record.snapshot_id = "unchanged", previous.id
        if batch.marks:
            registry.record_batch(record, batch.marks)
        message = (
            f"{why}: rebuilt from {where}{rejects}{refused}: "
            f"the same rows as the latest snapshot {previous.id[:12]}"
        )
        return IngestResult("unchanged", message, record if batch.marks else None, previous)

    snapshot = _new_snapshot(project, store, frame, snapshot_id, previous)
    record.snapshot_id = snapshot_id
    registry.record_batch(record, batch.marks, snapshot)
    message = (
        f"{why}: snapshot {snapshot_id[:12]} rebuilt with {len(frame)} rows from "
        f"{where}{rejects}{refused}"
    )
    return IngestResult("rebuilt", message, record, registry.get_snapshot(snapshot_id))


def _kept_description(labels: list[str]) -> str:
    if not labels:
        return ""
    shown = "; ".join(labels[:_LISTED_BATCHES])
    if len(labels) > _LISTED_BATCHES:
        shown += f"; and {len(labels) - _LISTED_BATCHES} more"
    read = f"{_batches(len(labels))} read before"
    return f"the rows of {read} and kept in the artifact store ({shown})"


def _batches(n: int) -> str:
    return "1 batch" if n == 1 else f"{n} batches"


def snapshot_key(project: str, frame: pd.DataFrame) -> str:
    """A snapshot's id: the hash of its rows, within its project (two projects of one
    registry may hold the same rows, and each keeps its own snapshot)."""
    return hashlib.sha256(f"{project}\n{content_id(frame)}".encode()).hexdigest()


def _duplicates_note(duplicates: int, dropped: bool, prefix: str) -> str:
    if not duplicates:
        return ""
    noun = "duplicate" if duplicates == 1 else "duplicates"
    if dropped:
        return f"{prefix}{duplicates} {noun} dropped"
    return f"{prefix}{duplicates} {noun} kept (data.drop_duplicates: true drops them)"


def _rows_read(batch: Batch) -> int:
    return len(batch.frame) + (len(batch.malformed) if batch.malformed is not None else 0)


def _located(rejects: pd.DataFrame, batch: Batch) -> pd.DataFrame:
    """Rejected rows with the file and line they come from (`_file`, `_line`), then the
    source's malformed lines, in file and line order."""
    origins, malformed = batch.origins, batch.malformed
    if origins is None or not len(origins):
        located = rejects
    else:
        at = rejects["_row"].to_numpy()
        located = rejects.assign(
            _file=origins["_file"].to_numpy()[at], _line=origins[LINE].to_numpy()[at]
        )
    if malformed is None or not len(malformed):
        return located
    lines = malformed.assign(_row=pd.array([None] * len(malformed), dtype="Int64"))
    both = pd.concat([located.astype({"_row": "Int64"}), lines], ignore_index=True)
    return both.sort_values(["_file", LINE], kind="stable").reset_index(drop=True)


def _store_rejects(store: ArtifactStore, rejects: pd.DataFrame) -> ArtifactRef | None:
    if rejects.empty:
        return None
    text = rejects.astype({c: "str" for c in rejects.columns if c not in ("_row", LINE)})
    return store.put(to_parquet(text), kind="rejects", suffix=".parquet")


def _kept_aside(
    frame: pd.DataFrame, reason: str, rejects: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Every row of a refused batch, as `validate` keeps rejects: its columns as text, `_row`
    and `_reason` (the row's own problems where it has any, else `reason`)."""
    rows = frame.reset_index(drop=True).astype("str")
    rows["_row"] = np.arange(len(rows))
    rows["_reason"] = reason
    if rejects is not None and not rejects.empty:
        rows.loc[rejects["_row"].to_numpy(), "_reason"] = rejects["_reason"].to_numpy()
    return rows


def _refuse(
    project: Project,
    registry: Registry,
    store: ArtifactStore,
    batch: Batch,
    rejects: pd.DataFrame,
    error: DataError,
) -> IngestResult:
    """Record a refused batch: its marks are consumed (so later files still flow) and every
    row stays available in the rejects file for a person to inspect and fix."""
    rejected = _store_rejects(store, rejects)
    kept_rows = keep_rows(store, batch.frame)
    record = IngestBatchRow(
        project=project.spec.name,
        status="refused",
        description=batch.description,
        rows_read=_rows_read(batch),
        rows_valid=0,
        rows_rejected=_rows_read(batch),
        rejects_uri=rejected.uri if rejected else None,
        rejects_sha256=rejected.sha256 if rejected else None,
        rows_uri=kept_rows.uri,
        rows_sha256=kept_rows.sha256,
        snapshot_id=None,
        reason=str(error),
    )
    registry.record_batch(record, batch.marks)
    return IngestResult("refused", f"{batch.description} refused: {error}", record)


def read_rejects(store: ArtifactStore, batch: IngestBatchRow) -> pd.DataFrame:
    """The rejected rows of a batch (none when it had none), verified against their sha256:
    each input column as text, `_reason`, `_file` and `_line` where the source has files,
    `_row` (the position in the batch; missing for a line that was no row) and `_text`
    (that line's fields)."""
    if batch.rejects_uri is None or batch.rejects_sha256 is None:
        return pd.DataFrame({"_row": [], "_reason": []})
    return from_parquet(store.get(batch.rejects_uri, batch.rejects_sha256))
