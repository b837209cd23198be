"""A failing model call fails only the requests that caused it, and never answers 200 with NaN.

The model is a scikit-learn pipeline with no imputer (StandardScaler + LogisticRegression),
whose signature says every input is nullable, as `refit models register` records it: natively
it raises on a missing value (`Input X contains NaN`), as ONNX it answers NaN. Clients that
send nulls share micro-batches with clients that do not.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from refit.examples import example_rows
from refit.flavors.onnx import convert
from refit.serve import app as app_module
from refit.serve.app import create_app
from refit.serve.state import LARGE_BODY, ServerState, refusal
from refit.services import Services
from refit.train.promotion import promote_version

pytestmark = pytest.mark.anyio

NAME = "breast-cancer"
TARGET = "diagnosis"
AddVersion = Callable[..., int]


def inputs() -> pd.DataFrame:
    return example_rows(NAME).drop(columns=TARGET)


def no_imputer() -> Pipeline:
    data = example_rows(NAME)
    model: Pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return model.fit(data.drop(columns=TARGET), data[TARGET])


def records(count: int) -> list[dict[str, Any]]:
    parsed: list[dict[str, Any]] = json.loads(inputs().iloc[:count].to_json(orient="records"))
    return parsed


@asynccontextmanager
async def connect(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://refit") as client:
        yield client


async def serve_version(services: Services, version: int) -> ServerState:
    promote_version(services.registry, NAME, version, "test", store=services.store)
    state = ServerState.open(services)
    assert await state.follower.check()
    return state


async def serve_current(services: Services) -> ServerState:
    state = ServerState.open(services)
    assert await state.follower.check()
    return state


def native_version(add_version: AddVersion, model: Pipeline) -> int:
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return add_version(artifact=buffer.getvalue())


def onnx_version(add_version: AddVersion, model: Pipeline) -> int:
    return add_version(artifact=convert(model, inputs().iloc[:5]), flavor="onnx", format="onnx")


async def crowd(
    client: httpx.AsyncClient, good: list[dict[str, Any]], bad: list[dict[str, Any]]
) -> tuple[list[httpx.Response], list[httpx.Response]]:
    """Every request at once, bad ones among the good ones, so they share micro-batches."""
    calls = [client.post("/predict", json=r) for r in good]
    calls += [client.post("/predict/batch", json={"records": [good[0], r]}) for r in bad]
    answers = await asyncio.gather(*calls)
    return list(answers[: len(good)]), list(answers[len(good) :])


@pytest.mark.parametrize("runtime", ["native", "onnx"])
async def test_valid_requests_beside_ones_the_model_fails_on_all_succeed(
    unpromoted: Services, add_version: AddVersion, runtime: str
) -> None:
    model = no_imputer()
    make = native_version if runtime == "native" else onnx_version
    state = await serve_version(unpromoted, make(add_version, model))
    assert state.follower.current is not None
    assert state.follower.current.runtime == runtime
    good = records(40)
    bad = [{**r, "mean_radius": None} for r in records(6)]
    expected = model.predict(inputs().iloc[:40]).tolist()
    async with connect(create_app(state)) as client:
        for _ in range(3):
            answered, refused = await crowd(client, good, bad)
            assert [r.status_code for r in answered] == [200] * len(good)
            assert [r.json()["prediction"] for r in answered] == expected
            for response in answered:
                probabilities = response.json()["probabilities"]
                assert all(np.isfinite(p) for p in probabilities.values()), probabilities
            for response in refused:
                assert response.status_code == 422, response.text
                error = response.json()["error"]
                assert error["code"] == "model_refused"
                assert error["problems"][0]["field"] == "mean_radius"
                assert error["problems"][0]["problem"].startswith("missing in row 1;")
                if runtime == "native":
                    assert "ValueError: Input X contains NaN" in error["message"]
                else:
                    assert "answered NaN or an infinity" in error["message"]
                assert "mean_radius" in error["message"]
    await state.batcher.close()


async def test_a_request_the_model_fails_on_alone_is_a_422_in_every_protocol(
    unpromoted: Services, add_version: AddVersion
) -> None:
    state = await serve_version(unpromoted, onnx_version(add_version, no_imputer()))
    record = {**records(1)[0], "mean_texture": None}
    names = list(inputs().columns)
    v2 = {
        "inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP64", "data": [None] * 30}],
    }
    async with connect(create_app(state)) as client:
        one = await client.post("/predict", json=record)
        assert one.status_code == 422
        assert one.json()["error"]["problems"] == [
            {
                "field": "mean_texture",
                "problem": "missing in row 0; the model answered NaN or an infinity among its "
                "probabilities for row 0 of the request",
                "received": None,
                "expected": "a value",
            }
        ]
        infer = await client.post(f"/v2/models/{NAME}/infer", json=v2)
        assert infer.status_code == 400, infer.text
        assert "mean_radius: missing in row 0" in infer.json()["error"]
        split = {"dataframe_split": {"columns": names, "data": [[None] * 30]}}
        invoked = await client.post("/invocations", json=split)
        assert invoked.status_code == 400, invoked.text
        assert invoked.json()["error_code"] == "BAD_REQUEST"
        assert "answered NaN" in invoked.json()["message"]
    await state.batcher.close()


async def test_an_unexpected_error_is_a_500_that_leaves_the_connection_usable(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = await serve_current(services)

    async def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    # Not raised again to the server (uvicorn closes a connection on an exception it sees).
    transport = httpx.ASGITransport(create_app(state), raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://refit") as client:
        monkeypatch.setattr(state, "predict_columns", broken)
        response = await client.post("/predict", json=records(1)[0])
        assert response.status_code == 500
        assert response.json() == {
            "error": {"code": "internal", "message": "internal server error"}
        }
        monkeypatch.undo()
        assert (await client.post("/predict", json=records(1)[0])).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'refit_requests_total{route="/predict",status="500"} 1.0' in metrics
    await state.batcher.close()


async def test_a_large_body_is_parsed_and_checked_off_the_event_loop(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = await serve_current(services)
    parse = app_module.parse_json

    def slow_parse(body: bytes, max_separators: int | None = None) -> Any:
        if len(body) > LARGE_BODY:
            time.sleep(1.0)  # a body that takes long to parse (10,000 records: ~0.3 s)
        return parse(body, max_separators)

    monkeypatch.setattr(app_module, "parse_json", slow_parse)
    big = {"records": records(100)}
    assert len(json.dumps(big)) > LARGE_BODY
    async with connect(create_app(state)) as client:
        sent = asyncio.ensure_future(client.post("/predict/batch", json=big))
        await asyncio.sleep(0.2)
        assert not sent.done()
        live = await asyncio.wait_for(client.get("/health/live"), timeout=5)
        one = await asyncio.wait_for(client.post("/predict", json=records(1)[0]), timeout=5)
        assert (live.status_code, one.status_code) == (200, 200)
        assert not sent.done(), "the probes were answered while the big body was parsed"
        assert len((await sent).json()["predictions"]) == 100
    await state.batcher.close()


def test_a_refusal_without_missing_values_names_the_request_and_the_model_message() -> None:
    error = refusal(["a", "b"], [[1.0, 2.0], ["x", "y"]], ValueError("Found unknown categories"))
    assert error.status == 422 and error.code == "model_refused"
    assert error.message == (
        "the model failed on this request: it raised ValueError: Found unknown categories"
    )
    assert [(p.field, p.problem) for p in error.problems] == [
        ("the request", "the model raised ValueError: Found unknown categories")
    ]
    long = refusal(["a"], [[None]], ValueError("x" * 1000))
    assert len(long.problems[0].problem) < 400, "the model's message is cut"
