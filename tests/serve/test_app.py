"""The server's HTTP API in process: predictions, what is served, health, metrics, and every
way a request can be wrong, answered in one JSON error shape and never with a 500."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from functools import cache
from typing import Any

import httpx
import joblib
import pandas as pd
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from refit.examples import example_rows
from refit.serve.app import create_app
from refit.serve.state import ServerState
from refit.services import Services

JSON = {"content-type": "application/json"}
pytestmark = pytest.mark.anyio

NAME = "breast-cancer"
MAX_ROWS = 8
MAX_BYTES = 16 * 1024


@cache
def examples() -> pd.DataFrame:
    return example_rows(NAME)


def records(rows: list[int]) -> list[dict[str, Any]]:
    """Input records of the dataset's rows, as a client sends them (no target)."""
    inputs = examples().drop(columns="diagnosis").iloc[rows]
    parsed: list[dict[str, Any]] = json.loads(inputs.to_json(orient="records"))
    return parsed


def record(**changes: Any) -> dict[str, Any]:
    return {**records([0])[0], **changes}


def with_literal(field: str, literal: str) -> bytes:
    """A record whose `field` holds `literal` as written (NaN, Infinity, ...: not JSON)."""
    return json.dumps(record(**{field: "@"})).replace('"@"', literal).encode()


