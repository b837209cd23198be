"""Bounded headers, URLs, connections and time: what one client may cost a real `refit serve`.

Each test talks to the server with a raw socket, as a careless or hostile client would: a header
or URL far past the limit is refused while it arrives (and never held in memory), a client that
stops halfway through its headers or body is answered 408 and closed, a connection that sends
nothing is closed, and more slow clients than a worker takes do not lock out a health probe.
The limits are set small (`REFIT_SERVE__*`) so that each test takes seconds.
"""

from __future__ import annotations

import contextlib
import json
import resource
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contract import Answer, contract_of
from serving import Server, make_project, serving

pytestmark = pytest.mark.slow

HUGE = 200 * 2**20  # what the probe sent: a 200 MB header was read whole and answered 200
CHUNK = 64 * 2**10
LIMITS = {
    "REFIT_SERVE__MAX_HEADER_BYTES": str(16 * 2**10),
    "REFIT_SERVE__MAX_URL_BYTES": str(4 * 2**10),
    "REFIT_SERVE__HEADER_TIMEOUT": "1",
    "REFIT_SERVE__BODY_TIMEOUT": "1",
    "REFIT_SERVE__KEEP_ALIVE_TIMEOUT": "1",
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("http-limits") / "project")


@pytest.fixture(scope="module")
def server(project: Path) -> Iterator[Server]:
    with serving(project, 1, env=LIMITS) as server:
        yield server


