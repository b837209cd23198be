"""One ingest run: read what is new, validate it, and make the next snapshot.

The order of writes is what makes a crash harmless: the snapshot's Parquet file (and the file of
rejected rows) are written in full to the artifact store first; then one registry transaction
records the batch, the snapshot and the source marks together. A process killed before that
transaction leaves at most an unreferenced file, and the next run reads the same rows again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from refit.artifacts import ArtifactRef, ArtifactStore
from refit.data.snapshots import combine, content_id, from_parquet, to_parquet
from refit.data.sources import LINE, Batch, Source, open_source
from refit.data.stats import column_stats
from refit.data.validation import validate
from refit.errors import DataError
from refit.project import Project
from refit.registry import IngestBatchRow, Registry, SnapshotRow
from refit.spec import SnapshotMode

Status = Literal["accepted", "unchanged", "refused", "empty"]


@dataclass(frozen=True)
class IngestResult:
    """What one ingest run did."""

    status: Status
    """accepted: a new latest snapshot; unchanged: the data was already the latest snapshot;
    refused: the batch failed validation as a whole; empty: the source had nothing new."""
    message: str
    batch: IngestBatchRow | None = None
    snapshot: SnapshotRow | None = None
    duplicates: int = 0
    """Valid new rows equal in every column to a row of the previous snapshot (unless the
    mode is `latest`) or to an earlier row of the batch; dropped if `data.drop_duplicates`."""


def run_ingest(
    project: Project, registry: Registry, store: ArtifactStore, source: Source | None = None
) -> IngestResult:
    """Read new data from the project's source into a snapshot (or refuse it)."""
    spec = project.spec
    source = source or open_source(spec.data.source, project.root)
    batch = source.read_new(registry.source_marks(spec.name))
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
    if rows_read and len(rejects) / rows_read > spec.data.max_reject_rate:
        share = len(rejects) / rows_read
        error = DataError(
            f"{len(rejects)} of {rows_read} rows ({share:.0%}) failed validation, more than "
            f"data.max_reject_rate ({spec.data.max_reject_rate:.0%}); first: {_where(rejects)}"
        )
        refused = _kept_aside(batch.frame, "valid, but its batch was refused", validated.rejects)
        return _refuse(project, registry, store, batch, _located(refused, batch), error)

    rejected = _store_rejects(store, rejects)
    previous = registry.latest_snapshot(spec.name)
    previous_frame, note = None, ""
    if previous is not None:
        previous_frame = from_parquet(store.get(previous.uri, previous.sha256))
        previous_frame, valid, note = _reconcile(previous_frame, valid, spec.data.target)
    rows_valid = len(valid)
    latest_only = spec.data.snapshot.mode is SnapshotMode.LATEST
    duplicated = _duplicated(None if latest_only else previous_frame, valid)
    duplicates = int(duplicated.sum())
    if spec.data.drop_duplicates and duplicates:
        valid = valid[~duplicated].reset_index(drop=True)
    frame = combine(previous_frame, valid, spec.data.snapshot, spec.data.time_column)
    snapshot_id = snapshot_key(spec.name, frame)
    record = IngestBatchRow(
        project=spec.name,
        status="accepted",
        description=batch.description,
        rows_read=rows_read,
        rows_valid=rows_valid,
        rows_rejected=len(rejects),
        rejects_uri=rejected.uri if rejected else None,
        rejects_sha256=rejected.sha256 if rejected else None,
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

    ref = store.put(to_parquet(frame), kind="snapshots", suffix=".parquet")
    snapshot = SnapshotRow(
        id=snapshot_id,
        project=spec.name,
        uri=ref.uri,
        sha256=ref.sha256,
        size_bytes=ref.size,
        row_count=len(frame),
        mode=spec.data.snapshot.mode.value,
        parent_id=previous.id if previous else None,
        columns={str(name): str(dtype) for name, dtype in frame.dtypes.items()},
        stats=column_stats(frame, spec.data),
    )
    record.snapshot_id = snapshot_id
    registry.record_batch(record, batch.marks, snapshot)
    latest = registry.get_snapshot(snapshot_id)
    message = (
        f"snapshot {snapshot_id[:12]}: {len(frame)} rows ({len(valid)} new"
        + (f", {len(rejects)} rejected" if len(rejects) else "")
        + _duplicates_note(duplicates, spec.data.drop_duplicates, ", ")
        + f") from {batch.description}"
        + note
    )
    return IngestResult("accepted", message, record, latest, duplicates)


def snapshot_key(project: str, frame: pd.DataFrame) -> str:
    """A snapshot's id: the hash of its rows, within its project (two projects of one
    registry may hold the same rows, and each keeps its own snapshot)."""
    return hashlib.sha256(f"{project}\n{content_id(frame)}".encode()).hexdigest()


def _reconcile(
    previous: pd.DataFrame, new: pd.DataFrame, target: str
) -> tuple[pd.DataFrame | None, pd.DataFrame, str]:
    """Make the previous snapshot's rows and the new rows fit together, or start afresh.

    When the spec's columns changed (a feature added, removed or retyped), the old rows cannot
    carry the new schema: the snapshot starts a new lineage from the new rows alone. A target
    read as numbers in one batch and as text in another is taken as text in both.
    """
    if list(previous.columns) != list(new.columns) or any(
        str(previous[c].dtype) != str(new[c].dtype) for c in new.columns if c != target
    ):
        return None, new, "; the spec's columns changed, so this snapshot starts afresh"
    if str(previous[target].dtype) != str(new[target].dtype):
        previous = previous.assign(**{target: previous[target].map(_label).astype("str")})
        new = new.assign(**{target: new[target].map(_label).astype("str")})
    return previous, new, ""


def _label(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _duplicated(previous: pd.DataFrame | None, new: pd.DataFrame) -> np.ndarray:
    """Which new rows equal a previous row or an earlier new row, in every column."""
    if previous is None:
        return new.duplicated(keep="first").to_numpy(dtype=bool)
    both = pd.concat([previous, new[list(previous.columns)]], ignore_index=True)
    return both.duplicated(keep="first").to_numpy(dtype=bool)[len(previous) :]


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


def _where(rejects: pd.DataFrame) -> str:
    """The first rejected row's reason, after its file and line when known."""
    first = rejects.iloc[0]
    if "_file" in rejects.columns:
        return f"{first['_file']} line {first[LINE]}: {first['_reason']}"
    return str(first["_reason"])


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
    record = IngestBatchRow(
        project=project.spec.name,
        status="refused",
        description=batch.description,
        rows_read=_rows_read(batch),
        rows_valid=0,
        rows_rejected=_rows_read(batch),
        rejects_uri=rejected.uri if rejected else None,
        rejects_sha256=rejected.sha256 if rejected else None,
        snapshot_id=None,
        reason=str(error),
    )
    registry.record_batch(record, batch.marks)
    return IngestResult("refused", f"{batch.description} refused: {error}", record)


def read_snapshot(store: ArtifactStore, snapshot: SnapshotRow) -> pd.DataFrame:
    """The rows of a snapshot, verified against its recorded sha256."""
    return from_parquet(store.get(snapshot.uri, snapshot.sha256))


def read_rejects(store: ArtifactStore, batch: IngestBatchRow) -> pd.DataFrame:
    """The rejected rows of a batch (none when it had none), verified against their sha256:
    each input column as text, `_reason`, `_file` and `_line` where the source has files,
    `_row` (the position in the batch; missing for a line that was no row) and `_text`
    (that line's fields)."""
    if batch.rejects_uri is None or batch.rejects_sha256 is None:
        return pd.DataFrame({"_row": [], "_reason": []})
    return from_parquet(store.get(batch.rejects_uri, batch.rejects_sha256))
