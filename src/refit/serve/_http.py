"""The connection layer: what one client may cost a worker before the app sees its request.

uvicorn's httptools protocol reads a request line and headers of any size, waits forever for a
client that never finishes them or pauses in its body, keeps a connection that never sends a
first request, and takes every connection the kernel hands it. `BoundedHttpProtocol` adds the
bounds, each from a `serve.*` setting:

- the request line and headers together: `max_header_bytes` (431), the URL: `max_url_bytes`
  (414), both counted as the bytes arrive, so no more than twice the limit is ever held;
- the headers must be complete `header_timeout` seconds after the request's first byte, and a
  body may pause at most `body_timeout` seconds (408, or a close once a response has begun);
- a connection without a request in progress is closed after `keep_alive_timeout` seconds,
  also before its first request;
- a worker keeps at most `max_connections` open: at the limit a new connection closes the one
  idle longest (no request in progress: waiting for its next request or still sending its
  headers), so a flood of slow clients cannot lock out a health probe, and only when every
  connection has a request in progress is the new one's request answered 503 and the
  connection closed (a health probe is still answered: a full worker is alive).

Health probes never wait behind predictions (measured before: under overload a probe waited
for the event loop to get through every request read before it, 0.1-4 s). So a worker runs at
most `max_running_requests` requests at once; the others wait unread in their connections,
which costs the event loop nothing, and start in the order they came, while a probe of
`/health/live` or `/health/ready` starts at once: the loop reaches it within a few
milliseconds however many requests wait.

`uvicorn_options(settings)` gives uvicorn the protocol and its settings.
"""

from __future__ import annotations

import asyncio
import functools
import json
import weakref
from collections import OrderedDict, deque
from typing import Any

import httptools
from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from refit.deploy.pod import LIVE_PATH, READY_PATH
from refit.spec import ServeSpec

_PROBES = frozenset({LIVE_PATH, READY_PATH})
_PROBE_URLS = frozenset(path.encode("ascii") for path in _PROBES)
_CLOSE = (b"connection", b"close")

LINGER_SECONDS = 1.0
"""How long a refused connection is still read, and dropped, after its answer."""


def uvicorn_options(settings: ServeSpec) -> dict[str, Any]:
    """The keyword arguments of uvicorn's `Config` that bound every connection by `settings`."""
    protocol = functools.partial(BoundedHttpProtocol, limits=settings)
    return {"http": protocol, "timeout_keep_alive": settings.keep_alive_timeout}


class _Connections:
    """The connections one server (one worker process) has admitted; the idle ones in the order
    they became idle, so the first is the one idle longest."""

    def __init__(self) -> None:
        self.open: set[BoundedHttpProtocol] = set()
        self.idle: OrderedDict[BoundedHttpProtocol, None] = OrderedDict()
        self.running = 0
        self.queued: deque[_Request] = deque()

    def admit(self, connection: BoundedHttpProtocol, limit: int) -> bool:
        if len(self.open) >= limit:
            if not self.idle:
                return False
            oldest, _ = self.idle.popitem(last=False)
            self.open.discard(oldest)
            oldest.evict()
        self.open.add(connection)
        self.idle[connection] = None
        return True

    def busy(self, connection: BoundedHttpProtocol) -> None:
        self.idle.pop(connection, None)

    def waiting(self, connection: BoundedHttpProtocol) -> None:
        if connection in self.open:
            self.idle[connection] = None
            self.idle.move_to_end(connection)

    def release(self, connection: BoundedHttpProtocol) -> None:
        self.open.discard(connection)
        self.idle.pop(connection, None)

    def finished(self) -> None:
        """A request ended: the one waiting longest (whose client is still there) starts."""
        self.running -= 1
        while self.queued:
            connection, cycle, app = self.queued.popleft()
            if not connection.transport.is_closing() and not cycle.disconnected:
                connection.run(cycle, app)
                return


_Request = tuple["BoundedHttpProtocol", RequestResponseCycle, ASGI3Application]


_SERVERS: weakref.WeakKeyDictionary[ServerState, _Connections] = weakref.WeakKeyDictionary()


def _connections_of(server_state: ServerState) -> _Connections:
    connections = _SERVERS.get(server_state)
    if connections is None:
        connections = _SERVERS[server_state] = _Connections()
    return connections


