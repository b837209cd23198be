"""Following production: not ready until a version is promoted, swaps on promotion and
rollback, requests finish on the model they started with, and a version that cannot be served
is refused, shown, and retried with back-off while the server keeps what it has."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import httpx
import joblib
import pandas as pd
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression

from refit.flavors import save_model
from refit.predictions import Predictions, Predictor
from refit.registry import PRODUCTION
from refit.registry.heartbeats import list_servers
from refit.serve import follower
from refit.serve.app import create_app
from refit.serve.follower import _settle_heap as settle_heap
from refit.serve.state import ServerState
from refit.services import Services
from refit.spec import ArtifactFormat
from refit.train.promotion import promote_version, rollback

pytestmark = pytest.mark.anyio

NAME = "breast-cancer"
AddVersion = Callable[..., int]


def request(services: Services) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((services.project.root / "request.json").read_text())
    return loaded


@asynccontextmanager
async def connect(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://refit") as client:
        yield client


def metric(text: str, name: str) -> float:
    """The value of a metric of the served model."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == {"model": NAME}:
                return sample.value
    raise AssertionError(f"no {name} in the metrics")


async def status(client: httpx.AsyncClient) -> dict[str, Any]:
    """What a person looking at the server sees: the model, the answers, the metrics."""
    described = (await client.get(f"/v1/models/{NAME}")).json()
    served = described["served"]
    metrics = (await client.get("/metrics")).text
    return {
        "ready": (await client.get("/health/ready")).status_code,
        "served": served["version"] if served else None,
        "refused": described["refused"],
        "failures": metric(metrics, "refit_model_load_failures_total"),
        "refused_version": metric(metrics, "refit_model_refused_version"),
        "version_metric": metric(metrics, "refit_model_version"),
    }


async def answered_by(client: httpx.AsyncClient, record: dict[str, Any]) -> int:
    response = await client.post(f"/v1/models/{NAME}/predict", json=record)
    assert response.status_code == 200, response.text
    version: int = response.json()["version"]
    return version


# --- before production ------------------------------------------------------------------------


async def test_before_any_production_version_it_is_live_not_ready_and_predictions_wait(
    unpromoted: Services,
) -> None:
    state = ServerState.open(unpromoted)
    record = request(unpromoted)
    async with connect(create_app(state)) as client:
        assert await state.follower.check() is False
        live = await client.get("/health/live")
        assert (live.status_code, live.json()) == (200, {"status": "live"})
        ready = await client.get("/health/ready")
        assert (ready.status_code, ready.json()) == (503, {"status": "not ready", "model": NAME})
        for path in ("/predict", f"/v1/models/{NAME}/predict"):
            waiting = await client.post(path, json=record)
            assert waiting.status_code == 503
            assert waiting.headers["retry-after"] == "1"
            error = waiting.json()["error"]
            assert error["code"] == "unavailable"
            assert error["message"] == f"{NAME} is not ready: no version holds production yet"
        batch = await client.post("/predict/batch", json={"records": [record]})
        assert batch.status_code == 503
        [described] = (await client.get("/v1/models")).json()["models"]
        assert (described["ready"], described["served"], described["refused"]) == (
            False,
            None,
            None,
        )
        assert metric((await client.get("/metrics")).text, "refit_model_version") == 0

        # Promoted: the same server, not restarted, answers at its next look.
        promote_version(unpromoted.registry, NAME, 1, "test", store=unpromoted.store)
        assert await state.follower.check() is True
        ready = await client.get("/health/ready")
        assert (ready.status_code, ready.json()["version"]) == (200, 1)
        assert await answered_by(client, record) == 1


async def test_the_lifespan_follows_production_and_drains_on_shutdown(
    unpromoted: Services,
) -> None:
    state = ServerState.open(unpromoted, poll_interval=0.01)
    app = create_app(state)
    async with connect(app) as client:
        async with app.router.lifespan_context(app):
            assert (await client.get("/health/ready")).status_code == 503
            promote_version(unpromoted.registry, NAME, 1, "test", store=unpromoted.store)
            for _ in range(1000):
                ready = await client.get("/health/ready")
                if ready.status_code == 200:
                    break
                await asyncio.sleep(0.01)
            assert (ready.status_code, ready.json()["version"]) == (200, 1)
            assert await answered_by(client, request(unpromoted)) == 1
        drained = await client.get("/health/ready")
        assert (drained.status_code, drained.json()) == (503, {"status": "draining"})
        assert (await client.get("/health/live")).status_code == 200