@asynccontextmanager
async def connect(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://refit") as client:
        yield client


@pytest.fixture
async def served(services: Services) -> ServerState:
    """A server state of the breast-cancer project with v1 loaded."""
    state = ServerState.open(services, max_body_bytes=MAX_BYTES, max_batch_rows=MAX_ROWS)
    assert await state.follower.check()
    return state


@pytest.fixture
async def client(served: ServerState) -> AsyncIterator[httpx.AsyncClient]:
    async with connect(create_app(served)) as opened:
        yield opened


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error of a response, checked to have the one error shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    error: dict[str, Any] = body["error"]
    assert set(error) <= {"code", "message", "problems"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return error


def problems_of(response: httpx.Response) -> list[dict[str, Any]]:
    error = error_of(response, 422, "invalid_input")
    problems: list[dict[str, Any]] = error["problems"]
    assert all(set(p) == {"field", "problem", "received", "expected"} for p in problems)
    return problems


def model_predictions(services: Services, inputs: list[dict[str, Any]]) -> list[str]:
    """What v1's artifact predicts for `inputs`, loaded straight from the store."""
    row = services.registry.get_version(NAME, 1)
    model = joblib.load(io.BytesIO(services.store.get(row.artifact_uri, row.artifact_sha256)))
    return [str(label) for label in model.predict(pd.DataFrame(inputs))]


def samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            yield sample.name, sample.labels, sample.value


def metric(text: str, name: str, **labels: str) -> float | None:
    found = [value for n, got, value in samples(text) if n == name and got == labels]
    assert len(found) <= 1
    return found[0] if found else None


# --- answers ---------------------------------------------------------------------------------


async def test_one_record_gets_the_prediction_and_probabilities_of_the_served_version(
    client: httpx.AsyncClient, services: Services
) -> None:
    named = await client.post(f"/v1/models/{NAME}/predict", json=record())
    assert named.status_code == 200, named.text
    body = named.json()
    assert list(body) == ["model", "version", "id", "prediction", "probabilities"]
    assert (body["model"], body["version"]) == (NAME, 1)
    assert [body["prediction"]] == model_predictions(services, [record()])
    probabilities = body["probabilities"]
    assert set(probabilities) == {"benign", "malignant"}
    assert sum(probabilities.values()) == pytest.approx(1, abs=1e-5)
    assert max(probabilities, key=probabilities.get) == body["prediction"]

    short = await client.post("/predict", json=record())
    assert short.status_code == 200
    assert short.json() | {"id": body["id"]} == body  # each request has its own id


async def test_a_batch_answers_in_record_order(
    client: httpx.AsyncClient, services: Services
) -> None:
    labels = examples()["diagnosis"]
    benign = labels.index[labels == "benign"][:4].tolist()
    malignant = labels.index[labels == "malignant"][:4].tolist()
    inputs = records([row for pair in zip(benign, malignant, strict=True) for row in pair])
    expected = model_predictions(services, inputs)
    assert len(set(expected)) == 2, "the rows must be told apart by their prediction"

    for path in (f"/v1/models/{NAME}/predict/batch", "/predict/batch"):
        response = await client.post(path, json={"records": inputs})
        assert response.status_code == 200, response.text
        body = response.json()
        assert list(body) == ["model", "version", "id", "predictions", "probabilities"]
        assert (body["model"], body["version"]) == (NAME, 1)
        assert body["predictions"] == expected
        singles = [(await client.post("/predict", json=one)).json() for one in inputs]
        assert body["probabilities"] == [one["probabilities"] for one in singles]


async def test_a_regression_answers_numbers_without_probabilities(regressor: Services) -> None:
    request = json.loads((regressor.project.root / "request.json").read_text())
    batch = json.loads((regressor.project.root / "batch.json").read_text())
    state = ServerState.open(regressor)
    assert await state.follower.check()
    async with connect(create_app(state)) as client:
        one = await client.post("/predict", json=request)
        assert one.status_code == 200, one.text
        assert list(one.json()) == ["model", "version", "id", "prediction"]
        assert isinstance(one.json()["prediction"], float)

        many = await client.post("/v1/models/diabetes/predict/batch", json=batch)
        assert many.status_code == 200, many.text
        assert list(many.json()) == ["model", "version", "id", "predictions"]
        assert len(many.json()["predictions"]) == len(batch["records"])
        assert many.json()["predictions"][0] == pytest.approx(one.json()["prediction"])

        # Every input is nullable: a record of nulls is answered, as missing data.
        nulls = await client.post("/predict", json=dict.fromkeys(request))
        assert nulls.status_code == 200, nulls.text
        assert isinstance(nulls.json()["prediction"], float)

        # A category takes numbers as their text; it never takes true/false.
        coded = await client.post("/predict", json={**request, "sex": 2})
        assert coded.status_code == 200, coded.text
        wrong = await client.post("/predict", json={**request, "sex": True})
        assert problems_of(wrong) == [
            {
                "field": "sex",
                "problem": "wrong type",
                "received": True,
                "expected": "a string or null",
            }
        ]


async def test_models_say_what_is_served(client: httpx.AsyncClient, services: Services) -> None:
    listed = await client.get("/v1/models")
    assert listed.status_code == 200
    [described] = listed.json()["models"]
    one = await client.get(f"/v1/models/{NAME}")
    assert one.status_code == 200
    assert one.json() == described

    row = services.registry.get_version(NAME, 1)
    assert (described["name"], described["alias"], described["ready"]) == (
        NAME,
        "production",
        True,
    )
    assert described["refused"] is None
    served = described["served"]
    assert served["version"] == 1
    assert served["snapshot_id"] == row.snapshot_id
    assert served["metric"] == "roc_auc"
    assert served["metrics"] == row.metrics
    assert served["artifact_sha256"] == row.artifact_sha256
    assert datetime.fromisoformat(served["loaded_at"]).tzinfo is not None
    inputs = served["signature"]["inputs"]
    assert [column["name"] for column in inputs] == list(record())
    assert {column["type"] for column in inputs} == {"float"}
    assert served["signature"]["output"]["classes"] == ["benign", "malignant"]


async def test_health_says_live_and_ready_with_the_served_version(
    client: httpx.AsyncClient,
) -> None:
    live = await client.get("/health/live")
    assert (live.status_code, live.json()) == (200, {"status": "live"})
    ready = await client.get("/health/ready")
    assert (ready.status_code, ready.json()) == (
        200,
        {"status": "ready", "model": NAME, "version": 1},
    )


async def test_metrics_count_requests_by_route_template_and_rows_by_model(
    client: httpx.AsyncClient,
) -> None:
    for _ in range(2):
        assert (await client.post(f"/v1/models/{NAME}/predict", json=record())).status_code == 200
    assert (await client.post("/v1/models/other/predict", json=record())).status_code == 404
    three = {"records": records([0, 1, 2])}
    assert (await client.post("/predict/batch", json=three)).status_code == 200
    assert (await client.post("/predict", json={})).status_code == 422
    assert (await client.get("/no/such/page")).status_code == 404

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    text = response.text
    requests = "refit_requests_total"
    assert metric(text, requests, route="/v1/models/{name}/predict", status="200") == 2
    assert metric(text, requests, route="/v1/models/{name}/predict", status="404") == 1
    assert metric(text, requests, route="/predict/batch", status="200") == 1
    assert metric(text, requests, route="/predict", status="422") == 1
    assert metric(text, requests, route="unmatched", status="404") == 1
    routes = {labels["route"] for _, labels, _ in samples(text) if "route" in labels}
    assert not any(NAME in route or "other" in route or "/no/" in route for route in routes)
    duration = "refit_request_duration_seconds_count"
    assert metric(text, duration, route="/v1/models/{name}/predict") == 3
    assert metric(text, "refit_predicted_rows_total", model=NAME) == 5
    assert metric(text, "refit_model_version", model=NAME) == 1
    assert metric(text, "refit_model_swaps_total", model=NAME) == 0
    assert metric(text, "refit_model_load_failures_total", model=NAME) == 0
    assert metric(text, "refit_model_refused_version", model=NAME) == 0


# --- the request's own fault -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(
            {"mean_radius": "12.5 mm"},
            ("mean_radius", "wrong type", "12.5 mm", "a number or null"),
            id="text-that-is-no-number",
        ),
        pytest.param(
            {"mean_radius": True},
            ("mean_radius", "wrong type", True, "a number or null"),
            id="bool-for-a-number",
        ),
        pytest.param(
            {"mean_radius": {"value": 1}},
            ("mean_radius", "wrong type", "an object", "a number or null"),
            id="object-for-a-number",
        ),
        pytest.param(
            {"mean_raduis": 12.5},
            ("mean_raduis", "unknown field", 12.5, "no such field (did you mean mean_radius?)"),
            id="unknown",
        ),
    ],
)
async def test_a_bad_field_is_named_with_what_was_received_and_expected(
    client: httpx.AsyncClient, changes: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    response = await client.post("/predict", json=record(**changes))
    [problem] = problems_of(response)
    assert tuple(problem.values()) == expected


async def test_a_missing_field_is_named(client: httpx.AsyncClient) -> None:
    incomplete = record()
    del incomplete["worst_area"]
    response = await client.post(f"/v1/models/{NAME}/predict", json=incomplete)
    assert problems_of(response) == [
        {
            "field": "worst_area",
            "problem": "missing",
            "received": None,
            "expected": "a number or null",
        }
    ]


@pytest.mark.parametrize(
    ("literal", "received", "problem"),
    [
        ("NaN", "NaN", "not a finite number"),
        ("Infinity", "Infinity", "not a finite number"),
        ("-Infinity", "-Infinity", "not a finite number"),
        ("1e999", "Infinity", "not a finite number"),
        ("-1e999", "-Infinity", "not a finite number"),
        ("1" + "0" * 400, 10**400, "too large for a 64-bit float"),
    ],
)
async def test_non_finite_numbers_are_refused(
    client: httpx.AsyncClient, literal: str, received: Any, problem: str
) -> None:
    response = await client.post(
        "/predict", content=with_literal("mean_radius", literal), headers=JSON
    )
    assert problems_of(response) == [
        {
            "field": "mean_radius",
            "problem": problem,
            "received": received,
            "expected": "a number or null",
        }
    ]


async def test_every_problem_of_a_batch_is_reported_at_once_by_record_and_field(
    client: httpx.AsyncClient,
) -> None:
    first, second = records([0, 1])
    del second["mean_texture"]
    body = {"records": [first, {**second, "mean_area": "large", "colour": "red"}, [1, 2]]}
    response = await client.post("/predict/batch", json=body)
    problems = problems_of(response)
    assert [(p["field"], p["problem"], p["received"]) for p in problems] == [
        ("records[1].colour", "unknown field", "red"),
        ("records[1].mean_texture", "missing", None),
        ("records[1].mean_area", "wrong type", "large"),
        ("records[2]", "wrong type", "a list"),
    ]
    assert problems[-1]["expected"] == "an object of fields"
    assert response.json()["error"]["message"].startswith("4 problems with the input")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {"records": []},
            ("records", "empty batch", [], "at least one record"),
            id="empty",
        ),
        pytest.param(
            {"records": {"mean_radius": 1}},
            ("records", "wrong type", "an object", "a list"),
            id="not-a-list",
        ),
        pytest.param(
            {"records": [], "model": "v2"},
            ("model", "unknown field", "v2", 'only "records"'),
            id="unknown-key",
        ),
    ],
)
async def test_a_batch_of_the_wrong_shape_is_refused(
    client: httpx.AsyncClient, body: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    [problem] = problems_of(await client.post(f"/v1/models/{NAME}/predict/batch", json=body))
    assert tuple(problem.values()) == expected


@pytest.mark.parametrize("body", [[], {"rows": []}, "records"], ids=["list", "no-records", "text"])
async def test_a_batch_body_that_is_not_an_object_of_records_is_malformed(
    client: httpx.AsyncClient, body: Any
) -> None:
    error = error_of(await client.post("/predict/batch", json=body), 400, "malformed_body")
    assert '{"records": [{...}, ...]}' in error["message"]


async def test_a_single_record_body_must_be_an_object(client: httpx.AsyncClient) -> None:
    [problem] = problems_of(await client.post("/predict", json=[record()]))
    assert problem == {
        "field": "the body",
        "problem": "wrong type",
        "received": "a list",
        "expected": "an object of fields",
    }


async def test_a_batch_over_the_row_limit_is_too_large(client: httpx.AsyncClient) -> None:
    allowed = {"records": records(list(range(MAX_ROWS)))}
    assert (await client.post("/predict/batch", json=allowed)).status_code == 200
    over = {"records": records(list(range(MAX_ROWS + 1)))}
    error = error_of(await client.post("/predict/batch", json=over), 413, "too_large")
    assert f"{MAX_ROWS + 1} records" in error["message"]
    assert f"at most {MAX_ROWS}" in error["message"]


async def test_a_body_over_the_byte_limit_is_too_large_declared_or_streamed(
    client: httpx.AsyncClient,
) -> None:
    big = json.dumps({**record(), "padding": "x" * MAX_BYTES}).encode()
    declared = await client.post("/predict", content=big, headers=JSON)
    assert str(MAX_BYTES) in error_of(declared, 413, "too_large")["message"]

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 1024):
            yield big[start : start + 1024]

    streamed = await client.post("/predict", content=chunks(), headers=JSON)
    assert "content-length" not in streamed.request.headers
    assert str(MAX_BYTES) in error_of(streamed, 413, "too_large")["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b'{"mean_radius": 12.5,', "not valid JSON", id="truncated"),
        pytest.param(b"{'mean_radius': 12.5}", "line 1, column 2", id="single-quotes"),
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"  \n", "empty", id="blank"),
        pytest.param(b'{"mean_radius": "\xe9"}', "not UTF-8", id="latin-1"),
        pytest.param(b"[" * 5000 + b"]" * 5000, "too deeply", id="deep"),
        pytest.param(b'{"mean_radius": ' + b"1" * 5000 + b"}", "digits", id="long-integer"),
    ],
)
async def test_a_body_that_is_not_json_is_malformed(
    client: httpx.AsyncClient, body: bytes, message: str
) -> None:
    for path in ("/predict", "/predict/batch"):
        error = error_of(await client.post(path, content=body, headers=JSON), 400, "malformed_body")
        assert message in error["message"]


async def test_a_lone_surrogate_is_echoed_back_as_escaped_json(client: httpx.AsyncClient) -> None:
    body = with_literal("mean_radius", '"\\ud800"')
    response = await client.post("/predict", content=body, headers=JSON)
    assert b"\\ud800" in response.content
    [problem] = problems_of(response)
    assert (problem["field"], problem["received"]) == ("mean_radius", "\ud800")


# --- not found, wrong method -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/models/churn/predict"),
        ("POST", "/v1/models/churn/predict/batch"),
        ("GET", "/v1/models/churn"),
    ],
)
async def test_an_unknown_model_is_not_found(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    error = error_of(await client.request(method, path, json=record()), 404, "not_found")
    assert "'churn'" in error["message"] and NAME in error["message"]


async def test_an_unknown_route_and_a_wrong_method_answer_in_the_same_shape(
    client: httpx.AsyncClient,
) -> None:
    error_of(await client.get("/v2/models"), 404, "not_found")
    wrong = await client.get("/predict")
    error_of(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "POST"
    posted = await client.post("/health/live")
    error_of(posted, 405, "method_not_allowed")
    assert posted.headers["allow"] == "GET, HEAD"
