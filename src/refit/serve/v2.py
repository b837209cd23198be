"""The Open Inference Protocol (KServe V2) over REST, for a tabular model.

    app.include_router(v2_router(state))

    GET  /v2/health/live, /v2/health/ready         200, or 503 while no model is ready
    GET  /v2                                       server metadata
    GET  /v2/models/{name}[/versions/{v}]          model metadata: one input per feature
    GET  /v2/models/{name}[/versions/{v}]/ready    200, or 503 while the model is not ready
    POST /v2/models/{name}[/versions/{v}]/infer    inference

An inference request carries its rows in either of two layouts:

- one input per feature, MLServer's `"pd"` content type: `{"name": "mean_radius", "shape":
  [N], "datatype": "FP64", "data": [...]}` for each feature. Chosen by the request parameter
  `content_type: "pd"`, or by every input being named after a feature.
- one `[N, F]` tensor, whatever its name: a row of the F features per instance, in the order
  model metadata lists them (MLServer's and KServe's sklearn examples send this).

`data` may be flat or nested (row-major). The answer has the outputs `predict` (shape [N]) and,
for a classifier with probabilities, `predict_proba` ([N, C], FP64, columns in the order of the
classes in the model's signature); a request's `outputs` picks among them. Every error is
`{"error": "..."}`: 400 for the request's own fault, 404 for an unknown model or version, 413
over the size limits, 503 (with `Retry-After`) before a model is ready, 500 otherwise.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from refit import __version__
from refit.errors import (
    InputError,
    MalformedBodyError,
    NotFoundError,
    RefitError,
    RequestError,
    ServiceUnavailableError,
)
from refit.serve._inference import (
    BINARY_HEADER,
    Datatype,
    InferenceRequest,
    invalid,
    read_request,
    tensor_columns,
)
from refit.serve._media import JSON_TYPE, content_type, route_path
from refit.serve._numbers import shown
from refit.serve._routes import AsciiJSONResponse as V2Response
from refit.serve._routes import protocol_route
from refit.serve.predictor import LoadedModel, Predictions
from refit.serve.records import Columns, explain
from refit.serve.schemas import json_response, ref, v2_errors
from refit.serve.state import ServerState, off_the_loop, read_body
from refit.spec import FeatureType, Task

log = logging.getLogger("refit.serve")

PLATFORM = "refit_sklearn"
BINARY_TYPE = "application/octet-stream"
"""The Content-Type a request of the binary tensor data extension may have (or none)."""
PREDICT, PREDICT_PROBA = "predict", "predict_proba"

_DATATYPE = {
    FeatureType.FLOAT: "FP64",
    FeatureType.INT: "INT64",
    FeatureType.BOOL: "BOOL",
    FeatureType.CATEGORY: "BYTES",
}
_LABEL_DATATYPE = {"float": "FP64", "int": "INT64", "bool": "BOOL", "string": "BYTES"}


# --- wire objects of the answers (they document the API) --------------------------------------


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    data: list[Any]


class InferenceResponse(BaseModel):
    """`inference_response`: `model_version` is the served version, `id` the request's (or a
    new UUID)."""

    model_name: str
    model_version: str
    id: str
    outputs: list[ResponseOutput]


class MetadataTensor(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int]


class ModelMetadata(BaseModel):
    """`metadata_model_response`: one input per feature, in the order of an [N, F] tensor."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: dict[str, Any]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


# --- errors ---------------------------------------------------------------------------------


def error_response(exc: Exception) -> Response:
    """The V2 answer to anything raised while serving a V2 route."""
    status = 500
    headers: Mapping[str, str] | None = None
    if isinstance(exc, InputError):
        status, message = 400, explain(exc)
    elif isinstance(exc, RequestError):
        status, message = (400 if exc.status == 422 else exc.status), exc.message
    elif isinstance(exc, NotFoundError):
        status, message = 404, exc.message
    elif isinstance(exc, ServiceUnavailableError):
        status, message, headers = 503, exc.message, {"Retry-After": "1"}
    elif isinstance(exc, RequestValidationError):
        status, message = 400, invalid(exc.errors())
    elif isinstance(exc, HTTPException):
        status, message, headers = exc.status_code, str(exc.detail), exc.headers
    elif isinstance(exc, RefitError):
        message = exc.message
    else:
        log.error("a V2 request failed", exc_info=exc)
        message = "internal server error"
    return V2Response({"error": message}, status_code=status, headers=headers)