async def test_a_first_production_version_that_cannot_load_leaves_the_server_unready(
    unpromoted: Services, add_version: AddVersion
) -> None:
    broken = add_version(artifact=b"not a model")
    promote_version(unpromoted.registry, NAME, broken, "test", store=unpromoted.store)
    state = ServerState.open(unpromoted)
    async with connect(create_app(state)) as client:
        assert await state.follower.check() is False
        waiting = await client.post("/predict", json=request(unpromoted))
        assert waiting.status_code == 503
        message = waiting.json()["error"]["message"]
        assert message.startswith(
            f"{NAME} is not ready: v{broken} failed to load: artifact error: "
        )
        assert message.endswith(", retrying in 2s")
        seen = await status(client)
        assert (seen["ready"], seen["served"], seen["refused"]["version"]) == (503, None, broken)
        assert (seen["failures"], seen["refused_version"]) == (1, broken)


async def test_a_retry_of_a_version_that_failed_keeps_saying_why_it_failed(
    unpromoted: Services, add_version: AddVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = add_version(artifact=b"not a model")
    promote_version(unpromoted.registry, NAME, broken, "test", store=unpromoted.store)
    state = ServerState.open(unpromoted)
    follower = state.follower
    assert await follower.check() is False
    assert follower.failure is not None
    follower.failure.retry_at = 0.0  # the backoff is over: the next check retries
    release, entered = threading.Event(), threading.Event()
    real = follower._load

    def slow_load(version: int) -> Any:
        entered.set()
        release.wait(10)
        return real(version)

    monkeypatch.setattr(follower, "_load", slow_load)
    retrying = asyncio.create_task(follower.check())
    await asyncio.to_thread(entered.wait, 10)
    assert follower.loading == broken
    said = follower.waiting()
    assert said.startswith(f"v{broken} failed to load: artifact error: ")
    assert said.endswith(", retrying now")
    release.set()
    assert await retrying is False


# --- swaps --------------------------------------------------------------------------------------


async def test_it_swaps_on_promotion_and_on_rollback(
    services: Services, add_version: AddVersion
) -> None:
    second = add_version(metrics={"roc_auc": 0.999})
    state = ServerState.open(services)
    record = request(services)
    async with connect(create_app(state)) as client:
        assert await state.follower.check() is True
        assert await answered_by(client, record) == 1
        assert await state.follower.check() is False, "nothing moved: nothing to do"

        promote_version(services.registry, NAME, second, "test", store=services.store)
        assert await state.follower.check() is True
        assert await answered_by(client, record) == second
        described = (await client.get("/v1/models")).json()["models"][0]
        assert described["served"]["version"] == second
        assert described["served"]["metrics"] == {"roc_auc": 0.999}
        metrics = (await client.get("/metrics")).text
        assert metric(metrics, "refit_model_version") == second
        assert metric(metrics, "refit_model_swaps_total") == 1

        rollback(services.registry, NAME, "test", store=services.store)
        assert await state.follower.check() is True
        assert await answered_by(client, record) == 1
        batch = await client.post("/predict/batch", json={"records": [record, record]})
        assert batch.json()["version"] == 1
        metrics = (await client.get("/metrics")).text
        assert metric(metrics, "refit_model_version") == 1
        assert metric(metrics, "refit_model_swaps_total") == 2


class Held:
    """A predictor that, once called, answers only when released."""

    def __init__(self, inner: Predictor) -> None:
        self.inner = inner
        self.called = threading.Event()
        self.released = threading.Event()

    def predict(self, frame: pd.DataFrame) -> Predictions:
        self.called.set()
        if not self.released.wait(10):
            raise TimeoutError("never released")
        return self.inner.predict(frame)


async def test_a_request_started_before_a_swap_finishes_on_the_old_version(
    services: Services, add_version: AddVersion
) -> None:
    second = add_version()
    state = ServerState.open(services)
    record = request(services)
    assert await state.follower.check()
    first = state.follower.current
    assert first is not None
    held = first.predictor = Held(first.predictor)
    async with connect(create_app(state)) as client:
        started = asyncio.create_task(client.post("/predict", json=record))
        try:
            assert await asyncio.to_thread(held.called.wait, 10)
            promote_version(services.registry, NAME, second, "test", store=services.store)
            assert await state.follower.check() is True
            assert await answered_by(client, record) == second
            assert not started.done()
        finally:
            held.released.set()
        finished = await started
    assert finished.status_code == 200, finished.text
    assert finished.json()["version"] == 1


async def test_a_replaced_model_is_freed_once_requests_move_on_without_a_collection(
    services: Services, add_version: AddVersion
) -> None:
    # The heap is frozen out of the collector's sight between swaps: a replaced model is
    # freed by reference counting, or not before the next swap's collection.
    onnx = services.registry.get_version(NAME, 1).onnx
    plan = [add_version(), add_version(onnx=onnx)]  # served natively, then by ONNX Runtime
    state = ServerState.open(services)
    record = request(services)
    replaced_runtimes = []
    async with connect(create_app(state)) as client:
        assert await state.follower.check()
        assert await answered_by(client, record) == 1
        gc.disable()  # only reference counting frees anything from here
        try:
            for version in plan:
                replaced = state.follower.current
                assert replaced is not None
                replaced_runtimes.append(replaced.runtime)
                held = [weakref.ref(replaced), weakref.ref(replaced.predictor)]
                del replaced
                promote_version(services.registry, NAME, version, "test", store=services.store)
                assert await state.follower.check() is True
                assert await answered_by(client, record) == version
                assert [ref() for ref in held] == [None, None], f"v{version} kept its predecessor"
        finally:
            gc.enable()
    assert replaced_runtimes == ["onnx", "native"]


def test_after_a_swap_the_heap_is_collected_then_frozen() -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    left = Cycle()
    freed = weakref.ref(left)
    del left
    gc.freeze()  # garbage only a collection frees, hidden from it by the last swap's freeze
    try:
        assert freed() is not None
        settle_heap()  # the real one: the fixture quick_swaps stubs follower's
        assert freed() is None
        assert gc.get_freeze_count() > 1000  # every live object: libraries, this test
    finally:
        gc.unfreeze()


# --- refusals -----------------------------------------------------------------------------------


def missing_artifact(services: Services, add_version: AddVersion) -> int:
    return add_version(artifact_uri=f"models/00/{'0' * 64}.joblib")


def corrupt_artifact(services: Services, add_version: AddVersion) -> int:
    version = add_version(artifact=b"the bytes whose checksum is recorded")
    uri = services.registry.get_version(NAME, version).artifact_uri
    (services.project.root / ".refit" / "artifacts" / uri).write_bytes(b"other bytes")
    return version


def not_a_model(services: Services, add_version: AddVersion) -> int:
    return add_version(artifact=b"not a model")


def fails_warm_up(services: Services, add_version: AddVersion) -> int:
    unfitted = save_model(LogisticRegression(), ArtifactFormat.JOBLIB)
    return add_version(artifact=unfitted)


def other_inputs(services: Services, add_version: AddVersion) -> int:
    signature = services.registry.get_version(NAME, 1).signature
    inputs = [{**signature["inputs"][0], "name": "radius"}, *signature["inputs"][1:]]
    return add_version(signature={**signature, "inputs": inputs})


def unknown_format(services: Services, add_version: AddVersion) -> int:
    return add_version(format="pickle5")


def malformed_signature(services: Services, add_version: AddVersion) -> int:
    signature = services.registry.get_version(NAME, 1).signature
    inputs = [{**column, "min": "0"} for column in signature["inputs"]]
    return add_version(signature={**signature, "inputs": inputs})


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (missing_artifact, "is missing"),
        (corrupt_artifact, "is corrupt"),
        (not_a_model, "cannot load a joblib artifact"),
        (fails_warm_up, "failed its warm-up"),
        (other_inputs, "takes different inputs (radius, mean_texture"),
        (unknown_format, "'pickle5'"),
        (malformed_signature, "TypeError"),
    ],
)
async def test_a_version_that_cannot_be_served_is_refused_and_shown_and_the_old_one_answers(
    services: Services,
    add_version: AddVersion,
    make: Callable[[Services, AddVersion], int],
    error: str,
    force_production: Callable[[int], None],
) -> None:
    bad = make(services, add_version)
    state = ServerState.open(services)
    record = request(services)
    async with connect(create_app(state)) as client:
        assert await state.follower.check() is True
        force_production(bad)
        assert await state.follower.check() is False
        assert await answered_by(client, record) == 1
        seen = await status(client)
        refused = seen.pop("refused")
        assert seen == {
            "ready": 200,
            "served": 1,
            "failures": 1,
            "refused_version": bad,
            "version_metric": 1,
        }
        assert (refused["version"], refused["attempts"]) == (bad, 1)
        assert error in refused["error"]


