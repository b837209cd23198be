"""The inference server: a FastAPI app built from already-open services.

    app = create_app(ServerState.open(services))     # nothing happens at import time

Routes are thin: read the body (bounded), check it against the served signature, predict on
the `LoadedModel` current when the request started, answer. Every error, whatever raised it,
leaves as the same JSON shape: `{"error": {"code", "message", "problems"?}}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from refit import __version__
from refit.deploy.pod import FIRST_LOAD_SECONDS
from refit.errors import (
    InputError,
    NotFoundError,
    RefitError,
    RequestError,
    ServiceUnavailableError,
)
from refit.serve._head import HeadMiddleware, allow_head
from refit.serve._json import parse_json
from refit.serve._logging import RequestLog
from refit.serve._media import JSON_TYPE, content_type, route_path
from refit.serve._server import ON_DRAIN
from refit.serve._unexpected import UnexpectedErrors
from refit.serve.auth import Access, AccessMiddleware, document_access
from refit.serve.docs import add_docs, openapi_document
from refit.serve.invocations import invocations_router
from refit.serve.metrics import CONTENT_TYPE, ServerMetrics
from refit.serve.predictor import LoadedModel, Predictions
from refit.serve.redaction import for_clients
from refit.serve.schemas import Responses, json_response, ref, refit_errors
from refit.serve.state import ServerState, off_the_loop, read_body
from refit.serve.v2 import v2_router


def error_body(code: str, message: str, problems: list[Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if problems is not None:
        error["problems"] = problems
    return {"error": error}


class ErrorResponse(JSONResponse):
    """An error body, escaped to ASCII: it may echo any string a client sent, and JSON lets a
    client send lone surrogates, which UTF-8 cannot encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def _error_response(exc: Exception) -> JSONResponse:
    if isinstance(exc, InputError):
        body = error_body(exc.code, exc.message, [asdict(p) for p in exc.problems])
        return ErrorResponse(body, status_code=exc.status)
    if isinstance(exc, (RequestError, ServiceUnavailableError)):
        headers = {"Retry-After": "1"} if isinstance(exc, ServiceUnavailableError) else None
        unavailable = isinstance(exc, ServiceUnavailableError)  # may say why a load failed
        message = for_clients(exc.message) if unavailable else exc.message
        return ErrorResponse(error_body(exc.code, message), exc.status, headers=headers)
    if isinstance(exc, NotFoundError):
        return ErrorResponse(error_body("not_found", exc.message), status_code=404)
    if isinstance(exc, RefitError):  # the server's own failure: where its stores are stays
        return ErrorResponse(error_body("error", for_clients(exc.message)), status_code=500)
    return ErrorResponse(error_body("internal", "internal server error"), status_code=500)


def answer(model: LoadedModel, predictions: Predictions, batch: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model.name, "version": model.version}
    if batch:
        body["predictions"] = predictions.labels
        if predictions.probabilities is not None:
            body["probabilities"] = predictions.probabilities
    else:
        body["prediction"] = predictions.labels[0]
        if predictions.probabilities is not None:
            body["probabilities"] = predictions.probabilities[0]
    return body


class FastJSONResponse(Response):
    """JSON by orjson: several times faster than the standard library for prediction bodies."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class MetricsResponse(Response):
    """Prometheus text format."""

    media_type = CONTENT_TYPE


class MetricsMiddleware:
    """Counts and times every request by route template (not by raw path)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)


