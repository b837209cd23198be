"""The format of prediction logs and feedback: what a server writes (Parquet files in the
artifact store, indexed in the registry by `refit.registry.monitoring`) and the monitor reads.

A predictions file has one row per predicted row:

    request_id   string     the request's id (`X-Request-Id`), shared by the rows of a batch
    row          int32      the row's place in its request, from 0
    at           timestamp  when it was answered (UTC, microseconds)
    version      int32      the version that answered
    input.NAME   ...        each input of the signature: float64, int64 (nullable), bool or
                            string, null where the request held none
    prediction   string | float64   a label as JSON text (`label_text`: a classifier's class,
                            a clustering's cluster id, an anomaly detector's flag `true` or
                            `false`), a regressor's value; null where the answer was withheld
    probabilities list<float64>     a classifier's (or mixture's) probabilities, in its
                            classes' order
    distances    list<float64>      a clustering's distance to each centre, in its classes'
                            order (k-means)
    score        float64    an anomaly detector's score (higher is more anomalous)
    withheld     bool       whether `postprocess` withheld the answer (files of versions
                            that withheld some answer; a row withheld holds no answer)

Files written before a column existed lack it: `read_logs` gives it as null there.

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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from refit.artifacts import ArtifactStore
from refit.predictions import Columns, MatrixColumns, Predictions
from refit.registry.tables import PredictionLogRow
from refit.signature import ANOMALY_SCORE, Output, Signature
from refit.signature import DISTANCES as DISTANCES_SCORES
from refit.spec import FeatureType, Task

Array = np.ndarray[Any, Any]

REQUEST_ID = "request_id"
ROW = "row"
AT = "at"
VERSION = "version"
PREDICTION = "prediction"
PROBABILITIES = "probabilities"
DISTANCES = "distances"
SCORE = "score"
WITHHELD = "withheld"
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


def labelled(output: Output) -> bool:
    """Whether the `prediction` column holds labels (as `label_text`), rather than values."""
    return output.classes is not None or output.task is Task.ANOMALY


def predictions_schema(signature: Signature, withheld: bool = False) -> pa.Schema:
    """The columns of a predictions file of a model with `signature` (and `withheld`, for
    answers of which some were withheld)."""
    fields = [
        pa.field(REQUEST_ID, pa.string(), nullable=False),
        pa.field(ROW, pa.int32(), nullable=False),
        pa.field(AT, TIMESTAMP, nullable=False),
        pa.field(VERSION, pa.int32(), nullable=False),
    ]
    fields += [pa.field(input_column(c.name), _INPUT_TYPES[c.type]) for c in signature.inputs]
    output = signature.output
    fields.append(pa.field(PREDICTION, pa.string() if labelled(output) else pa.float64()))
    if output.classes is not None and output.probabilities:
        fields.append(pa.field(PROBABILITIES, pa.list_(pa.float64())))
    if output.scores == DISTANCES_SCORES:
        fields.append(pa.field(DISTANCES, pa.list_(pa.float64())))
    elif output.scores == ANOMALY_SCORE:
        fields.append(pa.field(SCORE, pa.float64()))
    if withheld:
        fields.append(pa.field(WITHHELD, pa.bool_(), nullable=False))
    return pa.schema(fields)


FEEDBACK_SCHEMA = pa.schema(
    [
        pa.field(REQUEST_ID, pa.string(), nullable=False),
        pa.field(ROW, pa.int32(), nullable=False),
        pa.field(AT, TIMESTAMP, nullable=False),
        pa.field(VALUE, pa.string(), nullable=False),
    ]
)


Answered = tuple[str, float, int, Any, "Array", "Array | None", "Array | None", "Array | None"]
"""One request's answers as a server keeps them until they are written: its request id, the
`time.time()` of the answer, the version, its checked inputs (their float matrix, or the
`Columns`), its labels, its probabilities, its scores and its rows withheld (each None
without them). Made by `answered`."""


def answered(
    request_id: str, at: float, version: int, columns: Columns, predictions: Predictions
) -> Answered:
    """What a server keeps of a request it answered: references only, taken on the request
    path. A plain tuple, made in a fraction of a microsecond; when the inputs were checked as
    a matrix it holds only arrays and text, which the garbage collector does not track (the
    per-value lists of the request are freed with it), so thousands of buffered requests add
    nothing to what a collection scans."""
    inputs = columns.matrix if isinstance(columns, MatrixColumns) else columns
    p = predictions
    return (request_id, at, version, inputs, p.labels, p.probabilities, p.scores, p.withheld)


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
    ids, moments, versions, parts, labels, probabilities, scores, withholding = (
        list(map(itemgetter(i), answers))
        for i in range(8)  # zip(*answers) is slower
    )
    withheld = _withheld(withholding, labels)
    schema = predictions_schema(signature, withheld is not None)
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
    output = signature.output
    if labelled(output):
        # Each distinct label written once as `label_text`, then taken by index.
        encoded = pa.array(predicted).dictionary_encode()
        texts = [label_text(label) for label in encoded.dictionary.to_pylist()]
        chosen = pa.array(texts, pa.string()).take(encoded.indices)
        if withheld is not None:
            chosen = pc.if_else(pa.array(withheld), pa.scalar(None, pa.string()), chosen)
        columns.append(chosen)
    else:
        columns.append(pa.array(predicted.astype(np.float64), pa.float64(), mask=withheld))
    if output.classes is not None and output.probabilities:
        columns.append(_lists(probabilities, total, withheld))
    if output.scores == DISTANCES_SCORES:
        columns.append(_lists(scores, total, withheld))
    elif output.scores == ANOMALY_SCORE:
        if any(part is None for part in scores):
            columns.append(pa.nulls(total, pa.float64()))
        else:
            score = np.concatenate(scores).astype(np.float64)
            columns.append(pa.array(score, pa.float64(), mask=withheld))
    if withheld is not None:
        columns.append(pa.array(withheld, pa.bool_()))
    return pa.Table.from_arrays(columns, schema=schema)


def _withheld(parts: Sequence[Array | None], labels: Sequence[Array]) -> Array | None:
    """Which rows were withheld, over all the answers (None when no row was)."""
    if all(part is None or not part.any() for part in parts):
        return None
    flags = [
        np.zeros(len(rows), bool) if part is None else part
        for part, rows in zip(parts, labels, strict=True)
    ]
    return np.concatenate(flags).astype(bool)


def _lists(parts: Sequence[Array | None], total: int, withheld: Array | None) -> pa.Array:
    """Each row's values of `parts` ([rows, C] arrays) as a list, null where withheld."""
    if any(part is None for part in parts):  # a model that gave none: no value
        return pa.nulls(total, pa.list_(pa.float64()))
    matrix = np.concatenate([part for part in parts if part is not None]).astype(np.float64)
    width = matrix.shape[1]
    offsets = pa.array(np.arange(0, total * width + 1, width, dtype=np.int32))
    mask = None if withheld is None else pa.array(withheld)
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1)), mask=mask)


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
