"""Adaptive micro-batching: concurrent requests' rows answered by one call of the model.

One call on 64 rows costs about what one call on a single row costs, so under load the
server gathers what is waiting into one call. It never waits for company by default: the rows
that arrived while the previous call ran make the next batch, so a lone request is answered
at once and a crowd is answered in batches (`max_delay` adds a bounded wait, if measured to
help). An idle batcher answers the first request of a turn of the event loop with a quick
predictor in place, with no hop to its task: the cost of one request alone is the model's call.
Every caller gets exactly its own rows' answers. The queue is bounded: past
`max_queue_rows` waiting rows a request is refused at once with 503 and Retry-After rather than
left to wait without limit.

A failure stays with the request that caused it: when a merged call raises (a null the model
cannot take, a value it refuses, NaN in its answer), the batch is split in halves and each is
predicted on its own, down to the requests that fail alone, which get a `ModelFailure`; every
other request gets the answers its own rows get. k failing requests among n cost O(k log n)
calls.

Items carry the predictor they started with, so a request finishes on the model it began on
even when a swap happens while it waits; one batcher serves every version of a server. A quick
predictor's call (ONNX Runtime: tens of microseconds, less than a hop to a thread) of at most
`max_inline_rows` rows runs on the event loop; other calls and bigger ones run in a thread, so
the loop keeps answering other connections and health probes meanwhile. Up to `concurrency`
calls may be in flight, so one slow call does not hold up the requests behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from refit.errors import RefitError, ServiceUnavailableError
from refit.predictions import Columns, Predictions, Predictor, joined


@dataclass
class _Item:
    predictor: Predictor
    columns: Columns
    rows: int
    future: asyncio.Future[Predictions] | None


class ModelFailure(Exception):
    """The model failed on one request's own rows, predicted apart from any other request's;
    `error` is what it raised."""

    def __init__(self, error: Exception) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error


Outcome = Predictions | ModelFailure


Counted = Callable[[Predictions], None]
"""What is told of each successful call of the model (its predictions, all rows at once)."""


def predict_apart(
    predictor: Predictor, items: list[_Item], counted: Counted | None = None
) -> list[Outcome]:
    """Each item's answers from one call on their merged rows; if that call raises, each half
    of the items is predicted on its own, recursively (depth log2 of the items), so an item
    fails only when its own rows fail. `counted` is called with each successful call's
    predictions."""
    try:
        predictions = predictor.predict(joined([item.columns for item in items]))
    except Exception as exc:
        if len(items) == 1:
            return [ModelFailure(exc)]
        middle = len(items) // 2
        return predict_apart(predictor, items[:middle], counted) + predict_apart(
            predictor, items[middle:], counted
        )
    if counted is not None:
        counted(predictions)
    if len(items) == 1:
        return [predictions]
    outcomes: list[Outcome] = []
    start = 0
    for item in items:
        outcomes.append(predictions.rows(start, start + item.rows))
        start += item.rows
    return outcomes


class MicroBatcher:
    """Batches concurrent `predict` calls; create it inside the running event loop's app."""

    def __init__(
        self,
        *,
        max_batch_size: int = 64,
        max_delay: float = 0.0,
        max_queue_rows: int = 4096,
        inline: Callable[[Predictor], bool] = lambda p: getattr(p, "quick", False),
        max_inline_rows: int = 128,
        on_batch: Callable[[int], None] | None = None,
        on_predictions: Counted | None = None,
        concurrency: int = 2,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay
        self.max_queue_rows = max_queue_rows
        self._inline = inline
        self.max_inline_rows = max_inline_rows
        self._on_batch = on_batch
        self._counted = on_predictions
        self._queue: deque[_Item] = deque()
        self._waiting_rows = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._calls: set[asyncio.Task[None]] = set()
        self._burst = False  # a request was answered at once in this turn of the event loop

    def _end_burst(self) -> None:
        self._burst = False

    async def predict(self, predictor: Predictor, columns: Columns) -> Predictions:
        rows = len(columns[0]) if columns else 0
        # An idle server takes any request (its size is bounded by serve.max_batch_rows).
        if self._waiting_rows and self._waiting_rows + rows > self.max_queue_rows:
            raise ServiceUnavailableError(
                f"the server is at capacity ({self._waiting_rows} rows waiting); retry shortly"
            )
        loop = asyncio.get_running_loop()
        if (
            not self._queue
            and not self._calls
            and not self._burst
            and self.max_delay == 0
            and rows <= self.max_inline_rows
            and self._inline(predictor)
        ):
            # Idle, and the first request of this turn of the event loop: answered here and
            # now, with no hop to the batching task. The requests that come in the same turn
            # queue behind it and make a batch, as they would behind any call.
            self._burst = True
            loop.call_soon(self._end_burst)
            if self._on_batch is not None:
                self._on_batch(rows)
            item = _Item(predictor, columns, rows, None)
            [outcome] = predict_apart(predictor, [item], self._counted)
            if isinstance(outcome, ModelFailure):
                raise outcome
            return outcome
        future: asyncio.Future[Predictions] = loop.create_future()
        self._queue.append(_Item(predictor, columns, rows, future))
        self._waiting_rows += rows
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="refit-micro-batcher")
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        for task in [self._task, *self._calls]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _take(self) -> list[_Item]:
        """The next batch: items for one predictor, up to `max_batch_size` rows (an item
        bigger than that goes alone)."""
        first = self._queue.popleft()
        batch, rows = [first], first.rows
        while self._queue:
            item = self._queue[0]
            if item.predictor is not first.predictor or rows + item.rows > self.max_batch_size:
                break
            batch.append(self._queue.popleft())
            rows += item.rows
        return batch

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self.max_delay > 0 and 0 < self._waiting_rows < self.max_batch_size:
                await asyncio.sleep(self.max_delay)
            while self._queue:
                # While every slot is busy, requests pile up and make the next batch.
                await self._slots.acquire()
                if not self._queue:
                    self._slots.release()
                    break
                self._start(self._take())

    def _start(self, batch: list[_Item]) -> None:
        """Predict `batch`, here or in a thread: in a method of its own, so that no frame of
        `_run`'s holds on to its items (and their model) while it waits for the next."""
        rows = sum(item.rows for item in batch)
        self._waiting_rows -= rows
        if self._on_batch is not None:
            self._on_batch(rows)
        if rows <= self.max_inline_rows and self._inline(batch[0].predictor):
            try:
                self._settle(batch, predict_apart(batch[0].predictor, batch, self._counted))
            finally:
                self._slots.release()
        else:
            call = asyncio.create_task(self._in_thread(batch))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    async def _in_thread(self, batch: list[_Item]) -> None:
        try:
            outcomes = await asyncio.to_thread(
                predict_apart, batch[0].predictor, batch, self._counted
            )
        except Exception as exc:  # not the model's: the thread pool itself failed
            for item in batch:
                if item.future is not None and not item.future.done():
                    item.future.set_exception(RefitError(f"the prediction did not run: {exc}"))
        else:
            self._settle(batch, outcomes)
        finally:
            self._slots.release()

    @staticmethod
    def _settle(batch: list[_Item], outcomes: list[Outcome]) -> None:
        for item, outcome in zip(batch, outcomes, strict=True):
            if item.future is None or item.future.done():  # a caller that went away
                continue
            if isinstance(outcome, ModelFailure):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)