def create_app(
    state: ServerState,
    on_shutdown: Callable[[], None] | None = None,
    access: Access | None = None,
    *,
    first_load_timeout: float = FIRST_LOAD_SECONDS,
) -> FastAPI:
    """The FastAPI app of a server; its lifespan runs the follower of `production`.

    `access` says which keys the routes need and which `Host` names it answers to; without
    it, every route is open to any Host.

    Its startup waits (at most `first_load_timeout` seconds) for the version in production to
    be loaded, verified and warmed up: the server takes no connection before its startup ends,
    so a worker that starts, or restarts beside others, answers no request with 503 "not
    ready" while it loads. Without a version in production, or with one that fails to load,
    it starts all the same and answers 503 saying why."""
    access = access or Access()

    def drain() -> None:
        state.draining = True

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        task = asyncio.create_task(state.follower.run(), name="refit-follow-production")
        try:
            await state.follower.first_look(first_load_timeout)
            yield {ON_DRAIN: drain}
        finally:
            state.draining = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await state.batcher.close()
            if on_shutdown is not None:
                on_shutdown()

    app = FastAPI(
        title=f"refit: {state.name}",
        version=__version__,
        description="Predictions from the version of the model that holds `production`.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.refit = state
    app.add_middleware(UnexpectedErrors, answer=_error_response)  # inside the metrics
    app.add_middleware(AccessMiddleware, access=access, routes=app.routes)  # metrics count 401s
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.add_middleware(RequestLog, state=state)  # request ids, the access log
    app.add_middleware(HeadMiddleware)  # outermost: the metrics see the route of the GET
    add_docs(app)

    @app.exception_handler(RefitError)
    async def refit_error(request: Request, exc: RefitError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = allow_head(exc.headers)
        return ErrorResponse(error_body(code, str(exc.detail)), exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()
        ]
        return JSONResponse(error_body("invalid_input", "invalid request", problems), 422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _error_response(exc)

    async def predict_one(name: str, request: Request) -> Response:
        content_type(request.headers.get("content-type"), (JSON_TYPE,), route_path(request))
        model = state.model(name)
        reader = state.reader(model)
        body = await read_body(request, state.max_body_bytes)
        columns = await off_the_loop(
            body, lambda b: reader.one_columns(parse_json(b, reader.max_record_separators))
        )
        predictions = await state.predict_columns(model, columns)
        return FastJSONResponse(answer(model, predictions, batch=False))

    async def predict_many(name: str, request: Request) -> Response:
        content_type(request.headers.get("content-type"), (JSON_TYPE,), route_path(request))
        model = state.model(name)
        reader = state.reader(model)
        body = await read_body(request, state.max_body_bytes)
        columns = await off_the_loop(
            body, lambda b: reader.many_columns(parse_json(b, reader.max_separators))
        )
        predictions = await state.predict_columns(model, columns)
        return FastJSONResponse(answer(model, predictions, batch=True))

    errors = refit_errors(400, 405, 413, 415, 422, 500, 503)
    named = {**errors, **refit_errors(404)}
    one: Responses = {200: _body("Prediction")}
    many: Responses = {200: _body("Predictions")}
    record = {"requestBody": {**_body("Record"), "required": True}}
    records = {"requestBody": {**_body("Records"), "required": True}}

    @app.post(
        "/v1/models/{name}/predict",
        summary="Predict one record",
        responses={**one, **named},
        openapi_extra=record,
        tags=["predict"],
    )
    async def predict_named(name: str, request: Request) -> Response:
        return await predict_one(name, request)

    @app.post(
        "/v1/models/{name}/predict/batch",
        summary="Predict a batch",
        responses={**many, **named},
        openapi_extra=records,
        tags=["predict"],
    )
    async def predict_named_batch(name: str, request: Request) -> Response:
        return await predict_many(name, request)

    @app.post(
        "/predict",
        summary="Predict one record (the project's model)",
        responses={**one, **errors},
        openapi_extra=record,
        tags=["predict"],
    )
    async def predict(request: Request) -> Response:
        return await predict_one(state.name, request)

    @app.post(
        "/predict/batch",
        summary="Predict a batch (the project's model)",
        responses={**many, **errors},
        openapi_extra=records,
        tags=["predict"],
    )
    async def predict_batch(request: Request) -> Response:
        return await predict_many(state.name, request)

    @app.get(
        "/v1/models",
        tags=["models"],
        summary="What this server serves",
        responses={200: json_response(ref("ModelList"), "The served model"), **refit_errors(405)},
    )
    async def list_models() -> Response:
        return JSONResponse({"models": [state.describe()]})

    @app.get(
        "/v1/models/{name}",
        tags=["models"],
        summary="One served model",
        responses={
            200: json_response(ref("ModelStatus"), "The model"),
            **refit_errors(404, 405),
        },
    )
    async def get_model(name: str) -> Response:
        if name != state.name:
            raise NotFoundError(f"no model {name!r} here; this server serves {state.name!r}")
        return JSONResponse(state.describe())

    @app.get(
        "/health/live",
        tags=["health"],
        summary="The process answers",
        responses={200: json_response(ref("Live"), "Live"), **refit_errors(405)},
    )
    async def live() -> Response:
        return JSONResponse({"status": "live"})

    @app.get(
        "/health/ready",
        tags=["health"],
        summary="A verified model is loaded",
        responses={
            200: json_response(ref("Ready"), "Ready, with the served version"),
            503: json_response(ref("NotReady"), "No verified model yet, or draining"),
            **refit_errors(405),
        },
    )
    async def ready() -> JSONResponse:
        model = state.follower.current
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if model is None:
            return JSONResponse({"status": "not ready", "model": state.name}, status_code=503)
        return JSONResponse({"status": "ready", "model": model.name, "version": model.version})

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics",
        response_class=MetricsResponse,
        responses={200: {"description": "Prometheus text format"}, **refit_errors(405)},
    )
    async def metrics() -> Response:
        return MetricsResponse(state.metrics.render())

    app.include_router(v2_router(state))
    app.include_router(invocations_router(state))

    def openapi() -> dict[str, Any]:
        model = state.follower.current
        if app.openapi_schema is not None and app.state.openapi_version == _version(model):
            return app.openapi_schema
        schema = openapi_document(app, model.signature if model else None)
        document_access(schema, access)
        app.openapi_schema, app.state.openapi_version = schema, _version(model)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _version(model: LoadedModel | None) -> int | None:
    return None if model is None else model.version


def _body(schema: str) -> dict[str, Any]:
    return json_response(ref(schema), schema)
