"""JSON Schemas of what the server takes and answers, for its OpenAPI document.

The prediction API's are generated from the served version's signature, so that `/docs` and
`/openapi.json` show the real fields, their types and the output. The others (model status,
health, and the error bodies of each protocol) are fixed; `refit_errors`, `v2_errors` and
`mlflow_errors` declare a route's error responses with them:

    @app.get("/v1/models/{name}", responses=refit_errors(404, 405))
"""

from __future__ import annotations

from typing import Any

from refit.flavors import RUNTIMES
from refit.serve._answer_schemas import answer_properties
from refit.serve._logging import MAX_REQUEST_ID, REQUEST_ID_PATTERN
from refit.serve.codecs import mlflow
from refit.signature import InputColumn, Signature
from refit.spec import FeatureType

_JSON_TYPES = {
    FeatureType.FLOAT: "number",
    FeatureType.INT: "integer",
    FeatureType.BOOL: "boolean",
    FeatureType.CATEGORY: "string",
}
_OUTPUT_TYPES = {"float": "number", "int": "integer", "bool": "boolean", "string": "string"}


def _field(column: InputColumn) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": _JSON_TYPES[column.type]}
    if column.values is not None:
        schema["enum"] = list(column.values)
    if column.min is not None:
        schema["minimum"] = column.min
    if column.max is not None:
        schema["maximum"] = column.max
    if column.nullable:
        return {"anyOf": [schema, {"type": "null"}]}
    return schema


def openapi_components(
    signature: Signature | None, max_rows: int | None = None, withholds: bool = False
) -> dict[str, Any]:
    """`components.schemas` entries: Record, Records, Prediction, Predictions and FeedbackItem
    from the signature, and the fixed schemas that the routes' responses refer to; `max_rows`
    is the server's `serve.max_batch_rows`, which bounds a feedback's row number; `withholds`:
    the served version's `postprocess` may withhold answers."""
    if signature is None:
        record: dict[str, Any] = {
            "type": "object",
            "description": "The model's input fields (none is served yet: see /v1/models).",
        }
        label: dict[str, Any] = {}
        proba, scores = False, None
    else:
        record = {
            "type": "object",
            "properties": {c.name: _field(c) for c in signature.inputs},
            "required": signature.names,
            "additionalProperties": False,
        }
        label = {"type": _OUTPUT_TYPES[signature.output.type]}
        if signature.output.classes:
            label["enum"] = signature.output.classes
        proba, scores = signature.output.probabilities, signature.output.scores
    one, many = answer_properties(label, proba, scores, withholds, _ANSWER_ID)
    return {
        "Record": {"title": "Record", **record},
        "Records": {
            "title": "Records",
            "type": "object",
            "properties": {
                "records": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/Record"},
                    "minItems": 1,
                }
            },
            "required": ["records"],
            "additionalProperties": False,
        },
        "Prediction": {
            "title": "Prediction",
            "type": "object",
            "properties": one,
            "required": ["model", "version", "id", "prediction"],
        },
        "Predictions": {
            "title": "Predictions",
            "type": "object",
            "properties": many,
            "required": ["model", "version", "id", "predictions"],
        },
        **_feedback_schemas(label, max_rows),
        **_STATUS_SCHEMAS,
        **_ERROR_SCHEMAS,
    }


_ANSWER_ID = {
    "type": "string",
    "maxLength": MAX_REQUEST_ID,
    "description": "The request's id (its `X-Request-Id`), which feedback names.",
}


def _feedback_schemas(label: dict[str, Any], max_rows: int | None) -> dict[str, Any]:
    """`FeedbackItem`, `Feedback` (one item, or a batch of them) and `FeedbackAccepted`; a
    value is of the type of the model's predictions (`label`)."""
    if label.get("type") == "number":
        value = {"type": "number", "description": "The true value (a finite number)."}
    else:
        value = {**label, "description": "The true class, one of the model's classes."}
    item = _object(
        {
            "id": {
                "type": "string",
                "maxLength": MAX_REQUEST_ID,
                "pattern": REQUEST_ID_PATTERN,
                "description": "The `X-Request-Id` (the `id` of the answer) of the request.",
            },
            "row": {
                "type": "integer",
                "minimum": 0,
                **({"maximum": max_rows - 1} if max_rows is not None else {}),
                "default": 0,
                "description": "The row within that request (a batch's), from 0.",
            },
            "value": value,
        },
        required=["id", "value"],
    )
    batch = _object({"feedback": {"type": "array", "items": ref("FeedbackItem"), "minItems": 1}})
    return {
        "FeedbackItem": {"title": "FeedbackItem", **item},
        "Feedback": {"title": "Feedback", "anyOf": [ref("FeedbackItem"), batch]},
        "FeedbackAccepted": {
            "title": "FeedbackAccepted",
            **_object({"accepted": {**_INTEGER, "description": "The items taken."}}),
        },
    }


