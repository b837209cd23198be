"""MLflow's scoring protocol, which is also the SageMaker inference container's contract.

    router, hot = invocations_router(state)
    app.include_router(router)

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

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from refit import __version__
from refit.predictions import Columns
from refit.serve._json import parse_json
from refit.serve._media import JSON_TYPE
from refit.serve._routes import CodecRoute, protocol_route
from refit.serve.codecs import mlflow
from refit.serve.predictor import LoadedModel
from refit.serve.records import RecordReader
from refit.serve.schemas import json_response, mlflow_errors
from refit.serve.state import ServerState

# --- routes ---------------------------------------------------------------------------------


def invocations_router(state: ServerState) -> tuple[APIRouter, list[CodecRoute]]:
    """The MLflow/SageMaker routes of a server, and its hot one (see `refit.serve._routes`)."""
    router = APIRouter(tags=["mlflow / sagemaker"], route_class=protocol_route(mlflow.error))

    def healthy() -> Response:
        loaded = state.default.ready and not state.draining
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

    predictions = {
        "type": "array",
        "description": "One prediction per row, in order: its label; for a clustering with "
        "distances or probabilities, or an anomaly detector, an object of `prediction` and "
        "`distances`, `probabilities` or `score`; null for a row whose answer was withheld.",
    }

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
        mime = mlflow.media_type(request.headers.get("content-type"))

        def read(body: bytes, reader: RecordReader, model: LoadedModel) -> tuple[Columns, None]:
            if mime in mlflow.CSV_TYPES:
                return mlflow.csv_columns(reader, body), None
            return mlflow.json_columns(reader, parse_json(body, reader.max_separators)), None

        model, _, predictions = await state.read_and_predict(request, state.name, read)
        return mlflow.answer(predictions, model.signature.output)

    return router, [CodecRoute("/invocations", invocations, mlflow.error)]


def _request_body() -> dict[str, Any]:
    layouts = {
        key: {
            "type": "object",
            "required": [key],
            "properties": {key: {}, "params": {"type": "object"}},
        }
        for key in mlflow.FORMATS
    }
    return {
        "required": True,
        "content": {
            JSON_TYPE: {"schema": {"oneOf": list(layouts.values())}},
            "text/csv": {"schema": {"type": "string"}},
            "application/csv": {"schema": {"type": "string"}},
        },
    }