# --- inference ------------------------------------------------------------------------------


def _served(state: ServerState, name: str, version: str | None) -> LoadedModel:
    model = state.model(name)
    if version is not None and version != str(model.version):
        raise NotFoundError(
            f"version {version} of {name} is not served here; this server serves version "
            f"{model.version}"
        )
    return model


def _probabilities(model: LoadedModel) -> bool:
    output = model.signature.output
    return output.task is Task.CLASSIFICATION and output.probabilities


def _outputs(model: LoadedModel, request: InferenceRequest) -> list[str]:
    """The outputs to answer with, in the order asked (all of them when none is asked)."""
    gives = [PREDICT, PREDICT_PROBA] if _probabilities(model) else [PREDICT]
    if not request.outputs:
        return gives
    asked = list(dict.fromkeys(output.name for output in request.outputs))
    for name in asked:
        if name == PREDICT_PROBA and name not in gives:
            kind = "a regression" if model.signature.output.task is Task.REGRESSION else "a"
            raise MalformedBodyError(
                f"{model.name} is {kind} model without class probabilities: it has no output "
                f"{PREDICT_PROBA!r}, only {PREDICT!r}"
            )
        if name not in gives:
            raise MalformedBodyError(
                f"unknown output {shown(name)}; {model.name} gives {', '.join(map(repr, gives))}"
            )
    return asked


def _answer(
    model: LoadedModel, request_id: str, outputs: list[str], predictions: Predictions
) -> dict[str, Any]:
    rows = len(predictions.labels)
    answered: list[dict[str, Any]] = []
    for name in outputs:
        if name == PREDICT:
            datatype = _LABEL_DATATYPE[model.signature.output.type]
            answered.append(
                {"name": name, "shape": [rows], "datatype": datatype, "data": predictions.labels}
            )
            continue
        probabilities = predictions.probabilities
        if probabilities is None:
            raise RefitError(f"{model.name} v{model.version} gave no class probabilities")
        classes = list(probabilities[0]) if probabilities else []
        data = [row[c] for row in probabilities for c in classes]
        answered.append(
            {"name": name, "shape": [rows, len(classes)], "datatype": "FP64", "data": data}
        )
    return {
        "model_name": model.name,
        "model_version": str(model.version),
        "id": request_id,
        "outputs": answered,
    }


# --- metadata -------------------------------------------------------------------------------


def model_metadata(model: LoadedModel) -> dict[str, Any]:
    output = model.signature.output
    outputs = [{"name": PREDICT, "datatype": _LABEL_DATATYPE[output.type], "shape": [-1]}]
    if _probabilities(model):
        classes = len(output.classes or [])
        outputs.append({"name": PREDICT_PROBA, "datatype": "FP64", "shape": [-1, classes]})
    return {
        "name": model.name,
        "versions": [str(model.version)],
        "platform": PLATFORM,
        "inputs": [
            {"name": c.name, "datatype": _DATATYPE[c.type], "shape": [-1]}
            for c in model.signature.inputs
        ],
        "outputs": outputs,
        "parameters": {"content_type": "pd"},
    }


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its `$defs` references written in place (for an OpenAPI request body)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    inlined: dict[str, Any] = walk(schema)
    return inlined


# --- routes ---------------------------------------------------------------------------------


