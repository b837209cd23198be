"""MLflow's scoring routes (and so SageMaker's container contract), in process: the four JSON
layouts and CSV, content types, and MLflow's error shape."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI

from refit import __version__
from refit.examples import example_rows
from refit.serve.app import create_app
from refit.serve.state import ServerState
from refit.services import Services
from refit.train.promotion import promote_version

pytestmark = pytest.mark.anyio

NAME = "breast-cancer"
MAX_ROWS = 8
PICKED = [0, 19, 1, 20]  # malignant, benign, malignant, benign
JSON = {"content-type": "application/json"}


@cache
def inputs() -> pd.DataFrame:
    return example_rows(NAME).drop(columns="diagnosis").iloc[PICKED].reset_index(drop=True)


def records() -> list[dict[str, Any]]:
    parsed: list[dict[str, Any]] = json.loads(inputs().to_json(orient="records"))
    return parsed


@asynccontextmanager
async def connect(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://refit") as client:
        yield client


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the breast-cancer server with v1 loaded."""
    state = ServerState.open(services, max_batch_rows=MAX_ROWS)
    assert await state.follower.check()
    async with connect(create_app(state)) as opened:
        yield opened


@pytest.fixture
async def expected(client: httpx.AsyncClient) -> list[str]:
    """What refit's own batch route predicts for the picked rows."""
    response = await client.post("/predict/batch", json={"records": records()})
    labels: list[str] = response.json()["predictions"]
    assert len(set(labels)) == 2, "the rows must be told apart"
    return labels


