"""MLflow's scoring protocol's wire format (also the SageMaker inference container's): JSON
in any of MLflow's four layouts, or CSV, read into checked columns; `{"predictions": [...]}`
out; errors as `{"error_code": "BAD_REQUEST", "message": "..."}`, but an unsupported content
type, which MLflow answers in plain text (415).

`predictions` holds one label per row, as MLflow's pyfunc server answers a model that returns
an array. A clustering with distances or probabilities and an anomaly detector answer a table
(a DataFrame, to MLflow), so each row is an object, as MLflow writes a DataFrame's records:
`{"prediction": 2, "distances": {"0": 1.8, ...}}`, `{"prediction": true, "score": 0.31}`. A
row whose answer the version's `postprocess` withheld is null.
"""

from __future__ import annotations

import csv
import heapq
import io
import itertools
from typing import Any

from starlette.responses import PlainTextResponse, Response

from refit.errors import InputError, MalformedBodyError, Problem, TooLargeError
from refit.predictions import Columns, Predictions
from refit.serve._json import count_outside_quotes
from refit.serve._media import JSON_TYPE, UnsupportedMediaType, content_type
from refit.serve.codecs import JSONBody, blanked, scores_field, scores_of, withheld_rows
from refit.serve.failures import Failure
from refit.serve.records import MAX_PROBLEMS, RecordReader, clipped, given_twice
from refit.signature import Output
from refit.spec import SUPERVISED

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
CSV_TYPES = ("text/csv", "application/csv")


def media_type(header: str | None) -> str:
    """The MIME type of a Content-Type header, refusing what MLflow refuses: another type, a
    charset other than UTF-8 and any other parameter (such as 1.x's `format=pandas-split`)."""
    hint = (
        "the scoring protocol changed in MLflow 2.0: send a JSON object with one of the fields "
        f"{', '.join(FORMATS)} instead of a format parameter"
    )
    return content_type(header, (JSON_TYPE, *CSV_TYPES), "/invocations", hint)


# --- JSON -----------------------------------------------------------------------------------


def json_columns(reader: RecordReader, body: Any) -> Columns:
    """The checked columns of a JSON body in any of MLflow's four layouts."""
    required = (
        "the body must be a JSON object with exactly one of the fields "
        f"{', '.join(FORMATS)} (and optionally params)"
    )
    if not isinstance(body, dict):
        kind = "a list" if isinstance(body, list) else f"a {type(body).__name__}"
        raise MalformedBodyError(f"{required}; received {kind}")
    fields = heapq.nsmallest(2, body.keys() - {"params"})
    if len(fields) != 1 or fields[0] not in FORMATS:
        named = ", ".join(clipped(key) for key in heapq.nsmallest(MAX_PROBLEMS, body))
        more = f" and {len(body) - MAX_PROBLEMS} more" if len(body) > MAX_PROBLEMS else ""
        raise MalformedBodyError(f"{required}; received the fields {named}{more}")
    if not isinstance(body.get("params", {}), dict):
        raise InputError([Problem("params", "wrong type", _kind(body["params"]), "an object")])
    [key] = fields
    value = body[key]
    if key == "dataframe_split":
        return _split(reader, value)
    if key == "dataframe_records":
        return reader.batch_columns(value, key)
    if isinstance(value, dict):
        return _named(reader, value, key)
    if isinstance(value, list) and value and all(isinstance(row, list) for row in value):
        return _rows(reader, value, key)
    return reader.batch_columns(value, key)


def _kind(value: Any) -> Any:
    if isinstance(value, dict):
        return "an object"
    return "a list" if isinstance(value, list) else value


def _split(reader: RecordReader, split: Any) -> Columns:
    """`{"columns": [...], "data": [[...], ...], "index"?: [...]}` (pandas' split orient)."""
    if not isinstance(split, dict):
        expected = 'an object {"columns": [...], "data": [[...], ...]}'
        raise InputError([Problem("dataframe_split", "wrong type", _kind(split), expected)])
    problems = [
        Problem(f"dataframe_split.{clipped(key)}", "unknown field", None, "columns, data or index")
        for key in heapq.nsmallest(MAX_PROBLEMS, split.keys() - {"columns", "data", "index"})
    ]
    columns: Any = split.get("columns")  # a list of names, once the checks pass
    data: Any = split.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        received = None if columns is None else _kind(columns)
        problem = "missing" if columns is None else "wrong type"
        problems.append(Problem("dataframe_split.columns", problem, received, "a list of names"))
    else:
        reader.check_names(columns, "dataframe_split.columns")
        if len(set(columns)) != len(columns):
            twice = given_twice(columns)
            problems.append(Problem("dataframe_split.columns", "names given twice", twice, None))
    if not isinstance(data, list):
        received = None if data is None else _kind(data)
        problem = "missing" if data is None else "wrong type"
        problems.append(Problem("dataframe_split.data", problem, received, "a list of rows"))
    elif not data:
        problems.append(Problem("dataframe_split.data", "empty batch", [], "at least one row"))
    if problems:
        raise InputError(problems)
    reader.check_rows(len(data), "rows")
    width = f"{len(columns)} values, one per column"
    _check_rows(data, len(columns), "dataframe_split.data", width)
    table = {name: [row[k] for row in data] for k, name in enumerate(columns)}
    index = {name: k for k, name in enumerate(columns)}
    return reader.table_columns(
        table, lambda name, i: f"dataframe_split.data[{i}][{index[name]}] ({name})"
    )