def connect(server: Server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_response(sock: socket.socket, within: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the response on `sock` (read until its Content-Length)."""
    sock.settimeout(within)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed without answering (read so far: {data!r})"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, "the server closed in the middle of its response body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def closed_within(sock: socket.socket, within: float) -> float:
    """Seconds until the server closes `sock` (anything it sends first is read and dropped)."""
    start = time.monotonic()
    sock.settimeout(within)
    with contextlib.suppress(ConnectionResetError):
        while sock.recv(65536):
            pass
    return time.monotonic() - start


def stream_until_answered(sock: socket.socket, start: bytes, filler: bytes) -> int:
    """Send `start`, then `filler` chunks (up to `HUGE` bytes) until the server answers, as a
    client that watches for an early response does: the bytes it sent."""
    sock.sendall(start)
    sent = len(start)
    while sent < HUGE:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            return sent
        try:
            sock.sendall(filler)
        except (BrokenPipeError, ConnectionResetError):
            return sent
        sent += len(filler)
    return sent


def assert_documented(
    server: Server, method: str, path: str, answer: tuple[int, dict[str, str], bytes]
) -> None:
    """The connection layer's answer is one the served OpenAPI document allows."""
    document = server.http.get("/openapi.json").raise_for_status().json()
    status, headers, body = answer
    contract_of(document).check(Answer(method, path, status, headers, body))


def error_of(body: bytes) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(body)["error"]
    assert set(error) == {"code", "message"}
    return error


def test_a_huge_header_is_refused_while_it_arrives(server: Server) -> None:
    before = server.rss_mb()
    with connect(server) as sock:
        start = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: "
        sent = stream_until_answered(sock, start, b"a" * CHUNK)
        status, headers, body = read_response(sock)
    grown = server.rss_mb() - before
    print(f"431 after {sent / 2**20:.1f} MB sent; worker RSS {before:.0f} MB, grew {grown:.1f} MB")
    assert status == 431
    assert headers["connection"] == "close"
    assert error_of(body)["code"] == "headers_too_large"
    assert_documented(server, "GET", "/health/live", (status, headers, body))
    assert "serve.max_header_bytes" in error_of(body)["message"]
    assert sent < HUGE / 4, "the server read far past the limit before it answered"
    assert grown < 20, "the worker held the header in memory"
    assert server.http.get("/health/live").status_code == 200


def test_a_huge_url_is_refused_while_it_arrives(server: Server) -> None:
    before = server.rss_mb()
    with connect(server) as sock:
        sent = stream_until_answered(sock, b"GET /health/live?", b"a" * CHUNK)
        status, headers, body = read_response(sock)
    grown = server.rss_mb() - before
    print(f"414 after {sent / 2**20:.1f} MB sent; worker RSS grew {grown:.1f} MB")
    assert status == 414
    assert headers["connection"] == "close"
    assert error_of(body)["code"] == "uri_too_long"
    assert_documented(server, "GET", "/health/live", (status, headers, body))
    assert sent < HUGE / 4
    assert grown < 20


def test_headers_up_to_the_limit_are_answered(server: Server) -> None:
    with connect(server) as sock:
        filler = b"a" * (8 * 2**10)  # well under 16 KiB, with a URL under 4 KiB
        sock.sendall(
            b"GET /health/live?"
            + b"q" * 3000
            + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: "
            + filler
            + b"\r\n\r\n"
        )
        status, _, body = read_response(sock)
    assert status == 200, body


def test_a_client_that_does_not_finish_its_headers_is_closed(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        start = time.monotonic()
        # A header every 0.2 s: always sending, never done, until the server answers.
        while not select.select([sock], [], [], 0.2)[0] and time.monotonic() - start < 5:
            sock.sendall(b"X-Slow: 1\r\n")
        elapsed = time.monotonic() - start
        status, headers, body = read_response(sock)
        closed = closed_within(sock, 5)
    print(f"408 after {elapsed:.2f} s (serve.header_timeout 1 s)")
    assert status == 408
    assert headers["connection"] == "close"
    assert error_of(body)["code"] == "timeout"
    assert "serve.header_timeout" in error_of(body)["message"]
    assert_documented(server, "GET", "/health/live", (status, headers, body))
    assert 0.9 < elapsed < 3
    assert closed < 3


def test_a_body_that_stalls_is_closed(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"mean radius": '
        )
        start = time.monotonic()
        status, headers, body = read_response(sock)
        elapsed = time.monotonic() - start
    print(f"408 after {elapsed:.2f} s of a stalled body (serve.body_timeout 1 s)")
    assert status == 408
    assert headers["connection"] == "close"
    assert "serve.body_timeout" in error_of(body)["message"]
    assert_documented(server, "POST", "/predict", (status, headers, body))
    assert 0.9 < elapsed < 3


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    with connect(server) as sock:
        closed = closed_within(sock, 5)
    print(f"a silent connection closed after {closed:.2f} s (serve.keep_alive_timeout 1 s)")
    assert 0.9 < closed < 3


def test_an_idle_keep_alive_connection_is_closed(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, headers, _ = read_response(sock)
        assert status == 200
        assert headers.get("connection") != "close"
        closed = closed_within(sock, 5)
    assert 0.9 < closed < 3


# --- more clients than a worker takes ------------------------------------------------------

FLOOD = 400
MAX_CONNECTIONS = 50
OPEN_FILES = 256  # the worker's limit: the flood alone would take every descriptor it has


@pytest.fixture
def crowded(project: Path) -> Iterator[Server]:
    """A server that takes 50 connections, with slow timeouts and a limit of 256 open files."""
    env = {
        "REFIT_SERVE__MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "REFIT_SERVE__HEADER_TIMEOUT": "120",
        "REFIT_SERVE__BODY_TIMEOUT": "120",
        "REFIT_SERVE__KEEP_ALIVE_TIMEOUT": "120",
    }
    with serving(project, 1, env=env) as server:
        resource.prlimit(server.process.pid, resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))
        yield server


@contextlib.contextmanager
def sockets(server: Server, count: int, start: bytes) -> Iterator[list[socket.socket]]:
    """`count` connections that each sent `start` and then nothing more."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = connect(server)
            opened.append(sock)
            with contextlib.suppress(OSError):  # an evicted one may be closed already
                sock.sendall(start)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def probe(server: Server) -> tuple[int, float]:
    """`/health/live` on a new connection: its status and seconds."""
    start = time.monotonic()
    with connect(server) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        status, _, _ = read_response(sock, within=5)
    return status, time.monotonic() - start


def test_slow_clients_past_the_limit_do_not_lock_out_health(crowded: Server) -> None:
    head = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    with sockets(crowded, FLOOD, head) as flood:
        probes = [probe(crowded) for _ in range(20)]
        open_ = sum(1 for sock in flood if not select.select([sock], [], [], 0)[0])
    seconds = sorted(t for _, t in probes)
    print(
        f"{FLOOD} slow-header clients, max_connections {MAX_CONNECTIONS}, {OPEN_FILES} open "
        f"files: {open_} still open, health answered in {seconds[len(seconds) // 2] * 1000:.1f}"
        f" ms (median), {seconds[-1] * 1000:.1f} ms (max)"
    )
    assert [status for status, _ in probes] == [200] * len(probes)
    assert open_ <= MAX_CONNECTIONS


def test_with_every_connection_busy_a_new_request_gets_503_and_a_probe_200(crowded: Server) -> None:
    stalled = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    with sockets(crowded, MAX_CONNECTIONS, stalled), connect(crowded) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, headers, body = read_response(sock)
    assert status == 503
    assert headers["connection"] == "close"
    assert headers["retry-after"] == "1"
    assert error_of(body)["code"] == "unavailable"
    assert_documented(crowded, "GET", "/v1/models", (status, headers, body))
    with sockets(crowded, MAX_CONNECTIONS, stalled):
        assert probe(crowded)[0] == 200  # a full worker is still alive
