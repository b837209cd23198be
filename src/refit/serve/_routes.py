"""Routes of one protocol, answering every error in that protocol's shape; and the hot routes,
dispatched without FastAPI's request handling.

    router = APIRouter(route_class=protocol_route(v2.error))      # documented, any method
    app.add_middleware(HotRoutes, routes=[CodecRoute("/v2/models/{name}/infer", infer, v2.error)])

Every route's errors (whatever its endpoint raises, FastAPI's validation errors, Starlette's
405) are answered by its protocol's codec from the one table of `refit.serve.failures`.

FastAPI's request handling (its router, dependency solving, body validation) costs a few times
what a plain Starlette route does, and refit's prediction endpoints read their raw request and
document their bodies by hand. So each is declared twice from the same endpoint: as a FastAPI
route, for the OpenAPI document (and any other method, answered 405), and as a `CodecRoute`
that `HotRoutes` matches and calls before the request reaches FastAPI.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from refit.serve.failures import UNEXPECTED, Failure, failure_of

log = logging.getLogger("refit.serve")

ErrorCodec = Callable[[Failure], Response]


def answer_error(error: ErrorCodec, exc: Exception, scope: Scope) -> Response:
    """`exc` answered by `error`; a bug (nothing expected it) is logged in full."""
    failure = failure_of(exc)
    if failure.code == UNEXPECTED:
        log.error("unexpected error answering %s %s", scope["method"], scope["path"], exc_info=exc)
    return error(failure)


def protocol_route(error: ErrorCodec) -> type[APIRoute]:
    """A FastAPI route class whose every error is answered by `error`."""

    class ProtocolRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except Exception as exc:
                    return answer_error(error, exc, request.scope)

            return handle

        async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await super().handle(scope, receive, send)
            except HTTPException as exc:  # a wrong method, raised before the handler runs
                await error(failure_of(exc))(scope, receive, send)

    return ProtocolRoute


class CodecRoute(Route):
    """A POST route calling `endpoint` with the path's parameters (all text) and the
    `request`, whose errors `error` answers."""

    def __init__(self, path: str, endpoint: Callable[..., Any], error: ErrorCodec) -> None:
        super().__init__(path, endpoint, methods=["POST"], include_in_schema=False)
        takes = set(inspect.signature(endpoint).parameters)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            arguments = {k: v for k, v in scope["path_params"].items() if k in takes}
            try:
                response = await endpoint(request=Request(scope, receive, send), **arguments)
            except Exception as exc:
                response = answer_error(error, exc, scope)
            await response(scope, receive, send)

        self.app = app

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self  # as FastAPI's routes do: the metrics count by template
        return match, child


class HotRoutes:
    """Calls the first of `routes` that fully matches a request (path and method); anything
    else goes on to the app (FastAPI's router, which answers a wrong method with 405)."""

    def __init__(self, app: ASGIApp, routes: Sequence[Route]) -> None:
        self.app = app
        self.routes = list(routes)
        # A path of no parameter is found by a lookup, not by trying each route's pattern.
        self.fixed = {route.path: route for route in self.routes if not route.param_convertors}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = self.fixed.get(get_route_path(scope))
            if route is not None:
                scope["path_params"] = {}
                scope["endpoint"] = route.endpoint
                scope["route"] = route
                await route.app(scope, receive, send)
                return
            for route in self.routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    await route.app(scope, receive, send)
                    return
        await self.app(scope, receive, send)
