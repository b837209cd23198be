"""The server's request ids, access log and JSON lines, in process (a real server's whole log is
checked in tests/reliability/test_structured_logs.py)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from refit.serve._logging import JsonFormatter, RequestContext, redact, request_id
from refit.serve.app import create_app
from refit.serve.state import ServerState
from refit.services import Services

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("given", ["abc", "trace-1.2:3_4", "a" * 128])
def test_a_reasonable_client_id_is_kept(given: str) -> None:
    assert request_id(given) == given


@pytest.mark.parametrize("given", [None, "", "a b", "a" * 129, "é", "a\nb", "a/b", "<script>"])
def test_any_other_gets_a_new_id(given: str | None) -> None:
    made = request_id(given)
    assert made != given and len(made) == 32 and int(made, 16) >= 0
    assert request_id(given) != made


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("cannot reach postgresql+psycopg://refit:hunter2@db:5432/refit", "hunter2"),
        ("s3://key:very-secret@bucket/prefix", "very-secret"),
        ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi"),
        ("headers {'authorization': 'Basic dXNlcjpwYXNz'}", "dXNlcjpwYXNz"),
        ("X-API-Key: rk_live_123456", "rk_live_123456"),
        ('{"api_key": "rk_live_abcdef"}', "rk_live_abcdef"),
        ("token=Bearer abc.def", "abc.def"),
    ],
)
def test_secrets_are_redacted(text: str, secret: str) -> None:
    redacted = redact(text)
    assert secret not in redacted and "***" in redacted, redacted


def test_text_without_secrets_is_left_as_it_is() -> None:
    text = "worker 12 serves churn@production from sqlite:////p/.refit/refit.db (s3://b/p)"
    assert redact(text) == text


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What refit's loggers write (the access log's included), as `--log-format json` does."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestContext())
    logger = logging.getLogger("refit")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    state = ServerState.open(services)
    assert await state.follower.check()
    transport = httpx.ASGITransport(create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://refit") as opened:
        yield opened


async def test_each_answer_has_its_id_and_one_access_line(
    client: httpx.AsyncClient, log_lines: io.StringIO
) -> None:
    secret = {"authorization": "Bearer top-secret-token"}
    kept = await client.get("/v1/models/breast-cancer", headers={"x-request-id": "r-1", **secret})
    missing = await client.get("/v1/models/other", headers={"x-request-id": "bad id"})
    assert kept.headers["x-request-id"] == "r-1"
    assert missing.status_code == 404
    assert len(missing.headers["x-request-id"]) == 32
    text = log_lines.getvalue()
    assert "top-secret-token" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(line["request_id"], line["route"], line["status"]) for line in lines] == [
        ("r-1", "/v1/models/{name}", 200),
        (missing.headers["x-request-id"], "/v1/models/{name}", 404),
    ]
    assert {(line["model"], line["version"], line["method"]) for line in lines} == {
        ("breast-cancer", 1, "GET")
    }


async def test_a_record_logged_while_answering_carries_the_request_id(
    client: httpx.AsyncClient, log_lines: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(model: object) -> None:
        raise RuntimeError("no reader today")

    state = client._transport.app.state.refit  # type: ignore[attr-defined]
    monkeypatch.setattr(state, "reader", broken)
    failed = await client.post("/predict", json={}, headers={"x-request-id": "r-500"})
    assert failed.status_code == 500
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    error, answered = lines
    assert (error["logger"], error["level"], error["request_id"]) == (
        "refit.serve",
        "error",
        "r-500",
    )
    assert error["route"] == "/predict"
    assert "RuntimeError: no reader today" in error["exception"]
    assert (answered["logger"], answered["status"]) == ("refit.access", 500)