def mlflow_error(response: httpx.Response, status: int, code: str = "BAD_REQUEST") -> str:
    """The message of an MLflow error, checked to have exactly MLflow's shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error_code", "message"]
    assert body["error_code"] == code
    message: str = body["message"]
    assert isinstance(message, str) and message
    return message


# --- the four JSON layouts and CSV -----------------------------------------------------------


def layouts() -> dict[str, Any]:
    frame = inputs()
    shuffled = frame[list(reversed(frame.columns))]
    split = json.loads(shuffled.to_json(orient="split"))  # columns, index and data
    as_rows = frame.to_numpy().tolist()
    return {
        "dataframe_split": {"dataframe_split": split},
        "dataframe_records": {"dataframe_records": records()},
        "instances-records": {"instances": records()},
        "instances-rows": {"instances": as_rows},
        "inputs-columns": {"inputs": {name: frame[name].tolist() for name in frame.columns}},
        "inputs-rows": {"inputs": as_rows},
        "with-params": {"dataframe_records": records(), "params": {"threshold": 0.5}},
    }


@pytest.mark.parametrize("layout", list(layouts()))
async def test_every_json_layout_is_predicted_in_row_order(
    client: httpx.AsyncClient, expected: list[str], layout: str
) -> None:
    response = await client.post("/invocations", json=layouts()[layout])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"predictions": expected}


@pytest.mark.parametrize(
    "content_type", ["text/csv", "application/csv", "text/csv; charset=utf-8", "TEXT/CSV"]
)
async def test_csv_with_a_header_row_is_predicted(
    client: httpx.AsyncClient, expected: list[str], content_type: str
) -> None:
    frame = inputs()
    frame = frame[list(reversed(frame.columns))].copy()
    frame.loc[1, "mean_area"] = np.nan  # an empty cell: a missing value, which is allowed
    body = frame.to_csv(index=False).encode()
    response = await client.post(
        "/invocations", content=body, headers={"content-type": content_type}
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert predictions[0] == expected[0] and predictions[2:] == expected[2:]
    assert predictions[1] in ("benign", "malignant")


async def test_a_regressor_takes_categories_from_csv(regressor: Services) -> None:
    state = ServerState.open(regressor)
    assert await state.follower.check()
    batch = json.loads((regressor.project.root / "batch.json").read_text())
    async with connect(create_app(state)) as client:
        expected = (await client.post("/predict/batch", json=batch)).json()["predictions"]
        csv = pd.DataFrame(batch["records"]).to_csv(index=False)
        assert ",b," in csv or ",a," in csv  # the category is text in the file
        response = await client.post(
            "/invocations", content=csv, headers={"content-type": "text/csv"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == pytest.approx(expected)


# --- content types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "words"),
    [
        ("application/json; format=pandas-split", ["format", "MLflow 2.0"]),
        ("text/csv; charset=latin-1", ["UTF-8"]),
        ("text/plain", ["application/json", "text/csv"]),
        (None, ["no Content-Type"]),
    ],
)
async def test_an_unsupported_content_type_is_415_in_plain_text(
    client: httpx.AsyncClient, content_type: str | None, words: list[str]
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    body = json.dumps({"dataframe_records": records()}).encode()
    response = await client.post("/invocations", content=body, headers=headers)
    assert response.status_code == 415, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert all(word in response.text for word in words), response.text


# --- the request's own fault -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "received"),
    [
        pytest.param({}, "received the fields \n", id="none"),
        pytest.param({"params": {}}, "received the fields params", id="only-params"),
        pytest.param(
            {"instances": [], "inputs": []}, "received the fields inputs, instances", id="two"
        ),
        pytest.param(
            {"dataframe_records": [], "columns": []},
            "received the fields columns, dataframe_records",
            id="unknown-beside",
        ),
        pytest.param({"records": []}, "received the fields records", id="refit-shape"),
        pytest.param([{"mean_radius": 1}], "received a list", id="top-level-list"),
    ],
)
async def test_the_body_must_have_exactly_one_layout(
    client: httpx.AsyncClient, body: Any, received: str
) -> None:
    message = mlflow_error(await client.post("/invocations", json=body), 400)
    assert "exactly one of the fields dataframe_split, dataframe_records, instances, inputs" in (
        message
    )
    assert received.strip() in message


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param(
            {"dataframe_records": [{**records()[0], "mean_radius": "big"}]},
            'dataframe_records[0].mean_radius: wrong type, received "big"',
            id="records-value",
        ),
        pytest.param(
            {"dataframe_records": []},
            "dataframe_records: empty batch",
            id="records-empty",
        ),
        pytest.param(
            {"instances": [[1.0, 2.0]]},
            "instances[0]: wrong length, received 2, expected 30 values, the features in order: "
            "mean_radius, mean_texture",
            id="instances-row-length",
        ),
        pytest.param(
            {"dataframe_split": {"columns": ["mean_radius"], "data": [[1.0]]}},
            "mean_texture: missing",
            id="split-missing-column",
        ),
        pytest.param(
            {"dataframe_split": {"columns": ["mean_radius"], "data": [[1.0, 2.0]]}},
            "dataframe_split.data[0]: wrong length, received 2, expected 1 values",
            id="split-row-length",
        ),
        pytest.param(
            {"dataframe_split": {"data": [[1.0]]}},
            "dataframe_split.columns: missing",
            id="split-no-columns",
        ),
        pytest.param(
            {"inputs": {"mean_radius": 1.0}},
            "inputs.mean_radius: wrong type, received 1.0, expected a list of values",
            id="inputs-scalar",
        ),
        pytest.param(
            {"dataframe_records": records()[:1], "params": [1]},
            'params: wrong type, received "a list", expected an object',
            id="params-not-an-object",
        ),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(
    client: httpx.AsyncClient, body: Any, problem: str
) -> None:
    message = mlflow_error(await client.post("/invocations", json=body), 400)
    assert problem in message, message


@pytest.mark.parametrize(
    ("csv", "problem"),
    [
        pytest.param(b"", "the CSV body is empty", id="empty"),
        pytest.param(b"mean_radius,mean_texture\n", "the CSV: empty batch", id="header-only"),
        pytest.param(b"a,a\n1,2\n", "names given twice", id="duplicate-names"),
        pytest.param(b"mean_radius\n1\n1,2\n", "line 3: wrong length, received 2", id="ragged"),
        pytest.param(b'mean_radius\n"1\n', "malformed at line", id="open-quote"),
        pytest.param(b"mean_radius\n\xe9\n", "not UTF-8", id="latin-1"),
    ],
)
async def test_bad_csv_is_a_400_naming_the_line(
    client: httpx.AsyncClient, csv: bytes, problem: str
) -> None:
    response = await client.post("/invocations", content=csv, headers={"content-type": "text/csv"})
    assert problem in mlflow_error(response, 400)


async def test_a_bad_csv_cell_is_named_by_line_and_column(client: httpx.AsyncClient) -> None:
    frame = inputs().copy()
    frame["mean_area"] = frame["mean_area"].astype(object)
    frame.loc[2, "mean_area"] = "large"
    body = b"\n" + frame.to_csv(index=False).encode()  # a blank first line is skipped
    response = await client.post("/invocations", content=body, headers={"content-type": "text/csv"})
    message = mlflow_error(response, 400)
    assert message.startswith("1 problem with the input: ")
    assert 'line 5 (mean_area): wrong type, received "large", expected a number or null' in message


async def test_too_many_rows_and_malformed_json_keep_the_error_shape(
    client: httpx.AsyncClient,
) -> None:
    many = {"dataframe_records": records() * 3}
    over = await client.post("/invocations", json=many)
    assert f"at most {MAX_ROWS}" in mlflow_error(over, 413, "REQUEST_LIMIT_EXCEEDED")
    broken = await client.post("/invocations", content=b"{", headers=JSON)
    assert "not valid JSON" in mlflow_error(broken, 400)
    wrong = await client.get("/invocations")
    mlflow_error(wrong, 405)
    assert wrong.headers["allow"] == "POST"


# --- health, before and after a model exists -------------------------------------------------


async def test_ping_health_and_version_before_and_after_a_model_is_loaded(
    unpromoted: Services,
) -> None:
    state = ServerState.open(unpromoted)
    async with connect(create_app(state)) as client:
        assert not await state.follower.check()
        for path in ("/ping", "/health"):
            response = await client.get(path)
            assert (response.status_code, response.text) == (404, "\n")
            assert response.headers["content-type"] == "application/json"
        version = await client.get("/version")
        assert (version.status_code, version.text) == (200, __version__)
        scored = await client.post("/invocations", json={"dataframe_records": records()})
        assert "not ready" in mlflow_error(scored, 503, "TEMPORARILY_UNAVAILABLE")
        assert scored.headers["retry-after"] == "1"

        promote_version(unpromoted.registry, NAME, 1, "test", store=unpromoted.store)
        assert await state.follower.check()
        for path in ("/ping", "/health"):
            response = await client.get(path)
            assert (response.status_code, response.text) == (200, "\n")
            assert response.headers["content-type"] == "application/json"
        scored = await client.post("/invocations", json={"dataframe_records": records()})
        assert scored.status_code == 200, scored.text
