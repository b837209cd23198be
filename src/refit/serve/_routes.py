"""Routes of a standard protocol, whose errors leave in that protocol's own shape.

    router = APIRouter(route_class=protocol_route(v2_error))

refit's own routes answer errors through the app's exception handlers; a standard protocol
(Open Inference V2, MLflow's `/invocations`) has its own error body, so its routes turn every
exception, FastAPI's validation errors and Starlette's 405 included, into that body themselves.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from refit.serve._head import allow_head


class AsciiJSONResponse(JSONResponse):
    """A JSON body escaped to ASCII: it may echo any string a client sent (an id, a name), and
    JSON lets a client send lone surrogates, which UTF-8 cannot encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def protocol_route(answer: Callable[[Exception], Response]) -> type[APIRoute]:
    """A route class whose every error is answered by `answer(exception)`."""

    class ProtocolRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except Exception as exc:
                    return answer(exc)

            return handle

        async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await super().handle(scope, receive, send)
            except HTTPException as exc:  # a wrong method, raised before the handler runs
                allowed = HTTPException(exc.status_code, exc.detail, allow_head(exc.headers))
                await answer(allowed)(scope, receive, send)

    return ProtocolRoute
