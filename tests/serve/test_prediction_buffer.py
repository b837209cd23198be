"""Prediction logging in process: every answered row of a sampled request lands in the
artifact store, indexed in the registry, with its request's id and row; the buffer is bounded,
written by size, by time and at shutdown, and neither a slow nor a failing store touches a
request."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from refit.artifacts import ArtifactRef, ArtifactStore
from refit.errors import ArtifactError
from refit.examples import example_rows
from refit.prediction_logs import (
    AT,
    PREDICTION,
    PROBABILITIES,
    REQUEST_ID,
    ROW,
    VERSION,
    answered,
    input_column,
    predictions_schema,
    read_logs,
)
from refit.predictions import MatrixColumns, Predictions
from refit.project import load_project
from refit.registry.monitoring import PREDICTIONS, list_logs
from refit.serve.app import ServerApp, create_app
from refit.serve.metrics import ServerMetrics
from refit.serve.prediction_log import Destination, LogBuffer
from refit.serve.state import ServerState
from refit.services import Services
from refit.signature import Signature

pytestmark = pytest.mark.anyio

NAME = "breast-cancer"
WITHIN = 20.0  # seconds for the writer thread to write, on a loaded machine


@cache
def inputs() -> list[dict[str, float]]:
    rows = example_rows(NAME).drop(columns="diagnosis").iloc[:40]
    return [{str(k): float(v) for k, v in row.items()} for row in rows.to_dict("records")]


def with_monitor(
    services: Services, store: ArtifactStore | None = None, **monitor: Any
) -> Services:
    """`services` with its project's `monitor` section changed (and another store)."""
    environ = {f"REFIT_MONITOR__{k.upper()}": str(v) for k, v in monitor.items()}
    project = load_project(services.project.root, environ)
    return dataclasses.replace(services, project=project, store=store or services.store)


@asynccontextmanager
async def running(services: Services) -> AsyncIterator[tuple[ServerApp, httpx.AsyncClient]]:
    """An app of `services` with its lifespan running (the followers and the log writer)."""
    app = create_app(ServerState.open(services, poll_interval=0.05))
    transport = httpx.ASGITransport(app)
    client = httpx.AsyncClient(transport=transport, base_url="http://refit")
    async with client, app.router.lifespan_context(app):
        yield app, client


def logged(services: Services) -> pd.DataFrame:
    logs = list_logs(services.registry, NAME, PREDICTIONS)
    return read_logs(services.store, logs)


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no {name} {labels} in /metrics")


async def metrics(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return response.text


async def until(what: str, check: Any) -> None:
    for _ in range(int(WITHIN / 0.02)):
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what}: not within {WITHIN:.0f} s")


