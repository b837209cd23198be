"""Micro-batching: every caller gets its own answers; the queue is bounded."""

from __future__ import annotations

import asyncio
import threading

import pytest

from refit.errors import ServiceUnavailableError
from refit.serve.batching import MicroBatcher
from refit.serve.predictor import Predictions
from refit.serve.records import Columns

pytestmark = pytest.mark.anyio


class Echo:
    """Answers each row with its own input, and remembers the size of every call."""

    runtime = "onnx"  # called inline, on the event loop

    def __init__(self, tag: str = "") -> None:
        self.tag = tag
        self.calls: list[int] = []

    def predict(self, columns: Columns) -> Predictions:
        self.calls.append(len(columns[0]))
        labels = [f"{self.tag}{x}" for x in columns[0]]
        return Predictions(labels, [{"x": float(x)} for x in columns[0]])


class Slow(Echo):
    """Runs in a thread and holds each call until released."""

    runtime = "native"

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
        assert answer.labels == [str(x) for x in cols[0]]
        assert answer.probabilities == [{"x": float(x)} for x in cols[0]]
    assert sum(echo.calls) == sum(len(c[0]) for c in inputs)
    assert max(echo.calls) <= 64
    assert len(echo.calls) < 200 / 4, "concurrent callers were answered in batches"
    await batcher.close()


async def test_a_lone_caller_is_answered_at_once_without_waiting() -> None:
    echo = Echo()
    batcher = MicroBatcher(max_batch_size=64)
    answer = await asyncio.wait_for(batcher.predict(echo, [[7]]), timeout=1)
    assert answer.labels == ["7"] and echo.calls == [1]
    await batcher.close()


async def test_a_batch_bigger_than_the_limit_goes_alone() -> None:
    echo = Echo()
    batcher = MicroBatcher(max_batch_size=8)
    big, small = [list(range(100))], [[1000]]
    one, two = await asyncio.gather(batcher.predict(echo, big), batcher.predict(echo, small))
    assert len(one.labels) == 100 and two.labels == ["1000"]
    assert sorted(echo.calls) == [1, 100]
    await batcher.close()


async def test_rows_of_different_models_are_never_mixed() -> None:
    old, new = Echo("old-"), Echo("new-")
    batcher = MicroBatcher(max_batch_size=64)
    calls = [batcher.predict(old if i % 2 else new, [[i]]) for i in range(20)]
    answers = await asyncio.gather(*calls)
    for i, answer in enumerate(answers):
        assert answer.labels == [f"{'old' if i % 2 else 'new'}-{i}"]
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
    assert [a.labels for a in answers] == [[str(i)] for i in range(11)]
    await batcher.close()


async def test_a_slow_call_does_not_hold_up_the_next_batch() -> None:
    slow, echo = Slow(), Echo()
    echo.runtime = "native"
    batcher = MicroBatcher(max_batch_size=4, concurrency=2)
    held = asyncio.ensure_future(batcher.predict(slow, [[1]]))
    await asyncio.sleep(0.05)
    assert (await asyncio.wait_for(batcher.predict(echo, [[2]]), timeout=5)).labels == ["2"]
    assert not held.done()
    slow.release.set()
    assert (await held).labels == ["1"]
    await batcher.close()


async def test_a_model_error_reaches_every_caller_of_its_batch() -> None:
    batcher = MicroBatcher(max_batch_size=64)
    broken = Broken()
    results = await asyncio.gather(
        *(batcher.predict(broken, [[i]]) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, ValueError) for r in results)
    assert (await batcher.predict(Echo(), [[1]])).labels == ["1"], "the batcher carries on"
    await batcher.close()


async def test_an_idle_server_takes_a_request_bigger_than_the_queue_bound() -> None:
    echo = Echo()
    batcher = MicroBatcher(max_batch_size=64, max_queue_rows=10)
    answer = await batcher.predict(echo, [list(range(50))])
    assert len(answer.labels) == 50
    await batcher.close()
