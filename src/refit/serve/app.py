"""The inference server: a FastAPI app built from already-open services.

    app = create_app(ServerState.open(services))     # nothing happens at import time

Routes are thin: each protocol's (refit's own here, Open Inference V2 in `v2`, MLflow's in
`invocations`) hands its codec (`refit.serve.codecs`) to the one inference path,
`ServerState.read_and_predict`, and every error is answered by that codec from the one table
of `refit.serve.failures`. refit's own errors leave as `{"error": {"code", "message",
"problems"?}}`, and so does whatever no route answers (an unknown path, a middleware's error).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from refit import __version__
from refit.deploy.pod import FIRST_LOAD_SECONDS
from refit.predictions import Columns
from refit.serve._head import HeadMiddleware
from refit.serve._json import parse_json
from refit.serve._logging import RequestLog, current_request_id
from refit.serve._media import JSON_TYPE, content_type, route_path
from refit.serve._routes import CodecRoute, HotRoutes, protocol_route
from refit.serve._server import ON_DRAIN
from refit.serve._unexpected import UnexpectedErrors
from refit.serve.auth import Access, AccessMiddleware, document_access
from refit.serve.codecs import JSONBody, refit
from refit.serve.dashboard import Schedules, add_dashboard
from refit.serve.docs import add_docs, openapi_document
from refit.serve.failures import failure_of
from refit.serve.feedback import feedback_router
from refit.serve.invocations import invocations_router
from refit.serve.metrics import CONTENT_TYPE, ServerMetrics
from refit.serve.predictor import LoadedModel
from refit.serve.records import RecordReader
from refit.serve.schemas import Responses, json_response, ref, refit_errors
from refit.serve.state import ServerState
from refit.serve.v2 import v2_router


class MetricsResponse(Response):
    """Prometheus text format."""

    media_type = CONTENT_TYPE


class MetricsMiddleware:
    """Counts and times every request by route template (not by raw path)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics
        # Route templates and status codes are few (an unknown path counts as "unmatched").
        self._counters: dict[tuple[str, int], Any] = {}
        self._timers: dict[str, Any] = {}

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
            self._counter(path, status).inc()
            self._timer(path).observe(time.perf_counter() - start)

    def _counter(self, path: str, status: int) -> Any:
        # A child per (route, status), found once: labels() per request costs microseconds.
        child = self._counters.get((path, status))
        if child is None:
            child = self._counters[path, status] = self.metrics.requests.labels(path, str(status))
        return child

    def _timer(self, path: str) -> Any:
        child = self._timers.get(path)
        if child is None:
            child = self._timers[path] = self.metrics.latency.labels(path)
        return child


