"""MLflow's scoring protocol, which is also the SageMaker inference container's contract.

    app.include_router(invocations_router(state))

    POST /invocations    JSON or CSV rows -> {"predictions": [...]}
    GET  /ping, /health  200 when a model is loaded, 404 otherwise; the body is "\\n"
    GET  /version        refit's version

A JSON body has exactly one of these fields (and may have `params`, which refit's models take
none of, so they are ignored):

    {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}}
    {"dataframe_records": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]}
    {"instances": [{"a": 1, "b": 2}, ...]} or {"instances": [[1, 2], [3, 4]]}
    {"inputs": {"a": [1, 3], "b": [2, 4]}} or {"inputs": [[1, 2], [3, 4]]}

Rows given as lists hold the features in signature order. A CSV body (`text/csv` or
`application/csv`, UTF-8) starts with a header row of feature names; an empty cell is null.
Errors are MLflow's `{"error_code": "BAD_REQUEST", "message": "..."}` (400; 413 over the
size limits; 503 before a model is ready), except an unsupported content type: 415 in plain
text, as MLflow answers.
"""

from __future__ import annotations

import csv
import heapq
import io
import itertools
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from starlette.exceptions import HTTPException

from refit import __version__
from refit.errors import (
    InputError,
    MalformedBodyError,
    Problem,
    RefitError,
    RequestError,
    ServiceUnavailableError,
    TooLargeError,
)
from refit.serve._json import count_outside_quotes, parse_json
from refit.serve._media import JSON_TYPE, UnsupportedMediaType, content_type
from refit.serve._routes import AsciiJSONResponse, protocol_route
from refit.serve.records import (
    MAX_PROBLEMS,
    Columns,
    RecordReader,
    clipped,
    explain,
    given_twice,
)
from refit.serve.schemas import json_response, mlflow_errors
from refit.serve.state import ServerState, off_the_loop, read_body

log = logging.getLogger("refit.serve")

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
CSV_TYPES = ("text/csv", "application/csv")


def error_response(exc: Exception) -> Response:
    """MLflow's answer to anything raised while serving one of its routes."""
    status, code = 500, "INTERNAL_ERROR"
    headers: Mapping[str, str] | None = None
    if isinstance(exc, UnsupportedMediaType):  # MLflow answers these in plain text
        return PlainTextResponse(exc.message, status_code=415)
    if isinstance(exc, InputError):
        status, code, message = 400, "BAD_REQUEST", explain(exc)
    elif isinstance(exc, RequestError):
        status, message = (400 if exc.status == 422 else exc.status), exc.message
        code = "REQUEST_LIMIT_EXCEEDED" if status == 413 else "BAD_REQUEST"
    elif isinstance(exc, ServiceUnavailableError):
        status, code, message = 503, "TEMPORARILY_UNAVAILABLE", exc.message
        headers = {"Retry-After": "1"}
    elif isinstance(exc, RequestValidationError):
        status, code, message = 400, "BAD_REQUEST", str(exc)
    elif isinstance(exc, HTTPException):
        status, message, headers = exc.status_code, str(exc.detail), exc.headers
        code = "ENDPOINT_NOT_FOUND" if status == 404 else "BAD_REQUEST"
    elif isinstance(exc, RefitError):
        message = exc.message
    else:
        log.error("an /invocations request failed", exc_info=exc)
        message = "internal server error"
    body = {"error_code": code, "message": message}
    return AsciiJSONResponse(body, status_code=status, headers=headers)


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


# --- routes ---------------------------------------------------------------------------------


def invocations_router(state: ServerState) -> APIRouter:
    """The MLflow/SageMaker routes of a server."""
    router = APIRouter(tags=["mlflow / sagemaker"], route_class=protocol_route(error_response))

    def healthy() -> Response:
        loaded = state.follower.current is not None and not state.draining
        return Response("\n", status_code=200 if loaded else 404, media_type=JSON_TYPE)

    # MLflow's scoring server answers its probes with a newline, labelled application/json.
    newline = {"type": "string", "const": "\n", "description": "A newline (not JSON)."}
    probe = {
        200: json_response(newline, "A model is loaded"),
        404: json_response(newline, "No model is loaded yet, or the server is draining"),
        **mlflow_errors(405),
    }

    @router.get(
        "/ping",
        summary="200 when a model is loaded, else 404 (SageMaker's probe)",
        responses=probe,
    )
    async def ping() -> Response:
        return healthy()

    @router.get("/health", summary="The same as /ping", responses=probe)
    async def health() -> Response:
        return healthy()

    @router.get(
        "/version",
        summary="refit's version",
        response_class=PlainTextResponse,
        responses={200: {"description": "refit's version"}, **mlflow_errors(405)},
    )
    async def version() -> Response:
        return PlainTextResponse(__version__)

    predictions = {"type": "array", "description": "One prediction per row, in order."}

    @router.post(
        "/invocations",
        summary="Predict rows sent as MLflow's JSON layouts or CSV",
        openapi_extra={"requestBody": _request_body()},
        responses={
            200: json_response(
                {
                    "type": "object",
                    "properties": {"predictions": predictions},
                    "required": ["predictions"],
                    "additionalProperties": False,
                },
                "The predictions",
            ),
            **mlflow_errors(400, 405, 413, 415, 500, 503),
        },
    )
    async def invocations(request: Request) -> Response:
        mime = media_type(request.headers.get("content-type"))
        model = state.model(state.name)
        body = await read_body(request, state.max_body_bytes)
        reader = state.reader(model)

        def read(body: bytes) -> Columns:
            if mime in CSV_TYPES:
                return csv_columns(reader, body)
            return json_columns(reader, parse_json(body, reader.max_separators))

        columns = await off_the_loop(body, read)
        predictions = await state.predict_columns(model, columns)
        return AsciiJSONResponse({"predictions": predictions.labels})

    return router


def _request_body() -> dict[str, Any]:
    layouts = {
        key: {
            "type": "object",
            "required": [key],
            "properties": {key: {}, "params": {"type": "object"}},
        }
        for key in FORMATS
    }
    return {
        "required": True,
        "content": {
            JSON_TYPE: {"schema": {"oneOf": list(layouts.values())}},
            "text/csv": {"schema": {"type": "string"}},
            "application/csv": {"schema": {"type": "string"}},
        },
    }
