"""HEAD is answered wherever GET is: as the GET, without its body.

FastAPI's routes take only the methods they declare, so the app is wrapped in `HeadMiddleware`,
and a 405's `Allow` names HEAD beside GET (`allow_head`).
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadMiddleware:
    """Runs a HEAD request as a GET and sends its status and headers without the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_headers)


def allow_head(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """The headers of a 405, with HEAD in `Allow` when GET is."""
    if headers is None:
        return None
    allowed = [method.strip() for method in headers.get("Allow", "").split(",") if method]
    if "GET" in allowed and "HEAD" not in allowed:
        return {**headers, "Allow": ", ".join([*allowed, "HEAD"])}
    return dict(headers)