class Clock:
    """`time` as the follower sees it, with a monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return time.time()


async def test_a_refused_version_is_retried_with_back_off_until_it_loads(
    services: Services,
    add_version: AddVersion,
    monkeypatch: pytest.MonkeyPatch,
    force_production: Callable[[int], None],
) -> None:
    clock = Clock()
    monkeypatch.setattr(follower, "time", clock)
    first = services.registry.get_version(NAME, 1)
    model = joblib.load(io.BytesIO(services.store.get(first.artifact_uri, first.artifact_sha256)))
    buffer = io.BytesIO()
    joblib.dump(model, buffer, compress=1)  # the same model in a file of its own
    valid = buffer.getvalue()
    second = add_version(artifact=valid)
    uri = services.registry.get_version(NAME, second).artifact_uri
    assert uri != first.artifact_uri
    stored = services.project.root / ".refit" / "artifacts" / uri
    stored.unlink()  # not there yet, as in an object store that has not caught up

    state = ServerState.open(services, poll_interval=1.0)
    record = request(services)
    async with connect(create_app(state)) as client:
        assert await state.follower.check() is True
        force_production(second)
        attempts = []
        for now in (1000.0, 1000.5, 1001.0, 1002.9, 1003.0, 1006.9, 1007.0):
            clock.now = now
            assert await state.follower.check() is False
            seen = await status(client)
            attempts.append((now, seen["refused"]["attempts"], seen["failures"]))
            assert seen["served"] == 1
        # Waits of 1, 2 and 4 poll intervals between the attempts.
        assert attempts == [
            (1000.0, 1, 1),
            (1000.5, 1, 1),
            (1001.0, 2, 2),
            (1002.9, 2, 2),
            (1003.0, 3, 3),
            (1006.9, 3, 3),
            (1007.0, 4, 4),
        ]
        assert state.follower.failure is not None

        stored.write_bytes(valid)  # the artifact arrives
        clock.now = 1014.9
        assert await state.follower.check() is False, "not before its retry time"
        clock.now = 1015.0
        assert await state.follower.check() is True
        assert await answered_by(client, record) == second
        seen = await status(client)
        assert (seen["served"], seen["refused"], seen["refused_version"]) == (second, None, 0)
        assert seen["failures"] == 4


async def test_a_newer_version_is_tried_at_once_whatever_the_back_off_of_a_refused_one(
    services: Services, add_version: AddVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(follower, "time", Clock())
    broken, good = add_version(artifact=b"not a model"), add_version()
    state = ServerState.open(services, poll_interval=60)
    async with connect(create_app(state)) as client:
        assert await state.follower.check() is True
        promote_version(services.registry, NAME, broken, "test", store=services.store)
        assert await state.follower.check() is False
        promote_version(services.registry, NAME, good, "test", store=services.store)
        assert await state.follower.check() is True
        seen = await status(client)
        assert (seen["served"], seen["refused"], seen["refused_version"]) == (good, None, 0)


async def test_rolling_back_from_a_refused_version_clears_the_refusal(
    services: Services, add_version: AddVersion
) -> None:
    broken = add_version(artifact=b"not a model")
    state = ServerState.open(services)
    async with connect(create_app(state)) as client:
        assert await state.follower.check() is True
        promote_version(services.registry, NAME, broken, "test", store=services.store)
        assert await state.follower.check() is False
        assert (await status(client))["refused_version"] == broken

        rollback(services.registry, NAME, "test", store=services.store)
        assert services.registry.alias_version(NAME, PRODUCTION) == 1
        assert await state.follower.check() is False, "v1 is already served"
        seen = await status(client)
        assert (seen["served"], seen["refused"], seen["refused_version"]) == (1, None, 0)
        assert seen["failures"] == 1


async def test_the_follower_keeps_following_after_an_unexpected_error(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = ServerState.open(services, poll_interval=0.01)
    real = services.registry.alias_version
    calls = SimpleNamespace(count=0)

    def flaky(name: str, alias: str = PRODUCTION) -> int | None:
        calls.count += 1
        if calls.count == 1:
            raise RuntimeError("a surprise from the database driver")
        return real(name, alias)

    monkeypatch.setattr(services.registry, "alias_version", flaky)
    task = asyncio.create_task(state.follower.run())
    try:
        for _ in range(1000):
            if state.follower.current is not None:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert state.follower.current is not None and state.follower.current.version == 1
    assert calls.count >= 2


async def test_the_heap_is_settled_once_at_the_poll_after_each_swap(
    services: Services, add_version: AddVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = ServerState.open(services, poll_interval=0.01)
    settled: list[int | None] = []

    def settle() -> None:
        current = state.follower.current
        settled.append(current.version if current is not None else None)

    monkeypatch.setattr(follower, "_settle_heap", settle)

    async def until(condition: Callable[[], bool]) -> None:
        for _ in range(1000):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("timed out")

    task = asyncio.create_task(state.follower.run())
    try:
        await until(lambda: settled == [1])
        second = add_version()
        promote_version(services.registry, NAME, second, "test", store=services.store)
        await until(lambda: len(settled) == 2)
        await asyncio.sleep(0.1)  # polls that swap nothing settle nothing
    finally:
        task.cancel()
    assert settled == [1, second]


# --- what it reports --------------------------------------------------------------------------


async def test_the_503_before_the_first_load_says_a_version_is_loading(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = ServerState.open(services)
    release, entered = threading.Event(), threading.Event()
    real = state.follower._load

    def slow_load(version: int) -> Any:
        entered.set()
        release.wait(10)
        return real(version)

    monkeypatch.setattr(state.follower, "_load", slow_load)
    async with connect(create_app(state)) as client:
        before = await client.post("/predict", json=request(services))
        assert before.json()["error"]["message"] == (
            f"{NAME} is not ready: reading which version holds production"
        )
        checking = asyncio.create_task(state.follower.check())
        await asyncio.to_thread(entered.wait, 10)
        waiting = await client.post("/predict", json=request(services))
        assert (waiting.status_code, waiting.json()["error"]["message"]) == (
            503,
            f"{NAME} is not ready: loading v1",
        )
        described = (await client.get(f"/v1/models/{NAME}")).json()
        assert (described["production"], described["serving"], described["reason"]) == (
            1,
            None,
            "loading v1",
        )
        release.set()
        assert await checking is True
        described = (await client.get(f"/v1/models/{NAME}")).json()
        assert (described["production"], described["serving"], described["reason"]) == (1, 1, None)


async def test_the_follower_writes_its_heartbeat_and_removes_it_when_it_stops(
    services: Services, add_version: AddVersion, force_production: Callable[[int], None]
) -> None:
    state = ServerState.open(services, poll_interval=0.01)
    app = create_app(state)

    async def reported() -> list[Any]:
        return await asyncio.to_thread(list_servers, services.registry, NAME)

    async def until(check: Callable[[list[Any]], bool]) -> list[Any]:
        for _ in range(1000):
            rows = await reported()
            if check(rows):
                return rows
            await asyncio.sleep(0.01)
        raise AssertionError(f"the heartbeat never showed it: {rows}")

    async with connect(app), app.router.lifespan_context(app):
        [row] = await until(lambda rows: len(rows) == 1 and rows[0].version == 1)
        assert (row.refused_version, row.refused_error, row.pid) == (None, None, os.getpid())
        broken = add_version(artifact=b"not a model")
        force_production(broken)
        [row] = await until(lambda rows: rows[0].refused_version == broken)
        assert row.version == 1
        assert (
            row.refused_error is not None and "cannot load a joblib artifact" in row.refused_error
        )
    assert await reported() == []
