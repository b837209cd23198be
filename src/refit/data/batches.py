"""The rows of ingest batches: when a batch is taken, how it joins the rows before it, the
copy of its rows kept as read, and their replay when the spec's columns change.

Ingest keeps every batch's rows as read (all their columns, in the artifact store) beside the
batch's record. A snapshot holds only validated columns, so a feature added to the spec cannot
come from it; the kept rows, validated again under the current spec, can rebuild it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from refit.artifacts import ArtifactRef, ArtifactStore
from refit.data.snapshots import combine
from refit.data.sources import LINE
from refit.data.validation import validate
from refit.errors import DataError
from refit.parquet import from_parquet, to_parquet
from refit.registry import IngestBatchRow
from refit.spec import DataSpec, SnapshotMode

Reader = Callable[[], pd.DataFrame]
"""Reads one batch's rows when called, so a replay holds one batch in memory at a time."""


def too_many_rejects(rejects: pd.DataFrame, rows_read: int, limit: float) -> DataError | None:
    """The refusal of a batch whose share of rejected rows is above data.max_reject_rate."""
    if not rows_read or len(rejects) / rows_read <= limit:
        return None
    share = len(rejects) / rows_read
    first = rejects.iloc[0]
    where = f"{first['_file']} line {first[LINE]}: " if "_file" in rejects.columns else ""
    return DataError(
        f"{len(rejects)} of {rows_read} rows ({share:.0%}) failed validation, more than "
        f"data.max_reject_rate ({limit:.0%}); first: {where}{first['_reason']}"
    )


def duplicate_rows(previous: pd.DataFrame | None, new: pd.DataFrame) -> np.ndarray[Any, Any]:
    """Which new rows equal a previous row or an earlier new row, in every column."""
    if previous is None:
        return new.duplicated(keep="first").to_numpy(dtype=bool)
    both = pd.concat([previous, new[list(previous.columns)]], ignore_index=True)
    return both.duplicated(keep="first").to_numpy(dtype=bool)[len(previous) :]


@dataclass
class Replay:
    """The rows a replay made (None: no batch was taken), its rejected rows (as `validate`
    gives them, with `_batch`, the description of the batch each came from) and refusals."""

    frame: pd.DataFrame | None
    rejects: pd.DataFrame
    refused: list[str]
    rows_read: int
    rows_valid: int


def replay(data: DataSpec, parts: list[tuple[str, Reader]]) -> Replay:
    """Each batch's rows, validated and combined as ingest would have, one batch at a time."""
    frame: pd.DataFrame | None = None
    rejects: list[pd.DataFrame] = []
    refused: list[str] = []
    rows_read = rows_valid = 0
    for label, read in parts:
        raw = read()
        rows_read += len(raw)
        try:
            validated = validate(raw, data)
        except DataError as exc:
            refused.append(f"{label}: {exc}")
            continue
        if error := too_many_rejects(validated.rejects, len(raw), data.max_reject_rate):
            refused.append(f"{label}: {error}")
            continue
        valid = validated.valid
        if frame is not None:
            frame, valid = reconcile(frame, valid, data.target)
        if data.drop_duplicates:
            latest_only = data.snapshot.mode is SnapshotMode.LATEST
            valid = valid[~duplicate_rows(None if latest_only else frame, valid)]
            valid = valid.reset_index(drop=True)
        frame = combine(frame, valid, data.snapshot, data.time_column)
        rows_valid += len(valid)
        if not validated.rejects.empty:
            rejects.append(validated.rejects.assign(_batch=label))
    return Replay(
        frame,
        pd.concat(rejects, ignore_index=True) if rejects else pd.DataFrame(),
        refused,
        rows_read,
        rows_valid,
    )


def keep_rows(store: ArtifactStore, frame: pd.DataFrame) -> ArtifactRef:
    """Store a batch's rows as read, every column, so that a rebuild can validate them again.
    A column of mixed values that Parquet cannot hold is kept as text (validation reads text)."""
    try:
        data = to_parquet(frame)
    except (pa.ArrowException, TypeError, ValueError):
        mixed = [c for c in frame.columns if frame[c].dtype == object]
        text = {str(c): frame[c].map(str, na_action="ignore") for c in mixed}
        data = to_parquet(frame.assign(**text))
    return store.put(data, kind="batches", suffix=".parquet")


def kept_reader(store: ArtifactStore, batch: IngestBatchRow) -> Reader:
    uri, sha256 = batch.rows_uri, batch.rows_sha256
    assert uri is not None and sha256 is not None
    return lambda: from_parquet(store.get(uri, sha256))


def reconcile(
    previous: pd.DataFrame, new: pd.DataFrame, target: str | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Make the previous rows and the new rows (of the same columns) fit together: a target
    read as numbers in one batch and as text in another is taken as text in both."""
    if target is not None and str(previous[target].dtype) != str(new[target].dtype):
        previous = previous.assign(**{target: previous[target].map(_label).astype("str")})
        new = new.assign(**{target: new[target].map(_label).astype("str")})
    return previous, new


def _label(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
