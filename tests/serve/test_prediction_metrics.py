"""What is predicted, in /metrics: a classifier's predictions by class and a regressor's
values in a histogram, counted per call of the model; and the request id of every answer."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from refit.examples import example_rows
from refit.serve.app import create_app
from refit.serve.metrics import VALUE_BUCKETS, observe_many
from refit.serve.state import ServerState
from refit.services import Services

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def connected(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    state = ServerState.open(services)
    assert await state.follower.check()
    transport = httpx.ASGITransport(create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://refit") as client:
        yield client
    await state.batcher.close()


def records(name: str, target: str, count: int) -> list[dict[str, Any]]:
    rows = example_rows(name).drop(columns=target).iloc[:count]
    return list(rows.to_dict("records"))


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


async def test_a_classifiers_predictions_are_counted_by_class(services: Services) -> None:
    name = services.project.spec.name
    async with connected(services) as client:
        before = samples((await client.get("/metrics")).text, "refit_predictions_total")
        assert set(before.values()) == {0.0} and len(before) == 2  # each class, from the start
        labels: list[str] = []
        batch = records(name, "diagnosis", 30)
        answer = await client.post("/predict/batch", json={"records": batch})
        labels += answer.json()["predictions"]
        for record in batch[:5]:
            labels.append((await client.post("/predict", json=record)).json()["prediction"])
        after = samples((await client.get("/metrics")).text, "refit_predictions_total")
    counted = {dict(k)["class"]: v for k, v in after.items() if dict(k)["model"] == name}
    assert counted == {label: float(n) for label, n in Counter(labels).items()} | {
        label: 0.0 for label in {"benign", "malignant"} - set(labels)
    }
    assert set(Counter(labels)) == {"benign", "malignant"}  # both classes were predicted


async def test_a_regressors_values_fill_a_histogram(regressor: Services) -> None:
    name = regressor.project.spec.name
    async with connected(regressor) as client:
        batch = records(name, "progression", 20)
        answer = await client.post("/predict/batch", json={"records": batch})
        assert answer.status_code == 200, answer.text
        values = answer.json()["predictions"]
        one = await client.post("/predict", json=batch[0])
        values.append(one.json()["prediction"])
        text = (await client.get("/metrics")).text
    count = samples(text, "refit_predicted_value_count")
    assert list(count.values()) == [len(values)]
    buckets = {dict(k)["le"]: v for k, v in samples(text, "refit_predicted_value_bucket").items()}
    assert buckets["100.0"] == sum(v <= 100 for v in values)
    assert buckets["+Inf"] == len(values)
    assert "refit_predictions_total{" not in text  # no classes


def test_many_values_observed_at_once_fill_the_buckets_one_at_a_time_would() -> None:
    registry = CollectorRegistry()
    at_once = Histogram("at_once", "", ["m"], buckets=VALUE_BUCKETS, registry=registry)
    each = Histogram("each", "", ["m"], buckets=VALUE_BUCKETS, registry=registry)
    values = np.concatenate(
        [np.random.default_rng(7).normal(0, 3000, 500), [0, 0.01, -0.01, 1e6, 2e6, -3e7, 10]]
    )
    observe_many(at_once.labels("x"), values)
    for value in values:
        each.labels("x").observe(value)
    text = generate_latest(registry).decode()
    assert samples(text, "at_once_bucket") == samples(text, "each_bucket")
    assert samples(text, "at_once_count") == samples(text, "each_count")
    # With buckets below 0 no `_sum` is exported (OpenMetrics), but it is kept as observe does.
    assert at_once.labels("x")._sum.get() == pytest.approx(each.labels("x")._sum.get())


async def test_every_answer_of_refits_routes_carries_its_request_id(services: Services) -> None:
    name = services.project.spec.name
    record = records(name, "diagnosis", 1)[0]
    async with connected(services) as client:
        for path, body in [
            ("/predict", record),
            (f"/v1/models/{name}/predict", record),
            ("/predict/batch", {"records": [record]}),
            (f"/v1/models/{name}/predict/batch", {"records": [record]}),
        ]:
            new = await client.post(path, json=body)
            assert new.json()["id"] == new.headers["x-request-id"]
            assert len(new.json()["id"]) == 32
            own = await client.post(path, json=body, headers={"X-Request-Id": "trace-7"})
            assert own.json()["id"] == own.headers["x-request-id"] == "trace-7"
        tensor = {"name": "x", "shape": [1, 30], "datatype": "FP64", "data": list(record.values())}
        v2 = await client.post(
            f"/v2/models/{name}/infer", json={"inputs": [tensor]}, headers={"X-Request-Id": "v2-9"}
        )
        assert v2.json()["id"] == "v2-9"  # a V2 request without an id of its own
        mlflow = await client.post(
            "/invocations", json={"dataframe_records": [record]}, headers={"X-Request-Id": "m-1"}
        )
        assert mlflow.json() == {"predictions": mlflow.json()["predictions"]}
        assert mlflow.headers["x-request-id"] == "m-1"
