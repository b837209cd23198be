"""The Open Inference Protocol (KServe V2) over REST, for a tabular model.

    router, hot = v2_router(state)
    app.include_router(router)
    app.add_middleware(HotRoutes, routes=hot)

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

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response

from refit import __version__
from refit.errors import ServiceUnavailableError
from refit.predictions import Columns
from refit.serve._logging import current_request_id
from refit.serve._media import JSON_TYPE, content_type, route_path
from refit.serve._routes import CodecRoute, protocol_route
from refit.serve.codecs import JSONBody, v2
from refit.serve.codecs.v2_request import (
    BINARY_HEADER,
    Datatype,
    InferenceRequest,
    read_request,
    tensor_columns,
)
from refit.serve.predictor import LoadedModel
from refit.serve.records import RecordReader
from refit.serve.schemas import json_response, ref, v2_errors
from refit.serve.state import ServerState

BINARY_TYPE = "application/octet-stream"
"""The Content-Type a request of the binary tensor data extension may have (or none)."""


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


def v2_router(state: ServerState) -> tuple[APIRouter, list[CodecRoute]]:
    """The V2 routes of a server, and its hot ones (see `refit.serve._routes`)."""
    router = APIRouter(tags=["open inference protocol (v2)"], route_class=protocol_route(v2.error))
    body = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline(_request_schema())}},
        }
    }

    def ready() -> bool:
        return not state.draining and all(model.ready for model in state.models.values())

    def model_is_ready(name: str) -> bool:
        return not state.draining and state.served(name).ready

    @router.get(
        "/v2/health/live",
        summary="The process answers",
        responses={200: json_response(ref("V2Live"), "Live"), **v2_errors(405)},
    )
    async def live() -> Response:
        return JSONBody({"live": True})

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
        return JSONBody({"ready": ready()}, status_code=200 if ready() else 503)

    @router.get(
        "/v2",
        summary="Server metadata",
        responses={200: {"model": ServerMetadata}, **v2_errors(405)},
    )
    async def server_metadata() -> Response:
        return JSONBody({"name": "refit", "version": __version__, "extensions": []})

    async def model_ready(name: str, version: str | None) -> Response:
        try:
            v2.served(state.model(name), version)
        except ServiceUnavailableError:
            return JSONBody({"name": name, "ready": False}, status_code=503)
        is_ready = model_is_ready(name)
        return JSONBody({"name": name, "ready": is_ready}, status_code=200 if is_ready else 503)

    async def metadata(name: str, version: str | None) -> Response:
        return JSONBody(v2.metadata(v2.served(state.model(name), version)))

    async def infer(name: str, version: str | None, request: Request) -> Response:
        header, given = request.headers.get(BINARY_HEADER), request.headers.get("content-type")
        if header is None or given is not None:
            # A request of the binary extension carries a header no cross-site form can set;
            # its Content-Type may be absent, or name the binary data.
            accepted = (JSON_TYPE,) if header is None else (JSON_TYPE, BINARY_TYPE)
            content_type(given, accepted, route_path(request))

        def read(
            body: bytes, reader: RecordReader, model: LoadedModel
        ) -> tuple[Columns, tuple[str | None, list[str]]]:
            inference = read_request(body, header, reader)
            outputs = v2.outputs(model, inference)
            return tensor_columns(reader, inference, model.name), (inference.id, outputs)

        model, (given_id, outputs), predictions = await state.read_and_predict(
            request, name, read, lambda model: v2.served(model, version)
        )
        request_id = given_id if given_id is not None else current_request_id()
        return v2.answer(model, request_id, outputs, predictions)

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

    hot = [
        CodecRoute("/v2/models/{name}/infer", post_infer, v2.error),
        CodecRoute("/v2/models/{name}/versions/{version}/infer", post_version_infer, v2.error),
    ]
    return router, hot


def _request_schema() -> dict[str, Any]:
    return InferenceRequest.model_json_schema()