async def predict(client: httpx.AsyncClient, i: int, rows: int) -> dict[str, Any]:
    """Request `i`: one record, or a batch of `rows` records, under the client's own id."""
    headers = {"X-Request-Id": f"client-{i}"}
    if rows == 1:
        response = await client.post("/predict", json=inputs()[i % 40], headers=headers)
    else:
        batch = {"records": [inputs()[(i + k) % 40] for k in range(rows)]}
        response = await client.post("/predict/batch", json=batch, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["id"] == response.headers["x-request-id"] == f"client-{i}"
    return body


async def test_every_row_of_concurrent_requests_is_logged_with_its_id_row_and_answer(
    services: Services,
) -> None:
    sizes = [1 if i % 3 else 4 for i in range(150)]
    async with running(with_monitor(services, flush_rows=64)) as (_, client):
        answers = await asyncio.gather(*(predict(client, i, rows) for i, rows in enumerate(sizes)))
    frame = logged(services)  # the shutdown wrote what was left
    assert len(frame) == sum(sizes)
    assert list(frame.columns) == predictions_schema(_signature(services)).names
    assert set(frame[VERSION]) == {1}
    assert frame[AT].dt.tz is not None
    by_id = frame.groupby(REQUEST_ID)
    assert len(by_id) == len(sizes)
    for i, (rows, answer) in enumerate(zip(sizes, answers, strict=True)):
        mine = by_id.get_group(f"client-{i}").sort_values(ROW)
        assert mine[ROW].tolist() == list(range(rows))
        labels = answer["predictions"] if rows > 1 else [answer["prediction"]]
        assert mine[PREDICTION].tolist() == [f'"{label}"' for label in labels]
        probabilities = answer["probabilities"] if rows > 1 else [answer["probabilities"]]
        for got, sent in zip(mine[PROBABILITIES], probabilities, strict=True):
            assert list(got) == pytest.approx([sent["benign"], sent["malignant"]])
        sent_inputs = [inputs()[(i + k) % 40] for k in range(rows)]
        radius = input_column("mean_radius")
        assert mine[radius].tolist() == [record["mean_radius"] for record in sent_inputs]
    logs = list_logs(services.registry, NAME, PREDICTIONS)
    assert sum(log.rows for log in logs) == sum(sizes)
    assert all(log.version == 1 and log.uri.startswith("predictions/") for log in logs)
    assert all(log.first_at <= log.last_at for log in logs)


def _signature(services: Services) -> Signature:
    return Signature.from_dict(services.registry.get_version(NAME, 1).signature)


async def test_a_sample_of_the_requests_is_logged_each_whole(services: Services) -> None:
    count, fraction, rows = 300, 0.25, 2
    async with running(with_monitor(services, sample=fraction)) as (_, client):
        for i in range(count):
            await predict(client, i, rows)
    frame = logged(services)
    per_request = frame.groupby(REQUEST_ID)[ROW].apply(sorted)
    assert all(rows_of == list(range(rows)) for rows_of in per_request)  # whole or not at all
    # Binomial(300, 0.25): mean 75, standard deviation 7.5; 40..110 is past 4.6 of them.
    assert 40 <= len(per_request) <= 110, len(per_request)


async def test_logging_off_logs_nothing(services: Services) -> None:
    async with running(with_monitor(services, log="false")) as (_, client):
        for i in range(5):
            await predict(client, i, 1)
        text = await metrics(client)
    assert list_logs(services.registry, NAME, PREDICTIONS) == []
    kinds = {
        sample.labels["kind"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "refit_prediction_log_capacity_rows"
    }
    assert kinds == {"feedback"}


async def test_a_full_buffer_drops_new_rows_counts_them_and_every_request_succeeds(
    services: Services,
) -> None:
    settings = {"buffer_rows": 5, "flush_rows": 1000, "flush_seconds": 3600}
    async with running(with_monitor(services, **settings)) as (_, client):
        for i in range(12):
            await predict(client, i, 1)
        text = await metrics(client)
        labels = {"model": NAME, "kind": PREDICTIONS}
        assert metric(text, "refit_prediction_log_capacity_rows", **labels) == 5
        assert metric(text, "refit_prediction_log_buffered_rows", **labels) == 5
        dropped = "refit_prediction_log_dropped_rows_total"
        assert metric(text, dropped, reason="buffer_full", **labels) == 7
        assert metric(text, dropped, reason="write_failed", **labels) == 0
    frame = logged(services)
    assert sorted(frame[REQUEST_ID]) == [f"client-{i}" for i in range(5)]  # the first ones


async def test_the_buffer_is_written_once_flush_rows_wait(services: Services) -> None:
    settings = {"flush_rows": 6, "flush_seconds": 3600}
    async with running(with_monitor(services, **settings)) as (_, client):
        for i in range(3):
            await predict(client, i, 2)  # 6 rows: the size is reached
        await until("a file of 6 rows", lambda: _rows_indexed(services) == [6])
        text = await metrics(client)
        labels = {"model": NAME, "kind": PREDICTIONS}
        assert metric(text, "refit_prediction_log_written_rows_total", **labels) == 6
        assert metric(text, "refit_prediction_log_files_total", **labels) == 1
        assert metric(text, "refit_prediction_log_buffered_rows", **labels) == 0


async def test_the_buffer_is_written_flush_seconds_after_its_oldest_row(
    services: Services,
) -> None:
    settings = {"flush_rows": 1000, "flush_seconds": 0.3}
    async with running(with_monitor(services, **settings)) as (_, client):
        await predict(client, 0, 1)
        await until("a file of the one row", lambda: _rows_indexed(services) == [1])
        await predict(client, 1, 3)
        await until("a second file", lambda: _rows_indexed(services) == [1, 3])


def _rows_indexed(services: Services) -> list[int]:
    return [log.rows for log in list_logs(services.registry, NAME, PREDICTIONS)]


async def test_shutdown_writes_what_is_buffered(services: Services) -> None:
    settings = {"flush_rows": 1000, "flush_seconds": 3600}
    async with running(with_monitor(services, **settings)) as (_, client):
        for i in range(7):
            await predict(client, i, 1)
        assert _rows_indexed(services) == []  # neither the size nor the time is reached
    assert _rows_indexed(services) == [7]


class BlockingStore:
    """The project's store, whose `put` waits until `release` is set."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self.url = store.url
        self.release = threading.Event()
        self.entered = threading.Event()

    def put(self, data: bytes, *, kind: str, suffix: str) -> ArtifactRef:
        self.entered.set()
        assert self.release.wait(60)
        return self.store.put(data, kind=kind, suffix=suffix)

    def get(self, uri: str, sha256: str) -> bytes:
        return self.store.get(uri, sha256)

    def exists(self, uri: str) -> bool:
        return self.store.exists(uri)

    def delete(self, uri: str) -> None:
        self.store.delete(uri)


async def test_requests_are_answered_while_the_store_blocks_the_writer(
    services: Services,
) -> None:
    store = BlockingStore(services.store)
    settings = {"flush_rows": 1, "flush_seconds": 3600}
    async with running(with_monitor(services, store, **settings)) as (_, client):
        await predict(client, 0, 1)
        assert await asyncio.to_thread(store.entered.wait, WITHIN)  # the writer is stuck
        answers = await asyncio.gather(*(predict(client, i, 2) for i in range(1, 41)))
        assert len(answers) == 40  # every one answered while the put waits
        assert (await client.get("/health/ready")).status_code == 200
        assert _rows_indexed(services) == []
        store.release.set()
    assert sum(_rows_indexed(services)) == 1 + 40 * 2


class FailingStore(BlockingStore):
    """The project's store, whose first `failures` puts fail."""

    def __init__(self, store: ArtifactStore, failures: int) -> None:
        super().__init__(store)
        self.failures = failures
        self.release.set()

    def put(self, data: bytes, *, kind: str, suffix: str) -> ArtifactRef:
        if self.failures > 0:
            self.failures -= 1
            raise ArtifactError("the bucket is unreachable")
        return super().put(data, kind=kind, suffix=suffix)


async def test_rows_a_failed_write_leaves_are_written_later_and_logged_once(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    store = FailingStore(services.store, failures=3)
    settings = {"flush_rows": 2, "flush_seconds": 0.05}
    with caplog.at_level(logging.INFO, "refit.serve"):
        async with running(with_monitor(services, store, **settings)) as (_, client):
            for i in range(4):
                await predict(client, i, 1)
            await until("the rows written", lambda: sum(_rows_indexed(services)) == 4)
            text = await metrics(client)
    labels = {"model": NAME, "kind": PREDICTIONS, "reason": "write_failed"}
    assert metric(text, "refit_prediction_log_dropped_rows_total", **labels) == 0
    failed = [r for r in caplog.records if "cannot write the predictions log" in r.message]
    assert len(failed) == 1, [r.message for r in failed]  # once for the streak of 3
    assert "the bucket is unreachable" in failed[0].message
    assert any("written again" in r.message for r in caplog.records)


async def test_rows_that_a_failing_store_leaves_no_room_for_are_dropped_and_counted(
    services: Services,
) -> None:
    store = FailingStore(services.store, failures=10**6)
    settings = {"buffer_rows": 4, "flush_rows": 4, "flush_seconds": 3600}
    labels = {"model": NAME, "kind": PREDICTIONS}
    dropped = "refit_prediction_log_dropped_rows_total"
    async with running(with_monitor(services, store, **settings)) as (app, client):
        for i in range(2):
            await predict(client, i, 2)  # 4 rows: written, which fails; kept for later
        text = ""

        async def kept() -> bool:
            nonlocal text
            text = await metrics(client)
            buffered = metric(text, "refit_prediction_log_buffered_rows", **labels)
            return store.failures < 10**6 and buffered == 4

        for _ in range(int(WITHIN / 0.02)):
            if await kept():
                break
            await asyncio.sleep(0.02)
        assert await kept()
        for i in range(2, 4):
            await predict(client, i, 2)  # no room left: dropped
        text = await metrics(client)
        assert metric(text, dropped, reason="buffer_full", **labels) == 4
        assert metric(text, dropped, reason="write_failed", **labels) == 0
    # At shutdown the last attempt fails too: what was kept is dropped, and counted.
    text = app.state.refit.metrics.render().decode()
    assert metric(text, dropped, reason="write_failed", **labels) == 4
    assert _rows_indexed(services) == []


async def test_each_file_is_valid_parquet_of_the_documented_schema(services: Services) -> None:
    async with running(with_monitor(services)) as (_, client):
        await predict(client, 0, 3)
    [log] = list_logs(services.registry, NAME, PREDICTIONS)
    table = pq.read_table(io.BytesIO(services.store.get(log.uri, log.sha256)))
    assert table.schema.equals(predictions_schema(_signature(services)))
    assert log.size_bytes == len(services.store.get(log.uri, log.sha256))
    assert log.instance and log.rows == 3 and np.all(table.column(ROW).to_numpy() == [0, 1, 2])


async def test_every_protocols_answers_are_logged_in_one_file_per_version(
    services: Services,
) -> None:
    record = inputs()[0]
    tensor = {"name": "x", "shape": [1, 30], "datatype": "FP64", "data": list(record.values())}
    columns = {"columns": list(record), "data": [list(record.values())] * 2}
    async with running(with_monitor(services)) as (_, client):
        await predict(client, 0, 1)
        v2 = await client.post(
            f"/v2/models/{NAME}/infer", json={"inputs": [tensor]}, headers={"X-Request-Id": "v2"}
        )
        mlflow = await client.post(
            "/invocations", json={"dataframe_split": columns}, headers={"X-Request-Id": "mlflow"}
        )
        assert v2.status_code == mlflow.status_code == 200
    [log] = list_logs(services.registry, NAME, PREDICTIONS)
    frame = logged(services)
    assert log.rows == len(frame) == 4
    assert sorted(frame[REQUEST_ID]) == ["client-0", "mlflow", "mlflow", "v2"]
    radius = input_column("mean_radius")
    assert frame[radius].tolist() == [record["mean_radius"]] * 4


async def test_a_regressors_answers_and_category_inputs_are_logged(regressor: Services) -> None:
    name = regressor.project.spec.name
    rows = example_rows(name).drop(columns="progression").iloc[:3]
    records = [dict(row) for row in rows.to_dict("records")]
    async with running(with_monitor(regressor)) as (_, client):
        answer = await client.post("/predict/batch", json={"records": records})
        assert answer.status_code == 200, answer.text
    frame = read_logs(regressor.store, list_logs(regressor.registry, name, PREDICTIONS))
    assert frame[PREDICTION].tolist() == pytest.approx(answer.json()["predictions"])
    assert frame[input_column("sex")].tolist() == [str(r["sex"]) for r in records]
    assert PROBABILITIES not in frame.columns
    assert frame[REQUEST_ID].tolist() == [answer.json()["id"]] * 3


def test_a_failed_write_keeps_the_oldest_rows_that_fit_beside_the_new_ones(
    services: Services,
) -> None:
    metrics = ServerMetrics()
    store = FailingStore(services.store, failures=1)
    signature = _signature(services)
    buffer = LogBuffer(
        NAME,
        PREDICTIONS,
        Destination(services.registry, store, "test"),
        metrics,
        capacity=5,
        flush_rows=4,
        flush_seconds=3600,
        signatures={1: signature}.__getitem__,
    )
    matrix = np.array([list(inputs()[0].values())] * 2)

    def entry(request_id: str) -> Any:
        labels = np.array(["benign", "benign"], dtype=object)
        predictions = Predictions(labels, np.array([[0.9, 0.1]] * 2), ("benign", "malignant"))
        return answered(request_id, 1.0, 1, MatrixColumns(matrix.copy()), predictions)

    assert buffer.add(entry("a"), 2) and buffer.add(entry("b"), 2)
    assert not buffer.add(entry("c"), 2)  # 6 rows: past the capacity
    taken = buffer.take()
    assert buffer.add(entry("d"), 2)  # arrives while "a" and "b" are being written
    buffer._put_back(taken)  # as a failed write does: room for "a" only
    text = metrics.render().decode()
    labels = {"model": NAME, "kind": PREDICTIONS}
    dropped = "refit_prediction_log_dropped_rows_total"
    assert metric(text, dropped, reason="write_failed", **labels) == 2
    assert metric(text, dropped, reason="buffer_full", **labels) == 2
    assert metric(text, "refit_prediction_log_buffered_rows", **labels) == 4
    buffer.write()
    frame = read_logs(services.store, list_logs(services.registry, NAME, PREDICTIONS))
    assert frame.empty  # the store failed once
    buffer.write()
    frame = read_logs(services.store, list_logs(services.registry, NAME, PREDICTIONS))
    assert frame[REQUEST_ID].tolist() == ["a", "a", "d", "d"]