def _rows(reader: RecordReader, rows: list[list[Any]], key: str) -> Columns:
    """Rows given as lists of the features in signature order."""
    reader.check_rows(len(rows), "rows")
    width = f"{len(reader.names)} values, the features in order: {', '.join(reader.names)}"
    _check_rows(rows, len(reader.names), key, width)
    table = {name: [row[j] for row in rows] for j, name in enumerate(reader.names)}
    index = {name: j for j, name in enumerate(reader.names)}
    return reader.table_columns(table, lambda name, i: f"{key}[{i}][{index[name]}] ({name})")


def _check_rows(rows: list[Any], width: int, where: str, expected: str) -> None:
    if all(type(row) is list and len(row) == width for row in rows):
        return
    problems = []
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            problems.append(Problem(f"{where}[{i}]", "wrong type", _kind(row), "a list"))
        elif len(row) != width:
            problems.append(Problem(f"{where}[{i}]", "wrong length", len(row), expected))
        if len(problems) == MAX_PROBLEMS:
            break
    raise InputError(problems)


def _named(reader: RecordReader, columns: dict[str, Any], key: str) -> Columns:
    """`{"a": [1, 3], "b": [2, 4]}`: each feature's values, by name."""
    reader.check_names(list(columns), key)
    problems = [
        Problem(f"{key}.{clipped(name)}", "wrong type", _kind(values), "a list of values")
        for name, values in columns.items()
        if not isinstance(values, list)
    ]
    if problems:
        raise InputError(problems)
    return reader.table_columns(columns, lambda name, i: f"{key}.{name}[{i}]")


# --- CSV ------------------------------------------------------------------------------------


def csv_columns(reader: RecordReader, body: bytes) -> Columns:
    """The checked columns of a CSV body: a header row of names, then one row per instance.
    One of more cells than `serve.max_batch_rows` rows of the model's fields is refused before
    it is parsed."""
    _bound_cells(body, reader.max_separators)
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MalformedBodyError("the CSV body is not UTF-8 text") from None
    lines = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []
    try:
        rows = [(lines.line_num, row) for row in lines if row]
    except csv.Error as exc:
        message = f"the CSV body is malformed at line {lines.line_num}: {exc}"
        raise MalformedBodyError(message) from None
    if not rows:
        raise MalformedBodyError(
            "the CSV body is empty; expected a header row of feature names, then one row per "
            "instance"
        )
    (_, header), data = rows[0], rows[1:]
    reader.check_names(header, "the CSV header")
    twice = given_twice(header)
    if twice:
        raise InputError([Problem("the CSV header", "names given twice", twice, None)])
    if not data:
        raise InputError(
            [Problem("the CSV", "empty batch", [], "at least one row after the header")]
        )
    reader.check_rows(len(data), "rows")
    ragged = ((line, row) for line, row in data if len(row) != len(header))
    problems = [
        Problem(f"line {line}", "wrong length", len(row), f"{len(header)} values, as in the header")
        for line, row in itertools.islice(ragged, MAX_PROBLEMS)
    ]
    if problems:
        raise InputError(problems)
    table = {name: [_cell(row[k]) for _, row in data] for k, name in enumerate(header)}
    return reader.table_columns(table, lambda name, i: f"line {data[i][0]} ({name})")


def _bound_cells(body: bytes, limit: int) -> None:
    """Refuse a CSV body of more than `limit` separators (commas and line ends outside quoted
    cells), counted exactly only when the count of all of them is over `limit`."""
    count = body.count(b",") + body.count(b"\n")
    if count > limit:
        # Quotes open and close quoted cells (one inside a cell is doubled: closed, reopened).
        count = count_outside_quotes(body, b",\n", limit)
    if count > limit:
        raise TooLargeError(
            f"the CSV body holds more than {limit} cells, more than a request to this model "
            "can (serve.max_batch_rows rows of its fields)"
        )


def _cell(text: str) -> Any:
    """A CSV cell: an empty one is null; any other is text, read by the column's rule as a JSON
    string or an ingested cell is (`refit.values`)."""
    return None if text == "" else text


def answer(predictions: Predictions, output: Output) -> Response:
    """`{"predictions": [...]}` of a model of `output`: labels, or row objects when the rows
    have scores or a mixture's probabilities (see the module's docstring)."""
    labels = predictions.label_list()
    supervised = output.task in SUPERVISED
    if supervised and predictions.withheld is None:  # the common case
        return JSONBody({"predictions": labels})
    withheld = withheld_rows(predictions)
    scores = scores_of(predictions)
    maps = None if supervised else predictions.probability_maps()
    if scores is None and maps is None:
        return JSONBody({"predictions": blanked(labels, withheld)})
    field = scores_field(predictions)
    rows: list[Any] = []
    for i, label in enumerate(labels):
        row: dict[str, Any] = {"prediction": label}
        if maps is not None:
            row["probabilities"] = maps[i]
        if scores is not None:
            row[field] = scores[i]
        rows.append(row)
    return JSONBody({"predictions": blanked(rows, withheld)})


ERROR_CODES = {
    404: "ENDPOINT_NOT_FOUND",
    413: "REQUEST_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
}
"""MLflow's `error_code` of each status; any other is `BAD_REQUEST`."""
BAD_REQUEST = "BAD_REQUEST"


def error(failure: Failure) -> Response:
    """MLflow's error body; a request's own fault is 400 (refit's 422 included)."""
    if failure.code == UnsupportedMediaType.code:  # MLflow answers these in plain text
        return PlainTextResponse(failure.message, status_code=failure.status)
    status = 400 if failure.status == 422 else failure.status
    body = {"error_code": ERROR_CODES.get(status, BAD_REQUEST), "message": failure.line}
    return JSONBody(body, status_code=status, headers=failure.headers)
