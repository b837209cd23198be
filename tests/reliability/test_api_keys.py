"""Promise: API keys with scopes guard every route but the health probes.

A real `refit serve` takes its keys as hash lines from `REFIT_API_KEY_HASHES` (as a Kubernetes
or Compose secret gives them): a prediction without a key is 401 with `WWW-Authenticate`, with
a key of the wrong scope 403, with a key in the URL 401, and answered with a `predict` key sent
either way. Every response is checked against the served OpenAPI document (conftest.py), so the
401 and 403 are documented where they happen.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from refit.apikeys import KEY_HASHES_ENV, Scope, key_line, new_key
from serving import example_records, make_project, serving

pytestmark = pytest.mark.slow


def _raw_get(url: str, target: str) -> bytes:
    """The head of the answer to a GET sent on a plain socket (no client rewrites it)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        return sock.recv(65536).split(b"\r\n\r\n", 1)[0]


def test_keys_guard_the_routes_by_scope(tmp_path: Path) -> None:
    root = make_project(tmp_path / "project")
    predict, admin = new_key(), new_key()
    lines = f"{key_line(Scope.PREDICT, 'client', predict)}\n{key_line(Scope.ADMIN, 'ops', admin)}"
    env = {KEY_HASHES_ENV: lines, "REFIT_SERVE__METRICS_ACCESS": "admin"}
    record = example_records(1)[0]
    with serving(root, workers=1, env=env) as server:
        http = server.http
        assert http.get("/health/live").status_code == 200
        assert http.get("/health/live", params={"token": admin}).status_code == 200
        assert http.get("/health/ready").status_code == 200

        refused = http.post("/predict", json=record)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json()["error"]["code"] == "unauthorized"
        assert "Authorization: Bearer" in refused.json()["error"]["message"]

        bearer = {"Authorization": f"Bearer {predict}"}
        assert http.post("/predict", json=record, headers=bearer).status_code == 200
        header = {"X-API-Key": predict}
        assert http.post("/v2/models/breast-cancer/infer", json={"inputs": []}, headers=header)
        assert http.get("/v1/models", headers=header).status_code == 200
        assert http.get("/v1/models").status_code == 401

        wrong = http.post("/predict", json=record, headers={"X-API-Key": new_key()})
        assert wrong.status_code == 401
        assert predict not in wrong.text

        in_url = http.post("/predict", params={"api_key": predict}, json=record, headers=bearer)
        assert in_url.status_code == 401
        assert "never taken from the URL" in in_url.json()["error"]["message"]

        assert http.get("/metrics", headers=bearer).status_code == 403
        scraped = http.get("/metrics", headers={"Authorization": f"bearer {admin}"})
        assert scraped.status_code == 200
        assert 'status="401"' in scraped.text  # refusals are counted
        # The admin key holds predict.
        admin_answer = http.post("/predict", json=record, headers={"X-API-Key": admin})
        assert admin_answer.status_code == 200

        document = http.get("/openapi.json").json()
        assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}
        assert "security" in document["paths"]["/predict"]["post"]
        assert "security" not in document["paths"]["/health/live"]["get"]

        # An unknown path is the router's 404, not a 401 that would say it exists.
        assert b" 404 " in _raw_get(server.url, "/nothing/here")
    log = server.output()
    assert predict not in log and admin not in log, "a key reached the server's log"
