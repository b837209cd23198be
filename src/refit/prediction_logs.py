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

A server builds them with `predictions_table` and `feedback_table` from what it answered and
what it was told, gathered in memory (`answered`, `Told`), then writes them with `to_parquet`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import chain
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from refit.artifacts import ArtifactStore
from refit.predictions import Columns, MatrixColumns, Predictions
from refit.registry.tables import PredictionLogRow
from refit.signature import Signature
from refit.spec import FeatureType

Array = np.ndarray[Any, Any]

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


Answered = tuple[str, float, int, Any, "Array", "Array | None"]
"""One request's answers as a server keeps them until they are written: its request id, the
`time.time()` of the answer, the version, its checked inputs (their float matrix, or the
`Columns`), its labels and its probabilities (or None). Made by `answered`."""


def answered(
    request_id: str, at: float, version: int, columns: Columns, predictions: Predictions
) -> Answered:
    """What a server keeps of a request it answered: references only, taken on the request
    path. A plain tuple, made in a fraction of a microsecond; when the inputs were checked as
    a matrix it holds only arrays and text, which the garbage collector does not track (the
    per-value lists of the request are freed with it), so thousands of buffered requests add
    nothing to what a collection scans."""
    inputs = columns.matrix if isinstance(columns, MatrixColumns) else columns
    return (request_id, at, version, inputs, predictions.labels, predictions.probabilities)


def answered_rows(entry: Answered) -> int:
    return len(entry[4])


class Told(NamedTuple):
    """One feedback request's items: request ids, rows and true values (`label_text`)."""

    at: float
    request_ids: list[str]
    rows: list[int]
    values: list[str]

    @property
    def size(self) -> int:
        """Its items."""
        return len(self.request_ids)


def _microseconds(moments: Sequence[float], counts: Any) -> pa.Array:
    stamps = np.rint(np.asarray(moments, dtype=np.float64) * 1e6).astype(np.int64)
    return pa.array(np.repeat(stamps, counts), TIMESTAMP)


def predictions_table(signature: Signature, answers: Sequence[Answered]) -> pa.Table:
    """The rows of `answers` (requests answered by one version of a model of `signature`) in
    the columns of `predictions_schema(signature)`: a few C-speed passes over the requests,
    the values converted by numpy and Arrow."""
    schema = predictions_schema(signature)
    ids, moments, versions, parts, labels, probabilities = (
        list(map(itemgetter(i), answers))
        for i in range(6)  # zip(*answers) is slower
    )
    counts = np.fromiter(map(len, labels), np.int64, len(answers))
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    columns: list[pa.Array] = [
        pa.array(np.repeat(np.array(ids, dtype=object), counts), pa.string()),
        pa.array((np.arange(total) - starts).astype(np.int32), pa.int32()),
        _microseconds(moments, counts),
        pa.array(np.repeat(np.array(versions, np.int32), counts)),
    ]
    matrix = None
    if all(isinstance(part, np.ndarray) for part in parts):
        matrix = np.concatenate(parts)
    for j, column in enumerate(signature.inputs):
        kind = _INPUT_TYPES[column.type]
        if matrix is not None:
            columns.append(pa.array(matrix[:, j], kind))
        else:
            values = (p[:, j].tolist() if isinstance(p, np.ndarray) else p[j] for p in parts)
            columns.append(pa.array(list(chain.from_iterable(values)), kind))
    predicted = np.concatenate(labels)
    classifier = signature.output.classes is not None
    if classifier:
        # Each distinct label written once as `label_text`, then taken by index.
        encoded = pa.array(predicted).dictionary_encode()
        texts = [label_text(label) for label in encoded.dictionary.to_pylist()]
        columns.append(pa.array(texts, pa.string()).take(encoded.indices))
    else:
        columns.append(pa.array(predicted.astype(np.float64), pa.float64()))
    if classifier and signature.output.probabilities:
        columns.append(_probabilities(probabilities, total))
    return pa.Table.from_arrays(columns, schema=schema)


def _probabilities(parts: Sequence[Array | None], total: int) -> pa.Array:
    if any(part is None for part in parts):  # a classifier that gave none: no value
        return pa.nulls(total, pa.list_(pa.float64()))
    matrix = np.concatenate([part for part in parts if part is not None]).astype(np.float64)
    width = matrix.shape[1]
    offsets = pa.array(np.arange(0, total * width + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1)))


def feedback_table(told: Sequence[Told]) -> pa.Table:
    """The items of `told` in the columns of `FEEDBACK_SCHEMA`."""
    counts = np.fromiter((len(t.request_ids) for t in told), np.int64, len(told))
    return pa.Table.from_arrays(
        [
            pa.array(list(chain.from_iterable(t.request_ids for t in told)), pa.string()),
            pa.array(list(chain.from_iterable(t.rows for t in told)), pa.int32()),
            _microseconds([t.at for t in told], counts),
            pa.array(list(chain.from_iterable(t.values for t in told)), pa.string()),
        ],
        schema=FEEDBACK_SCHEMA,
    )


def to_parquet(table: pa.Table) -> bytes:
    """`table` as Parquet (zstd); dictionary encoding for text columns only, where values
    repeat (labels, categories, a batch's id): on numbers it costs more than it saves."""
    text = [f.name for f in table.schema if pa.types.is_string(f.type)]
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", use_dictionary=text)
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