def ref(name: str) -> dict[str, str]:
    """A reference to the component schema `name`."""
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


_STRING = {"type": "string"}
_INTEGER = {"type": "integer"}
_BOOLEAN = {"type": "boolean"}
_NULLABLE_STRING = {"type": ["string", "null"]}


def _titled(schemas: dict[str, Any]) -> dict[str, Any]:
    return {name: {"title": name, **schema} for name, schema in schemas.items()}


_STATUS_SCHEMAS = _titled(
    {
        "ModelStatus": _object(
            {
                "name": _STRING,
                "alias": {**_STRING, "description": "The alias the server follows."},
                "ready": _BOOLEAN,
                "production": {
                    "anyOf": [_INTEGER, {"type": "null"}],
                    "description": "The version holding the alias at the server's last look.",
                },
                "serving": {
                    "anyOf": [_INTEGER, {"type": "null"}],
                    "description": "The version this server answers with.",
                },
                "reason": {
                    **_NULLABLE_STRING,
                    "description": "Why it does not answer with the version holding the alias "
                    "(null: it does), e.g. `v4 failed to load: artifact corrupt: ...`.",
                },
                "served": {"anyOf": [ref("ServedVersion"), {"type": "null"}]},
                "refused": {
                    "anyOf": [ref("RefusedVersion"), {"type": "null"}],
                    "description": "The version of the alias that failed to load, if any.",
                },
            }
        ),
        "ModelList": _object({"models": {"type": "array", "items": ref("ModelStatus")}}),
        "ServedVersion": {
            "type": "object",
            "properties": {
                "name": _STRING,
                "version": _INTEGER,
                "runtime": {"enum": list(RUNTIMES)},
                "onnx": {
                    **_NULLABLE_STRING,
                    "description": "Why ONNX Runtime is not used, if not.",
                },
                "loaded_at": {**_STRING, "format": "date-time"},
                "snapshot_id": _STRING,
                "metric": _STRING,
                "metrics": {"type": "object"},
                "artifact_sha256": _STRING,
                "onnx_failed": {
                    **_BOOLEAN,
                    "description": "Its ONNX artifact failed to load: it is served natively.",
                },
                "signature": {"type": "object", "description": "Its inputs and its output."},
            },
            "required": ["name", "version", "runtime", "loaded_at", "signature"],
        },
        "RefusedVersion": _object(
            {
                "version": _INTEGER,
                "error": _STRING,
                "attempts": _INTEGER,
                "retry_in": {"type": "number", "description": "Seconds to the next attempt."},
            }
        ),
        "Live": _object({"status": {"const": "live"}}),
        "Ready": _object({"status": {"const": "ready"}, "model": _STRING, "version": _INTEGER}),
        "NotReady": _object(
            {"status": {"enum": ["not ready", "draining"]}, "model": _STRING}, required=["status"]
        ),
        "V2Live": _object({"live": _BOOLEAN}),
        "V2Ready": _object({"ready": _BOOLEAN}),
        "V2ModelReady": _object({"name": _STRING, "ready": _BOOLEAN}),
    }
)

_ERROR_SCHEMAS = _titled(
    {
        "Error": _object(
            {
                "error": _object(
                    {
                        "code": _STRING,
                        "message": _STRING,
                        "problems": {"type": "array", "items": ref("Problem")},
                    },
                    required=["code", "message"],
                )
            }
        ),
        "Problem": {
            "description": "One thing wrong with the input: where, what, what was received and "
            "what was expected.",
            **_object(
                {
                    "field": _STRING,
                    "problem": _STRING,
                    "received": {},
                    "expected": _NULLABLE_STRING,
                },
                required=["field", "problem"],
            ),
        },
        "V2Error": _object({"error": _STRING}),
        "MlflowError": _object(
            {
                "error_code": {"enum": [mlflow.BAD_REQUEST, *mlflow.ERROR_CODES.values()]},
                "message": _STRING,
            }
        ),
    }
)