def create_app(
    state: ServerState,
    on_shutdown: Callable[[], None] | None = None,
    access: Access | None = None,
    *,
    first_load_timeout: float = FIRST_LOAD_SECONDS,
    schedules: Schedules | None = None,
) -> ServerApp:
    """The ASGI app of a server (see `ServerApp`); its lifespan runs the follower of each
    model's `production`.

    `access` says which keys the routes need and which `Host` names it answers to; without
    it, every route is open to any Host.

    Its startup waits (at most `first_load_timeout` seconds) for the version in production to
    be loaded, verified and warmed up: the server takes no connection before its startup ends,
    so a worker that starts, or restarts beside others, answers no request with 503 "not
    ready" while it loads. Without a version in production, or with one that fails to load,
    it starts all the same and answers 503 saying why. Its dashboard (`/ui`) shows each
    model's `schedules`."""
    access = access or Access()

    def drain() -> None:
        state.draining = True

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        tasks = [
            asyncio.create_task(model.follower.run(), name=f"refit-follow-{model.name}")
            for model in state.models.values()
        ]
        if state.writer is not None:
            state.writer.start()
        try:
            await asyncio.gather(
                *(model.follower.first_look(first_load_timeout) for model in state.models.values())
            )
            yield {ON_DRAIN: drain}
        finally:
            state.draining = True
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for model in state.models.values():
                await model.batcher.close()
            if state.writer is not None:  # every request has ended: write what they logged
                await asyncio.to_thread(state.writer.close)
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
    app.router.route_class = protocol_route(refit.error)
    add_docs(app)
    add_dashboard(app, state, schedules)

    async def answer(request: Request, exc: Exception) -> Response:
        return refit.error(failure_of(exc))  # async: Starlette runs a plain function in a thread

    # What no route answers itself: a path no route serves, an error in a middleware.
    for kind in (HTTPException, RequestValidationError, Exception):
        app.add_exception_handler(kind, answer)

    async def predict_one(name: str, request: Request) -> Response:
        content_type(request.headers.get("content-type"), (JSON_TYPE,), route_path(request))

        def read(body: bytes, reader: RecordReader, model: LoadedModel) -> tuple[Columns, None]:
            return reader.one_columns(parse_json(body, reader.max_record_separators)), None

        model, _, predictions = await state.read_and_predict(request, name, read)
        return refit.answer(
            model.name, model.version, current_request_id(), predictions, batch=False
        )

    async def predict_many(name: str, request: Request) -> Response:
        content_type(request.headers.get("content-type"), (JSON_TYPE,), route_path(request))

        def read(body: bytes, reader: RecordReader, model: LoadedModel) -> tuple[Columns, None]:
            return reader.many_columns(parse_json(body, reader.max_separators)), None

        model, _, predictions = await state.read_and_predict(request, name, read)
        return refit.answer(
            model.name, model.version, current_request_id(), predictions, batch=True
        )

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
        return JSONBody({"models": [model.describe() for model in state.models.values()]})

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
        return JSONBody(state.served(name).describe())

    @app.get(
        "/health/live",
        tags=["health"],
        summary="The process answers",
        responses={200: json_response(ref("Live"), "Live"), **refit_errors(405)},
    )
    async def live() -> Response:
        return JSONBody({"status": "live"})

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
    async def ready() -> Response:
        model = state.follower.current
        if state.draining:
            return JSONBody({"status": "draining"}, status_code=503)
        if model is None:
            return JSONBody({"status": "not ready", "model": state.name}, status_code=503)
        return JSONBody({"status": "ready", "model": model.name, "version": model.version})

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics",
        response_class=MetricsResponse,
        responses={200: {"description": "Prometheus text format"}, **refit_errors(405)},
    )
    async def metrics() -> Response:
        return MetricsResponse(state.metrics.render())

    feedback_routes, feedback_hot = feedback_router(state)
    v2_routes, v2_hot = v2_router(state)
    mlflow_routes, mlflow_hot = invocations_router(state)
    app.include_router(feedback_routes)
    app.include_router(v2_routes)
    app.include_router(mlflow_routes)
    hot = [
        CodecRoute("/v1/models/{name}/predict", predict_named, refit.error),
        CodecRoute("/v1/models/{name}/predict/batch", predict_named_batch, refit.error),
        CodecRoute("/predict", predict, refit.error),
        CodecRoute("/predict/batch", predict_batch, refit.error),
        *feedback_hot,
        *v2_hot,
        *mlflow_hot,
    ]
    # In front of FastAPI (its own middleware and router cost several times a plain
    # route's): the hot routes, then whatever they do not take goes on to FastAPI.
    stack: ASGIApp = HotRoutes(app, routes=hot)
    stack = UnexpectedErrors(stack, answer=lambda exc: refit.error(failure_of(exc)))
    stack = AccessMiddleware(stack, access=access, routes=app.routes)  # metrics count 401s
    stack = MetricsMiddleware(stack, metrics=state.metrics)
    stack = RequestLog(stack, state=state)  # request ids, the access log
    stack = HeadMiddleware(stack)  # outermost: the metrics see the route of the GET

    def openapi() -> dict[str, Any]:
        served = [model.follower.current for model in state.models.values()]
        versions = [_version(model) for model in served]
        if app.openapi_schema is not None and app.state.openapi_version == versions:
            return app.openapi_schema
        signatures = [model.signature if model else None for model in served]
        withholds = [model is not None and model.withholds for model in served]
        schema = openapi_document(app, signatures, state.default.max_batch_rows, withholds)
        document_access(schema, access)
        app.openapi_schema, app.state.openapi_version = schema, versions
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return ServerApp(app, stack)


class ServerApp:
    """A server's ASGI app: refit's middleware and hot routes (`stack`) in front of the FastAPI
    app (`api`) that runs the lifespan, documents every route and answers the others. Reads
    of anything else (`routes`, `openapi()`, `state`, ...) are the FastAPI app's."""

    def __init__(self, api: FastAPI, stack: ASGIApp) -> None:
        self.api = api
        self.stack = stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["app"] = self.api  # as Starlette sets it, for what reads `request.app`
            await self.stack(scope, receive, send)
        else:
            await self.api(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.api, name)


def _version(model: LoadedModel | None) -> int | None:
    return None if model is None else model.version


def _body(schema: str) -> dict[str, Any]:
    return json_response(ref(schema), schema)