def v2_router(state: ServerState) -> APIRouter:
    """The V2 routes of a server: `app.include_router(v2_router(state))`."""
    router = APIRouter(
        tags=["open inference protocol (v2)"], route_class=protocol_route(error_response)
    )
    body = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline(_request_schema())}},
        }
    }

    def ready() -> bool:
        return state.follower.current is not None and not state.draining

    @router.get(
        "/v2/health/live",
        summary="The process answers",
        responses={200: json_response(ref("V2Live"), "Live"), **v2_errors(405)},
    )
    async def live() -> Response:
        return V2Response({"live": True})

    @router.get(
        "/v2/health/ready",
        summary="Every model is ready (503 if not)",
        responses={
            200: json_response(ref("V2Ready"), "Ready"),
            503: json_response(ref("V2Ready"), "Not ready"),
            **v2_errors(405),
        },
    )
    async def server_ready() -> Response:
        return V2Response({"ready": ready()}, status_code=200 if ready() else 503)

    @router.get(
        "/v2",
        summary="Server metadata",
        responses={200: {"model": ServerMetadata}, **v2_errors(405)},
    )
    async def server_metadata() -> Response:
        return V2Response({"name": "refit", "version": __version__, "extensions": []})

    async def model_ready(name: str, version: str | None) -> Response:
        try:
            _served(state, name, version)
        except ServiceUnavailableError:
            return V2Response({"name": name, "ready": False}, status_code=503)
        return V2Response({"name": name, "ready": ready()}, status_code=200 if ready() else 503)

    async def metadata(name: str, version: str | None) -> Response:
        return V2Response(model_metadata(_served(state, name, version)))

    async def infer(name: str, version: str | None, request: Request) -> Response:
        header, given = request.headers.get(BINARY_HEADER), request.headers.get("content-type")
        if header is None or given is not None:
            # A request of the binary extension carries a header no cross-site form can set;
            # its Content-Type may be absent, or name the binary data.
            accepted = (JSON_TYPE,) if header is None else (JSON_TYPE, BINARY_TYPE)
            content_type(given, accepted, route_path(request))
        model = _served(state, name, version)
        body = await read_body(request, state.max_body_bytes)
        reader = state.reader(model)

        def read(body: bytes) -> tuple[InferenceRequest, list[str], Columns]:
            inference = read_request(body, header, reader)
            outputs = _outputs(model, inference)
            return inference, outputs, tensor_columns(reader, inference, model.name)

        inference, outputs, columns = await off_the_loop(body, read)
        predictions = await state.predict_columns(model, columns)
        request_id = inference.id if inference.id is not None else str(uuid.uuid4())
        return V2Response(_answer(model, request_id, outputs, predictions))

    meta = {
        "summary": "Model metadata",
        "responses": {200: {"model": ModelMetadata}, **v2_errors(404, 405, 503)},
    }
    is_ready = {
        "summary": "The model is ready (503 if not)",
        "responses": {
            200: json_response(ref("V2ModelReady"), "Ready"),
            503: json_response(ref("V2ModelReady"), "Not ready"),
            **v2_errors(404, 405),
        },
    }
    run = {
        "summary": "Inference",
        "responses": {
            200: {"model": InferenceResponse},
            **v2_errors(400, 404, 405, 413, 415, 500, 503),
        },
        "openapi_extra": body,
    }

    @router.get("/v2/models/{name}", **meta)  # type: ignore[arg-type]
    async def get_metadata(name: str) -> Response:
        return await metadata(name, None)

    @router.get("/v2/models/{name}/versions/{version}", **meta)  # type: ignore[arg-type]
    async def get_version_metadata(name: str, version: str) -> Response:
        return await metadata(name, version)

    @router.get("/v2/models/{name}/ready", **is_ready)  # type: ignore[arg-type]
    async def get_ready(name: str) -> Response:
        return await model_ready(name, None)

    @router.get("/v2/models/{name}/versions/{version}/ready", **is_ready)  # type: ignore[arg-type]
    async def get_version_ready(name: str, version: str) -> Response:
        return await model_ready(name, version)

    @router.post("/v2/models/{name}/infer", **run)  # type: ignore[arg-type]
    async def post_infer(name: str, request: Request) -> Response:
        return await infer(name, None, request)

    @router.post("/v2/models/{name}/versions/{version}/infer", **run)  # type: ignore[arg-type]
    async def post_version_infer(name: str, version: str, request: Request) -> Response:
        return await infer(name, version, request)

    return router


def _request_schema() -> dict[str, Any]:
    return InferenceRequest.model_json_schema()
