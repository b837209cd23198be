"""Pure helpers for snapshots: which rows a new snapshot holds, and its id.

A snapshot's id is the sha256 of a canonical serialisation of its rows (`content_id`), so the
same data never makes a second snapshot, whatever pandas index or history produced it. The id
is computed from the values themselves rather than from Arrow or Parquet bytes: masked arrays
(`Int64`, `boolean`) keep arbitrary values under their missing slots, which Arrow would copy
into its buffers and Parquet would not, so those bytes differ for equal data.

Their bytes are written by `refit.parquet.to_parquet`.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from refit.errors import DataError
from refit.spec import SnapshotMode, SnapshotPolicy


def combine(
    previous: pd.DataFrame | None,
    new: pd.DataFrame,
    policy: SnapshotPolicy,
    time_column: str | None,
) -> pd.DataFrame:
    """The rows of the next snapshot, from the previous snapshot's rows and a new batch.

    `cumulative` appends the new rows; `latest` keeps only them; `window` appends, then keeps
    the rows within `days` of the newest time value and, of those, at most the last `rows`.
    """
    if policy.mode is SnapshotMode.LATEST or previous is None:
        rows = new.reset_index(drop=True)
    else:
        rows = pd.concat([previous, _align(new, previous)], ignore_index=True)
    if policy.mode is SnapshotMode.WINDOW:
        if policy.days is not None:
            if time_column is None or time_column not in rows.columns:
                raise DataError(f"a window of {policy.days:g} days needs a time column")
            times = rows[time_column]
            rows = rows[times >= times.max() - pd.Timedelta(days=policy.days)]
        if policy.rows is not None:
            rows = rows.tail(policy.rows)
    return rows.reset_index(drop=True)


def _align(new: pd.DataFrame, previous: pd.DataFrame) -> pd.DataFrame:
    missing = [str(c) for c in previous.columns if c not in new.columns]
    extra = [str(c) for c in new.columns if c not in previous.columns]
    if missing or extra:
        raise DataError(
            "the new rows do not have the snapshot's columns"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; not in the snapshot: {', '.join(extra)}" if extra else "")
        )
    new = new[list(previous.columns)]
    for column in previous.columns:
        want = previous[column].dtype
        if new[column].dtype == want:
            continue
        try:
            new[column] = new[column].astype(want)
        except (TypeError, ValueError):
            raise DataError(
                f"column {column}: the new rows hold {new[column].dtype} "
                f"but the snapshot holds {want}"
            ) from None
    return new


def content_id(frame: pd.DataFrame) -> str:
    """sha256 (hex) of the rows: column names, dtypes and values, in order."""
    digest = hashlib.sha256()
    header = [[str(name), str(dtype)] for name, dtype in frame.dtypes.items()]
    digest.update(json.dumps([len(frame), header]).encode())
    for _, column in frame.items():
        missing = column.isna().to_numpy(dtype=bool)
        digest.update(np.packbits(missing).tobytes())
        for chunk in _value_bytes(column, missing):
            digest.update(chunk)
    return digest.hexdigest()


def _value_bytes(column: pd.Series, missing: np.ndarray) -> list[bytes]:
    dtype = column.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        column = column.dt.tz_convert(None)
    if pd.api.types.is_datetime64_dtype(column.dtype) or pd.api.types.is_timedelta64_dtype(
        column.dtype
    ):
        values = column.to_numpy().view("i8").copy()
    elif pd.api.types.is_bool_dtype(dtype):
        values = column.to_numpy(dtype=bool, na_value=False, copy=True)
    elif pd.api.types.is_integer_dtype(dtype):
        values = column.to_numpy(dtype="int64", na_value=0, copy=True)
    elif pd.api.types.is_float_dtype(dtype):
        values = column.to_numpy(dtype="float64", na_value=0.0, copy=True)
    else:
        text = column.astype("str").fillna("").tolist()
        lengths = np.array([len(t) for t in text], dtype="int64")
        return [lengths.tobytes(), "".join(text).encode("utf-8", "surrogatepass")]
    values[missing] = 0
    return [np.ascontiguousarray(values).tobytes()]
