"""An unexpected error is answered 500 on a connection that stays open.

Starlette answers an exception that no handler of the router took with the app's handler for
`Exception`, then raises it again so that the server logs it; uvicorn, seeing an exception
after a response began, closes the connection. A keep-alive client whose next request was
already on its way then has it reset, although that request had nothing to do with the error.
This middleware answers such an error itself, logs it once, and lets the connection live.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("refit.serve")


class UnexpectedErrors:
    """Answers an exception raised before the response began with `answer(exception)`."""

    def __init__(self, app: ASGIApp, answer: Callable[[Exception], Response]) -> None:
        self.app = app
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:  # too late for an answer: the server must end the connection
                raise
            log.exception("unexpected error answering %s %s", scope["method"], scope["path"])
            await self.answer(exc)(scope, receive, send)
