"""The server's logs: a request id on every request, an access log, JSON lines, no secrets.

`RequestLog` (a middleware) gives each request an id, the client's `X-Request-Id` when it is a
reasonable token, and echoes it in the response's `X-Request-Id`. While the request runs, every
log record carries that id and the route (`RequestContext`). With `--log-format json` each
record leaves as one JSON object per line (`JsonFormatter`); the access log is one record per
answered request on the `refit.access` logger, written only when that logger has a handler
(`refit.serve.main.log_config` decides). Both formats pass every line through `redact`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.logging import DefaultFormatter

if TYPE_CHECKING:
    from refit.serve.state import ServerState

REQUEST_ID_HEADER = "X-Request-Id"
MAX_REQUEST_ID = 128
REQUEST_ID_PATTERN = rf"^[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID}}}$"
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN.strip("^$"))
_HEADER = REQUEST_ID_HEADER.lower().encode("latin-1")
UNMATCHED = "unmatched"
"""The route of a request that matched no route (as in `/metrics`)."""

access = logging.getLogger("refit.access")

# What a log line must never hold: a URL's password, an API key or bearer token.
_SECRETS = (
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@"), r"\1***@"),
    (
        re.compile(
            r"(?i)\b((?:x-api-key|authorization|api[_-]?key)['\"]?\s*[:=]\s*['\"]?)"
            r"(?:(?:bearer|basic)\s+)?[^\s,;'\"]+"
        ),
        r"\1***",
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[^\s,;'\"]+"), r"\1 ***"),
)


def redact(text: str) -> str:
    """`text` with URL passwords, bearer tokens and API key values replaced by `***`."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def is_request_id(text: str) -> bool:
    """Whether `text` can be a request's id: 1 to 128 letters, digits and `._:-`."""
    return _REQUEST_ID.fullmatch(text) is not None


def request_id(given: str | None) -> str:
    """The client's id when it is a token of at most 128 letters, digits and `._:-`; else new."""
    if given is not None and is_request_id(given):
        return given
    return os.urandom(16).hex()  # 128 random bits, as a UUID4 has (less its fixed 6)


@dataclass
class _Request:
    id: str
    scope: Scope = field(repr=False)

    @property
    def route(self) -> str:
        return getattr(self.scope.get("route"), "path", UNMATCHED)


_current: ContextVar[_Request | None] = ContextVar("refit_request", default=None)


def current_request_id() -> str:
    """The id of the request being answered (`RequestLog` gives it); a new one outside any."""
    request = _current.get()
    return request.id if request is not None else request_id(None)


class RequestLog:
    """Gives each request its id (kept in `X-Request-Id` of the answer) and logs the answer on
    `refit.access`: route template, status, duration, and the served model and version."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == _HEADER), None)
        request = _Request(request_id(None if given is None else given.decode("latin-1")), scope)
        start = time.perf_counter()
        status = 500
        header = (_HEADER, request.id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        token = _current.set(request)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)
            if access.hasHandlers():
                duration = round((time.perf_counter() - start) * 1000, 3)
                route = request.route
                # The model the request named, if this server serves it; else the default.
                name = scope.get("path_params", {}).get("name")
                model = self.state.models.get(name) if name is not None else None
                model = model or self.state.default
                served = model.follower.current
                method = scope["method"]
                access.info(
                    "%s %s %d",
                    method,
                    route,
                    status,
                    extra={
                        "request_id": request.id,
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": duration,
                        "model": model.name,
                        "version": None if served is None else served.version,
                    },
                )


class RequestContext(logging.Filter):
    """Adds the id and route of the request being answered, if any, to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = _current.get()
        if request is not None and not hasattr(record, "request_id"):
            record.request_id = request.id
            record.route = request.route
        return True


_FIELDS = ("request_id", "method", "route", "status", "duration_ms", "model", "version")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, event (the message),
    the request's fields (null outside a request), and the traceback of an exception."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": redact(record.getMessage().rstrip()),
        }
        for name in _FIELDS:
            line[name] = getattr(record, name, None)
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, default=str)


class TextFormatter(DefaultFormatter):
    """uvicorn's text lines, redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
