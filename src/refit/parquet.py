"""Rows as Parquet bytes, and a snapshot's rows read back from the artifact store: the one
format of snapshots and batches, which ingest writes and training reads.

`to_parquet` writes no pandas metadata (it embeds library versions); it records each column's
pandas dtype under the schema key `refit.dtypes` instead, which `from_parquet` restores.
"""

from __future__ import annotations

import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from refit.artifacts import ArtifactStore
from refit.registry import SnapshotRow

DTYPES_KEY = b"refit.dtypes"
_MASKED_TYPES = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}


def to_parquet(frame: pd.DataFrame) -> bytes:
    """The rows as Parquet (zstd, no index); the same rows always give the same bytes."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    dtypes = {str(name): str(dtype) for name, dtype in frame.dtypes.items()}
    table = table.replace_schema_metadata({DTYPES_KEY: json.dumps(dtypes).encode()})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def from_parquet(data: bytes) -> pd.DataFrame:
    """Rows written by `to_parquet`, with the pandas dtypes they had."""
    table = pq.read_table(io.BytesIO(data))
    metadata = table.schema.metadata or {}
    frame: pd.DataFrame = table.to_pandas(types_mapper=_MASKED_TYPES.get)
    if DTYPES_KEY not in metadata:
        return frame
    dtypes: dict[str, str] = json.loads(metadata[DTYPES_KEY])
    for name, dtype in dtypes.items():
        if str(frame[name].dtype) != dtype:
            frame[name] = frame[name].astype(pd.api.types.pandas_dtype(dtype))
    return frame


def read_snapshot(store: ArtifactStore, snapshot: SnapshotRow) -> pd.DataFrame:
    """The rows of a snapshot, verified against its recorded sha256."""
    return from_parquet(store.get(snapshot.uri, snapshot.sha256))
