"""The format of prediction logs and feedback: what a server writes (Parquet files in the
artifact store, indexed in the registry by `refit.registry.monitoring`) and the monitor reads.

A predictions file has one row per predicted row:

    request_id   string     the request's id (`X-Request-Id`), shared by the rows of a batch
    row          int32      the row's place in its request, from 0
    at           timestamp  when it was answered (UTC, microseconds)
    version      int32      the version that answered
    input.NAME   ...        each input of the signature: float64, int64 (nullable), bool or
                            string, null where the request held none
    prediction   string | float64   a classifier's label as JSON text (`label_text`), a
                            regressor's value
    probabilities list<float64>     a classifier's probabilities, in its classes' order

A feedback file has one row per true value a client sent:

    request_id   string     the id of the request predicted
    row          int32      the row within it (0 for a single record)
    at           timestamp  when the feedback arrived
    value        string     the true label or value as JSON text (`label_text`)
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from refit.artifacts import ArtifactStore
from refit.registry.tables import PredictionLogRow
from refit.signature import Signature
from refit.spec import FeatureType

REQUEST_ID = "request_id"
ROW = "row"
AT = "at"
VERSION = "version"
PREDICTION = "prediction"
PROBABILITIES = "probabilities"
VALUE = "value"
INPUT = "input."
"""The prefix of an input's column: `input.tenure`."""

TIMESTAMP = pa.timestamp("us", tz="UTC")
_INPUT_TYPES = {
    FeatureType.FLOAT: pa.float64(),
    FeatureType.INT: pa.int64(),
    FeatureType.BOOL: pa.bool_(),
    FeatureType.CATEGORY: pa.string(),
}


def input_column(name: str) -> str:
    return INPUT + name


def label_text(value: Any) -> str:
    """A label or true value as JSON text, the one form in which predicted labels and the
    values of feedback are stored and compared (`1` and `1.0` are both `1`)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return orjson.dumps(value).decode()


def from_label_text(text: str) -> Any:
    return orjson.loads(text)


def predictions_schema(signature: Signature) -> pa.Schema:
    """The columns of a predictions file of a model with `signature`."""
    fields = [
        pa.field(REQUEST_ID, pa.string(), nullable=False),
        pa.field(ROW, pa.int32(), nullable=False),
        pa.field(AT, TIMESTAMP, nullable=False),
        pa.field(VERSION, pa.int32(), nullable=False),
    ]
    fields += [pa.field(input_column(c.name), _INPUT_TYPES[c.type]) for c in signature.inputs]
    classifier = signature.output.classes is not None
    fields.append(pa.field(PREDICTION, pa.string() if classifier else pa.float64()))
    if classifier and signature.output.probabilities:
        fields.append(pa.field(PROBABILITIES, pa.list_(pa.float64())))
    return pa.schema(fields)


FEEDBACK_SCHEMA = pa.schema(
    [
        pa.field(REQUEST_ID, pa.string(), nullable=False),
        pa.field(ROW, pa.int32(), nullable=False),
        pa.field(AT, TIMESTAMP, nullable=False),
        pa.field(VALUE, pa.string(), nullable=False),
    ]
)


def to_parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def read_logs(store: ArtifactStore, logs: Sequence[PredictionLogRow]) -> pd.DataFrame:
    """The rows of `logs` (files of one kind), one frame, each file checked against its
    sha256 as it is read; an empty frame without columns when there are none."""
    tables = [pq.read_table(io.BytesIO(store.get(log.uri, log.sha256))) for log in logs]
    if not tables:
        return pd.DataFrame()
    table = pa.concat_tables(tables, promote_options="permissive")
    frame: pd.DataFrame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    return frame


def utc(moment: float) -> datetime:
    """A `time.time()` value as a UTC datetime."""
    return datetime.fromtimestamp(moment, UTC)
