"""`refit serve --log-format json`: every line on stderr is one JSON object with the request's
fields, the request id round-trips, and no secret (an API key, a bearer token, the registry's
password) is ever written.

The server is a real `refit serve` on 127.0.0.1 whose registry is a real PostgreSQL reached
over TCP with a password, so the URL it logs at start holds a real secret.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from servers import PostgresServer
from serving import NAME, example_records, make_project, serving

pytestmark = pytest.mark.slow

FIELDS = {"time", "level", "logger", "event", "request_id", "route", "status", "duration_ms"}
FIELDS |= {"model", "version"}
API_KEY = "rk_live_7f3c9a1e5b2d4f60"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.sig"
NEW_ID = re.compile(r"^[0-9a-f]{32}$")


def json_lines(log: Path) -> list[dict[str, Any]]:
    """Every line the server wrote (stdout and stderr), each of which must be a JSON object."""
    lines = []
    for number, text in enumerate(log.read_text().splitlines(), 1):
        try:
            line = json.loads(text)
        except ValueError:
            pytest.fail(f"line {number} is not JSON: {text!r}")
        assert isinstance(line, dict), f"line {number} is not an object: {text!r}"
        assert set(line) >= FIELDS, f"line {number} lacks {FIELDS - set(line)}: {text!r}"
        assert line["time"].endswith("Z"), line
        datetime.fromisoformat(line["time"])
        assert line["level"] in {"debug", "info", "warning", "error", "critical"}, line
        lines.append(line)
    return lines


def test_json_logs_carry_each_request_and_no_secret(
    tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = postgres_server.create_database()
    url = postgres_server.tcp_url(database)
    monkeypatch.setenv("REFIT_STORAGE__METADATA_URL", url)
    root = make_project(tmp_path / "p")
    record = example_records(1)[0]
    secrets = {"authorization": f"Bearer {TOKEN}", "x-api-key": API_KEY}
    env = {"REFIT_STORAGE__METADATA_URL": url}
    with serving(root, workers=1, env=env, options=("--log-format", "json")) as server:
        server.converge(1, workers=1)
        http = server.http
        kept = http.post(
            "/predict", json=record, headers={**secrets, "x-request-id": "trace-42.a:b_c"}
        )
        refused = http.post(
            f"/v1/models/{NAME}/predict",
            json={"mean_radius": "big"},
            headers={**secrets, "x-request-id": "not a token"},
        )
        too_long = http.get("/health/live", headers={"x-request-id": "a" * 129})
        unmatched = http.get(f"/keys/{API_KEY}", headers=secrets)
        head = http.head("/health/ready", headers={"x-request-id": "probe-1"})
    postgres_server.drop_database(database)

    assert (kept.status_code, kept.headers["x-request-id"]) == (200, "trace-42.a:b_c")
    assert refused.status_code == 422
    assert unmatched.status_code == 404
    assert head.headers["x-request-id"] == "probe-1"
    for response in (refused, too_long, unmatched):
        assert NEW_ID.match(response.headers["x-request-id"]), response.headers
    ids = [r.headers["x-request-id"] for r in (kept, refused, too_long, unmatched, head)]
    assert len(set(ids)) == len(ids)

    text = server.log.read_text()
    for secret in (API_KEY, TOKEN, postgres_server.password):
        assert secret not in text, f"a secret is in the log:\n{text[-3000:]}"
    lines = json_lines(server.log)
    access = {line["request_id"]: line for line in lines if line["logger"] == "refit.access"}
    expected = {
        "trace-42.a:b_c": ("POST", "/predict", 200),
        ids[1]: ("POST", "/v1/models/{name}/predict", 422),
        ids[2]: ("GET", "/health/live", 200),
        ids[3]: ("GET", "unmatched", 404),
        "probe-1": ("GET", "/health/ready", 200),  # HEAD runs as the GET
    }
    for request, (method, route, status) in expected.items():
        line = access[request]
        assert (line["method"], line["route"], line["status"]) == (method, route, status), line
        assert (line["model"], line["version"]) == (NAME, 1), line
        assert isinstance(line["duration_ms"], float | int), line
        assert 0 <= line["duration_ms"] < 60_000, line
    started = [line["event"] for line in lines if "serves" in line["event"]]
    assert started, "no line says where the worker serves from"
    assert f":***@127.0.0.1:{postgres_server.port}/{database}" in started[0]
    print(
        f"\n{len(lines)} JSON lines, {len(access)} access lines; "
        f"e.g. {json.dumps(access['trace-42.a:b_c'])}"
    )


def test_no_access_log_leaves_the_request_id(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    options = ("--log-format", "json", "--no-access-log")
    with serving(root, workers=1, options=options) as server:
        server.converge(1, workers=1)
        answered = server.http.get("/health/live", headers={"x-request-id": "quiet-1"})
    assert answered.headers["x-request-id"] == "quiet-1"
    lines = json_lines(server.log)
    assert lines, "the server logged nothing"
    assert [line for line in lines if line["logger"] == "refit.access"] == []
    assert [line for line in lines if line["request_id"] is not None] == []