class _Refusal(Exception):
    """A request refused by the connection layer: its status, and refit's error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with every read bounded in size and time (module docstring)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ServeSpec,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.admitted = _connections_of(server_state)
        self.refused = False
        self.stopped = False  # refused or timed out: whatever else arrives is not read
        self.head_left = limits.max_header_bytes
        self.heads = 0  # headers completed on this connection
        self.head_began: float | None = None  # a request's first byte, until its headers end
        self.body_seen: float | None = None  # the last read of a body, until it ends
        self.refusal: _Refusal | None = None
        self.deadline: asyncio.TimerHandle | None = None

    # --- the connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.admitted.admit(self, self.limits.max_connections):
            self.refused = True
        # uvicorn waits for a next request only after a response; a first one is waited for too.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.admitted.release(self)
        self._cancel_deadline()
        super().connection_lost(exc)

    def evict(self) -> None:
        """Close this idle connection to make room for a new one."""
        self.stopped = True
        self._cancel_deadline()
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.stopped:
            return
        self._unset_keepalive_if_required()
        size = self.limits.max_header_bytes
        while data and not self.stopped:
            reading_head = self.body_seen is None
            if reading_head:
                if self.head_left == 0:
                    self._refuse(self._too_large_head())
                    return
                size = self.head_left
            piece, data = data[:size], data[size:]
            heads = self.heads
            if not self._feed(piece):
                return
            if reading_head and self.heads == heads:
                self.head_left -= len(piece)
        self._watch()

    def _feed(self, piece: bytes) -> bool:
        try:
            self.parser.feed_data(piece)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        except httptools.HttpParserError:
            if self.refusal is not None:
                self._refuse(self.refusal)
            else:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
            self.stopped = True
            return False
        return True

    # --- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_began = self.loop.time()

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.limits.max_url_bytes:
            self.refusal = _Refusal(
                414,
                "uri_too_long",
                f"the request URL is longer than {self.limits.max_url_bytes} bytes "
                "(serve.max_url_bytes); send the data in a request body",
            )
            raise self.refusal
        super().on_url(url)

    def on_headers_complete(self) -> None:
        self.heads += 1
        self.head_left = self.limits.max_header_bytes
        self.head_began = None
        self.body_seen = self.loop.time()
        self.admitted.busy(self)
        if self.refused and self.url not in _PROBE_URLS:  # a full worker is still alive
            count = len(self.admitted.open)
            self.refusal = _Refusal(
                503,
                "unavailable",
                f"this worker has {count} connections open, each with a request in progress; "
                "retry shortly",
            )
            raise self.refusal
        super().on_headers_complete()
        if self.refused:
            self.cycle.keep_alive = False  # over the limit: one answer, then closed

    def on_body(self, body: bytes) -> None:
        self.body_seen = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.body_seen = None
        super().on_message_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        if cycle.scope["path"] in _PROBES:
            # Probes cost microseconds: they never wait behind predictions.
            super()._start_asgi_task(cycle, app)
        elif self.admitted.running >= self.limits.max_running_requests:
            # Its bytes stay in the kernel, not as work queued on the event loop.
            self.flow.pause_reading()
            self.admitted.queued.append((self, cycle, app))
        else:
            self.run(cycle, app)

    def run(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        """Start a request, counted among the running ones until the app returns."""
        self.admitted.running += 1
        admitted = self.admitted

        async def counted(
            scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
        ) -> None:
            try:
                await app(scope, receive, send)
            finally:
                admitted.finished()

        super()._start_asgi_task(cycle, counted)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self.admitted.waiting(self)

    # --- deadlines --------------------------------------------------------------------------

    def _watch(self) -> None:
        """Arm the deadline of the headers or body being read, if it is not armed."""
        if self.deadline is None and (self.head_began is not None or self.body_seen is not None):
            reading_body = self.body_seen is not None
            delay = self.limits.body_timeout if reading_body else self.limits.header_timeout
            self.deadline = self.loop.call_later(delay, self._check_deadline)

    def _check_deadline(self) -> None:
        self.deadline = None
        if self.stopped or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.head_began is not None:
            left = self.head_began + self.limits.header_timeout - now
            what = f"the request headers were not complete within {self.limits.header_timeout:g} s"
            setting = "serve.header_timeout"
        elif self.body_seen is not None:
            if self.flow.read_paused:  # the app has not read what came: not the client's pause
                self.body_seen = now
            left = self.body_seen + self.limits.body_timeout - now
            what = f"the request body paused for more than {self.limits.body_timeout:g} s"
            setting = "serve.body_timeout"
        else:
            return
        if left > 0:
            self.deadline = self.loop.call_later(left, self._check_deadline)
            return
        self._refuse(_Refusal(408, "timeout", f"{what} ({setting})"))

    def _cancel_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    # --- refusing ---------------------------------------------------------------------------

    def _too_large_head(self) -> _Refusal:
        limit = self.limits.max_header_bytes
        return _Refusal(
            431,
            "headers_too_large",
            f"the request line and headers are larger than {limit} bytes (serve.max_header_bytes)",
        )

    def _refuse(self, refusal: _Refusal) -> None:
        """Answer `refusal` and close, unless a response is under way: then close after it."""
        self.stopped = True
        self._cancel_deadline()
        cycle = self.cycle
        reading_body = self.body_seen is not None
        if cycle is not None and not cycle.response_complete:
            if not reading_body:
                # An earlier request is still being answered: let it finish, read nothing more.
                cycle.keep_alive = False
                self.flow.pause_reading()
                return
            if cycle.response_started:
                self.transport.close()
                return
            cycle.disconnected = True  # whatever the app still sends is dropped
            cycle.message_event.set()
        self._write_error(refusal)
        self._close_lingering()

    def _close_lingering(self) -> None:
        """Close after the client had time to read the answer (`LINGER_SECONDS`).

        The client may still be sending: a socket closed with unread data is reset, and a reset
        makes the client's kernel drop the answer it has not read yet. So the write side is
        closed first, and what still arrives is read and dropped until the client closes or
        the time is up.
        """
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _write_error(self, refusal: _Refusal) -> None:
        error = {"code": refusal.code, "message": refusal.message}
        body = json.dumps({"error": error}, separators=(",", ":")).encode("ascii")
        content = [STATUS_LINE[refusal.status]]
        headers = self.server_state.default_headers
        for name, value in headers:
            content.extend([name, b": ", value, b"\r\n"])
        if _CLOSE not in headers:  # a draining server sends it on every answer already
            content.append(b"connection: close\r\n")
        if refusal.status == 503:
            content.append(b"retry-after: 1\r\n")  # as every 503 of refit's says
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        if self.access_log:
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
            self.access_logger.info('%s - "-" %d (%s)', client, refusal.status, refusal.code)
