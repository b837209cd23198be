"""Promise: a server on loopback answers only to loopback names (no DNS rebinding).

A web page of another site can make a browser send requests to a name that its DNS turns into
127.0.0.1; the request then carries that site's name as `Host`. A real `refit serve` on
127.0.0.1 is asked on plain sockets with hand-made `Host` headers: the loopback names, with
any port, are answered; any other name gets 421 in refit's error shape; `serve.allowed_hosts`
adds a name.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from serving import make_project, serving

pytestmark = pytest.mark.slow


def _get(url: str, host: str, path: str = "/health/live") -> tuple[int, bytes]:
    address, port = url.removeprefix("http://").split(":")
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    with socket.create_connection((address, int(port)), timeout=10) as sock:
        sock.sendall(request.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_only_loopback_names_are_answered_on_loopback(tmp_path: Path) -> None:
    root = make_project(tmp_path / "project")
    env = {"REFIT_SERVE__ALLOWED_HOSTS": '["127.0.0.1", "localhost", "::1", "refit.test"]'}
    with serving(root, workers=1, env=env) as server:
        port = server.url.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", "localhost", f"[::1]:{port}", f"refit.test:{port}"):
            assert _get(server.url, host)[0] == 200, host
        for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.nip.io"):
            status, body = _get(server.url, host, "/v1/models")
            assert status == 421, host
            assert json.loads(body)["error"]["code"] == "misdirected_request"


def test_the_default_loopback_names(tmp_path: Path) -> None:
    root = make_project(tmp_path / "project")
    with serving(root, workers=1) as server:
        assert _get(server.url, "localhost:1")[0] == 200
        assert _get(server.url, "rebound.example")[0] == 421
