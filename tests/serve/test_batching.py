"""Micro-batching: every caller gets its own answers; the queue is bounded."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from refit.errors import ServiceUnavailableError
from refit.predictions import Columns, Predictions
from refit.serve.batching import MicroBatcher, ModelFailure

pytestmark = pytest.mark.anyio


class Echo:
    """Answers each row with its own input, and remembers the size of every call."""

    quick = True  # called inline, on the event loop

    def __init__(self, tag: str = "") -> None:
        self.tag = tag
        self.calls: list[int] = []

    def predict(self, columns: Columns) -> Predictions:
        self.calls.append(len(columns[0]))
        labels = [f"{self.tag}{x}" for x in columns[0]]
        proba = np.array([[float(x)] for x in columns[0]]).reshape(-1, 1)
        return Predictions(np.array(labels), proba, ("x",))


class Slow(Echo):
    """Runs in a thread and holds each call until released."""

    quick = False

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def predict(self, columns: Columns) -> Predictions:
        self.release.wait(10)
        return super().predict(columns)


class Broken(Echo):
    def predict(self, columns: Columns) -> Predictions:
        raise ValueError("the model broke")


async def test_concurrent_callers_each_get_their_own_answers_in_batches() -> None:
    echo = Echo()
    batcher = MicroBatcher(max_batch_size=64)
    # 200 callers with distinct inputs, one to three rows each, all at once.
    inputs = [[list(range(i * 10, i * 10 + 1 + i % 3))] for i in range(200)]
    answers = await asyncio.gather(*(batcher.predict(echo, cols) for cols in inputs))
    for cols, answer in zip(inputs, answers, strict=True):
        assert answer.label_list() == [str(x) for x in cols[0]]
        assert answer.probability_maps() == [{"x": float(x)} for x in cols[0]]
    assert sum(echo.calls) == sum(len(c[0]) for c in inputs)
    assert max(echo.calls) <= 64
    assert len(echo.calls) < 200 / 4, "concurrent callers were answered in batches"
    await batcher.close()


async def test_a_lone_caller_is_answered_at_once_without_waiting() -> None:
    echo = Echo()
    batcher = MicroBatcher(max_batch_size=64)
    answer = await asyncio.wait_for(batcher.predict(echo, [[7]]), timeout=1)
    assert answer.label_list() == ["7"] and echo.calls == [1]
    await batcher.close()


async def test_a_batch_bigger_than_the_limit_goes_alone() -> None:
    echo = Echo()
    batcher = MicroBatcher(max_batch_size=8)
    big, small = [list(range(100))], [[1000]]
    one, two = await asyncio.gather(batcher.predict(echo, big), batcher.predict(echo, small))
    assert len(one) == 100 and two.label_list() == ["1000"]
    assert sorted(echo.calls) == [1, 100]
    await batcher.close()


async def test_rows_of_different_models_are_never_mixed() -> None:
    old, new = Echo("old-"), Echo("new-")
    batcher = MicroBatcher(max_batch_size=64)
    calls = [batcher.predict(old if i % 2 else new, [[i]]) for i in range(20)]
    answers = await asyncio.gather(*calls)
    for i, answer in enumerate(answers):
        assert answer.label_list() == [f"{'old' if i % 2 else 'new'}-{i}"]
    await batcher.close()


async def test_past_the_queue_bound_callers_are_refused_at_once() -> None:
    slow = Slow()
    batcher = MicroBatcher(max_batch_size=4, max_queue_rows=10, concurrency=1)
    first = asyncio.ensure_future(batcher.predict(slow, [[0]]))
    await asyncio.sleep(0.05)  # the first call is now in the model, holding the only slot
    waiting = [asyncio.ensure_future(batcher.predict(slow, [[i]])) for i in range(1, 11)]
    await asyncio.sleep(0.05)
    with pytest.raises(ServiceUnavailableError, match="at capacity"):
        await batcher.predict(slow, [[99]])
    slow.release.set()
    answers = await asyncio.gather(first, *waiting)
    assert [a.label_list() for a in answers] == [[str(i)] for i in range(11)]
    await batcher.close()


async def test_a_slow_call_does_not_hold_up_the_next_batch() -> None:
    slow, echo = Slow(), Echo()
    echo.quick = False
    batcher = MicroBatcher(max_batch_size=4, concurrency=2)
    held = asyncio.ensure_future(batcher.predict(slow, [[1]]))
    await asyncio.sleep(0.05)
    assert (await asyncio.wait_for(batcher.predict(echo, [[2]]), timeout=5)).label_list() == ["2"]
    assert not held.done()
    slow.release.set()
    assert (await held).label_list() == ["1"]
    await batcher.close()


async def test_a_model_error_reaches_every_caller_of_its_batch_each_alone() -> None:
    batcher = MicroBatcher(max_batch_size=64)
    broken = Broken()
    results = await asyncio.gather(
        *(batcher.predict(broken, [[i]]) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, ModelFailure) for r in results)
    assert all(isinstance(r.error, ValueError) for r in results if isinstance(r, ModelFailure))
    assert len({id(r) for r in results}) == 5, "each caller has its own error"
    assert (await batcher.predict(Echo(), [[1]])).label_list() == ["1"], "the batcher carries on"
    await batcher.close()


class NoNulls(Echo):
    """Raises on any missing value, as a scikit-learn estimator without an imputer does."""

    def predict(self, columns: Columns) -> Predictions:
        self.calls.append(len(columns[0]))
        if any(x is None for x in columns[0]):
            raise ValueError("Input X contains NaN.")
        return Predictions(np.array([str(x) for x in columns[0]]))


async def test_only_the_requests_whose_rows_fail_fail_and_the_search_is_logarithmic() -> None:
    model = NoNulls()
    batcher = MicroBatcher(max_batch_size=64)
    bad = {5, 40}
    inputs = [[[i, None] if i in bad else [i]] for i in range(64)]
    results = await asyncio.gather(
        *(batcher.predict(model, cols) for cols in inputs), return_exceptions=True
    )
    for i, result in enumerate(results):
        if i in bad:
            assert isinstance(result, ModelFailure), result
            assert str(result) == "ValueError: Input X contains NaN."
        else:
            assert isinstance(result, Predictions) and result.label_list() == [str(i)]
    # Two failing requests among 64 in one batch: a bisection (at most 1 + 2 * 2 * 6 calls),
    # not one call per request.
    assert 1 < len(model.calls) <= 25, model.calls
    await batcher.close()


class Sleepy(Echo):
    """An ONNX-like model whose big calls take long (and release the GIL, as ONNX Runtime
    does); remembers which thread ran each call."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def predict(self, columns: Columns) -> Predictions:
        self.threads.append(threading.get_ident())
        if len(columns[0]) > 1000:
            time.sleep(1.0)
        return super().predict(columns)


async def test_a_big_call_runs_off_the_event_loop_while_small_ones_are_answered() -> None:
    model = Sleepy()
    batcher = MicroBatcher(max_batch_size=64, max_inline_rows=64)
    loop_thread = threading.get_ident()
    big = asyncio.ensure_future(batcher.predict(model, [list(range(10_000))]))
    await asyncio.sleep(0.05)
    assert not big.done()
    start = time.monotonic()
    small = await asyncio.wait_for(batcher.predict(model, [[7]]), timeout=5)
    assert small.label_list() == ["7"]
    assert time.monotonic() - start < 0.5, "the small request waited for the big call"
    assert not big.done(), "the small request was answered while the big call ran"
    assert len(await big) == 10_000
    assert model.threads[0] != loop_thread, "the big call ran in a thread"
    assert model.threads[1] == loop_thread, "a small ONNX call runs on the loop"
    await batcher.close()


async def test_an_idle_server_takes_a_request_bigger_than_the_queue_bound() -> None:
    echo = Echo()
    batcher = MicroBatcher(max_batch_size=64, max_queue_rows=10)
    answer = await batcher.predict(echo, [list(range(50))])
    assert len(answer) == 50
    await batcher.close()