# --- error responses ------------------------------------------------------------------------

Responses = dict[int | str, dict[str, Any]]

# Why each status happens: refit's own routes, then a standard protocol's, whose 400 is also
# for values the model cannot take (refit's 422).
_WHY = {
    400: "The body is not JSON, or not the shape this route takes",
    404: "No such model (or version) is served here",
    405: "The path does not take this method; `Allow` lists the ones it takes",
    413: "The body or the batch is over the server's limit",
    415: "A Content-Type this route does not read, none, or a charset other than UTF-8; the "
    "message says what to send",
    422: "Fields missing, unknown, of the wrong type or out of range, or rows the model "
    "refuses; `problems` names each",
    500: "Predicting failed; the server's log has the cause",
    503: "No verified model is loaded yet, or the server is busy: retry after `Retry-After` "
    "seconds",
}
_WHY_STANDARD = {
    **_WHY,
    400: "The request is at fault: not JSON, not this route's shape, or values the model "
    "cannot take; the message says which",
}
_CODES = {
    400: "`malformed_body`",
    404: "`not_found`",
    405: "`method_not_allowed`",
    413: "`too_large`",
    415: "`unsupported_media_type`",
    422: "`invalid_input`, or `model_refused` when the model fails on the request's own rows",
    500: "`internal`, or `error` for a failure refit names",
    503: "`unavailable`",
}
_HEADERS = {
    405: {
        "Allow": {"description": "The methods of the path.", "required": True, "schema": _STRING}
    },
    503: {
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "required": True,
            "schema": _INTEGER,
        }
    },
}


def json_response(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A documented response whose body is JSON of `schema`."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(status: int, schema: str, description: str) -> dict[str, Any]:
    response = json_response(ref(schema), description)
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response


def refit_errors(*statuses: int) -> Responses:
    """`responses=` entries of refit's own routes: `{"error": {"code", "message", ...}}`."""
    return {s: _error(s, "Error", f"{_CODES[s]}: {_WHY[s]}") for s in statuses}


def v2_errors(*statuses: int) -> Responses:
    """`responses=` entries of the Open Inference routes: `{"error": "..."}`."""
    return {s: _error(s, "V2Error", _WHY_STANDARD[s]) for s in statuses}


def mlflow_errors(*statuses: int) -> Responses:
    """`responses=` entries of MLflow's routes: `{"error_code", "message"}`, but a 415 in plain
    text, as MLflow answers it."""
    responses: Responses = {}
    for status in statuses:
        if status == 415:
            text = {"text/plain": {"schema": _STRING}}
            why = f"{_WHY_STANDARD[status]} (in plain text, as MLflow answers)"
            responses[status] = {"description": why, "content": text}
        else:
            responses[status] = _error(status, "MlflowError", _WHY_STANDARD[status])
    return responses


UNKNOWN_PATH = _error(404, "Error", "`not_found`: No route has this path")
"""The answer to a path the document does not list: `components.responses.UnknownPath`."""

CONNECTION_REFUSALS = {
    408: _error(
        408,
        "Error",
        "`timeout`: the request's headers were not complete within `serve.header_timeout`, or "
        "its body paused longer than `serve.body_timeout`; answered by the connection layer, "
        "before any route, with `Connection: close`",
    ),
    414: _error(
        414,
        "Error",
        "`uri_too_long`: the URL is over `serve.max_url_bytes`; answered by the connection "
        "layer, before any route, with `Connection: close`",
    ),
    431: _error(
        431,
        "Error",
        "`headers_too_large`: the request line and headers are over `serve.max_header_bytes`; "
        "answered by the connection layer, before any route, with `Connection: close`",
    ),
    503: _error(
        503,
        "Error",
        "`unavailable`: every connection of the worker (`serve.max_connections`) has a request "
        "in progress; answered by the connection layer, with `Connection: close`",
    ),
}
"""What the connection layer (`refit.serve._http`) answers on any path, in refit's error shape
and before a request id is given; listed on every operation."""
