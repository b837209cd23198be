"""Feedback in process: true labels (or values) named by request ids are checked against the
served model's output, kept whole or refused whole, and written as the feedback log."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from refit.prediction_logs import FEEDBACK_SCHEMA, REQUEST_ID, ROW, VALUE, read_logs
from refit.project import load_project
from refit.registry.monitoring import FEEDBACK, list_logs
from refit.serve.app import ServerApp, create_app
from refit.serve.state import ServerState
from refit.services import Services

pytestmark = pytest.mark.anyio

MAX_ROWS = 8


@asynccontextmanager
async def running(
    services: Services, **monitor: Any
) -> AsyncIterator[tuple[ServerApp, httpx.AsyncClient]]:
    environ = {f"REFIT_MONITOR__{k.upper()}": str(v) for k, v in monitor.items()}
    services = dataclasses.replace(services, project=load_project(services.project.root, environ))
    state = ServerState.open(services, poll_interval=0.05, max_batch_rows=MAX_ROWS)
    app = create_app(state)
    transport = httpx.ASGITransport(app)
    client = httpx.AsyncClient(transport=transport, base_url="http://refit")
    async with client, app.router.lifespan_context(app):
        yield app, client


def feedback_of(services: Services) -> tuple[list[Any], Any]:
    name = services.project.spec.name
    logs = list_logs(services.registry, name, FEEDBACK)
    return logs, read_logs(services.store, logs)


async def send(client: httpx.AsyncClient, name: str, body: Any) -> httpx.Response:
    return await client.post(f"/v1/models/{name}/feedback", json=body)


async def test_feedback_is_accepted_written_and_indexed(services: Services) -> None:
    name = services.project.spec.name
    async with running(services) as (_, client):
        one = await send(client, name, {"id": "req-1", "value": "malignant"})
        assert (one.status_code, one.json()) == (202, {"accepted": 1})
        batch = {
            "feedback": [
                {"id": "req-2", "row": 0, "value": "benign"},
                {"id": "req-2", "row": 1, "value": "malignant"},
            ]
        }
        many = await send(client, name, batch)
        assert (many.status_code, many.json()) == (202, {"accepted": 2})
        assert one.headers["x-request-id"] != many.headers["x-request-id"]
    logs, frame = feedback_of(services)
    assert [log.rows for log in logs] == [3]
    assert [(log.kind, log.version) for log in logs] == [(FEEDBACK, None)]
    assert list(frame.columns) == FEEDBACK_SCHEMA.names
    rows = sorted(zip(frame[REQUEST_ID], frame[ROW], frame[VALUE], strict=True))
    assert rows == [
        ("req-1", 0, '"malignant"'),
        ("req-2", 0, '"benign"'),
        ("req-2", 1, '"malignant"'),
    ]


async def test_feedback_names_the_id_an_answer_carries(services: Services) -> None:
    name = services.project.spec.name
    async with running(services) as (_, client):
        version = services.registry.get_version(name, 1)
        record = {c["name"]: 1.0 for c in version.signature["inputs"]}
        answer = await client.post("/predict", json=record)
        assert answer.status_code == 200
        request_id = answer.json()["id"]
        told = await send(client, name, {"id": request_id, "value": answer.json()["prediction"]})
        assert told.status_code == 202
    _, frame = feedback_of(services)
    assert frame[REQUEST_ID].tolist() == [request_id]


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        ({"id": "req-1", "value": "maybe"}, "value", "not a value of the model"),
        ({"id": "req-1"}, "value", "missing"),
        ({"value": "benign"}, "id", "missing"),
        ({"id": "no spaces", "value": "benign"}, "id", "not a request id"),
        ({"id": 7, "value": "benign"}, "id", "not a request id"),
        ({"id": "req-1", "row": -1, "value": "benign"}, "row", "not a row"),
        ({"id": "req-1", "row": True, "value": "benign"}, "row", "not a row"),
        ({"id": "req-1", "row": MAX_ROWS, "value": "benign"}, "row", "not a row"),
        ({"id": "req-1", "value": "benign", "label": 1}, "label", "unknown field"),
        (
            {"feedback": [{"id": "a", "value": "benign"}, {"id": "b", "value": "sick"}]},
            "feedback[1].value",
            "not a value of the model",
        ),
        ({"feedback": [{"id": "a", "value": "benign"}, 3]}, "feedback[1]", "wrong type"),
        ({"feedback": []}, "feedback", "empty batch"),
        ({"feedback": {"id": "a"}}, "feedback", "wrong type"),
        ({"feedback": [], "more": 1}, "more", "unknown field"),
    ],
)
async def test_bad_feedback_is_refused_whole_naming_the_item(
    services: Services, body: Any, field: str, problem: str
) -> None:
    name = services.project.spec.name
    async with running(services) as (app, client):
        response = await send(client, name, body)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_input"
        assert {"field": field, "problem": problem} in [
            {"field": p["field"], "problem": p["problem"]} for p in error["problems"]
        ], error
        assert app.state.refit.served(name).feedback.rows == 0  # nothing of it was kept
    logs, _ = feedback_of(services)
    assert logs == []


async def test_a_bad_value_says_what_the_model_answers(services: Services) -> None:
    name = services.project.spec.name
    async with running(services) as (_, client):
        response = await send(client, name, {"id": "r", "value": "maybe"})
    [problem] = response.json()["error"]["problems"]
    assert problem == {
        "field": "value",
        "problem": "not a value of the model",
        "received": "maybe",
        "expected": 'one of the classes "benign", "malignant"',
    }


async def test_more_items_than_a_batch_may_hold_is_413_before_any_is_read(
    services: Services,
) -> None:
    name = services.project.spec.name
    items = [{"id": f"r{i}", "value": "benign"} for i in range(MAX_ROWS + 1)]
    async with running(services) as (_, client):
        response = await send(client, name, {"feedback": items})
        assert response.status_code == 413, response.text
        assert "serve.max_batch_rows" in response.json()["error"]["message"]
        malformed = await client.post(
            f"/v1/models/{name}/feedback",
            content=b"[1]",
            headers={"content-type": "application/json"},
        )
        assert malformed.status_code == 400
        unknown = await send(client, "nope", {"id": "r", "value": "benign"})
        assert unknown.status_code == 404
        text = await client.post(
            f"/v1/models/{name}/feedback", content=b"{}", headers={"content-type": "text/plain"}
        )
        assert text.status_code == 415


async def test_a_regressors_feedback_is_a_finite_number(regressor: Services) -> None:
    name = regressor.project.spec.name
    async with running(regressor) as (_, client):
        good = await send(
            client, name, {"feedback": [{"id": "a", "value": 151}, {"id": "b", "value": 75.5}]}
        )
        assert good.status_code == 202, good.text
        for bad in ("151", True, None, [1]):
            refused = await send(client, name, {"id": "c", "value": bad})
            assert refused.status_code == 422, (bad, refused.text)
            assert refused.json()["error"]["problems"][0]["expected"] == "a finite number"
        nan = await client.post(
            f"/v1/models/{name}/feedback",
            content=b'{"id": "c", "value": NaN}',
            headers={"content-type": "application/json"},
        )
        assert nan.status_code == 422, nan.text
    _, frame = feedback_of(regressor)
    assert sorted(frame[VALUE]) == ["151", "75.5"]


async def test_feedback_before_any_version_is_served_is_503(unpromoted: Services) -> None:
    name = unpromoted.project.spec.name
    async with running(unpromoted) as (_, client):
        response = await send(client, name, {"id": "r", "value": "benign"})
    assert response.status_code == 503
    assert response.headers["retry-after"]


async def test_a_full_feedback_buffer_is_503_and_keeps_nothing_of_the_request(
    services: Services,
) -> None:
    name = services.project.spec.name
    settings = {"buffer_rows": 2, "flush_rows": 1000, "flush_seconds": 3600}
    async with running(services, **settings) as (app, client):
        items = [{"id": "a", "value": "benign"}, {"id": "b", "value": "benign"}]
        assert (await send(client, name, {"feedback": items})).status_code == 202
        full = await send(client, name, {"id": "c", "value": "benign"})
        assert full.status_code == 503
        assert "monitor.buffer_rows" in full.json()["error"]["message"]
        assert app.state.refit.served(name).feedback.rows == 2
    _, frame = feedback_of(services)
    assert sorted(frame[REQUEST_ID]) == ["a", "b"]


async def test_a_row_is_any_integer_json_schema_allows_below_the_batch_limit(
    services: Services,
) -> None:
    name = services.project.spec.name
    async with running(services) as (_, client):
        taken = await send(client, name, {"id": "r", "row": 3.0, "value": "benign"})
        assert taken.status_code == 202, taken.text
        document = (await client.get("/openapi.json")).json()
    row = document["components"]["schemas"]["FeedbackItem"]["properties"]["row"]
    assert (row["type"], row["minimum"], row["maximum"]) == ("integer", 0, MAX_ROWS - 1)
    _, frame = feedback_of(services)
    assert frame[ROW].tolist() == [3]
