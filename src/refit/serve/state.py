"""What a server process holds: the follower of its model, its metrics and its limits.

Every protocol's routes (refit's own, Open Inference V2, `/invocations`) reach the model
through `ServerState`: `model(name)` for the version to answer with (or 404/503), `reader` to
check records against its signature, and `predict_columns` to run it, micro-batched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from refit.errors import NotFoundError, ServiceUnavailableError, TooLargeError
from refit.serve.batching import MicroBatcher
from refit.serve.follower import LoadFailure, ModelFollower
from refit.serve.metrics import ServerMetrics
from refit.serve.predictor import LoadedModel, Predictions
from refit.serve.records import Columns, ExtraFields, RecordReader
from refit.services import Services


@dataclass
class ServerState:
    """What a server process holds: the follower of its model and its limits."""

    name: str
    follower: ModelFollower
    metrics: ServerMetrics
    max_body_bytes: int = 10 * 2**20
    max_batch_rows: int = 10_000
    batcher: MicroBatcher = field(default_factory=MicroBatcher)
    draining: bool = False
    extra_fields: ExtraFields = "reject"
    _reader: RecordReader | None = field(default=None, repr=False)

    @classmethod
    def open(
        cls,
        services: Services,
        *,
        poll_interval: float = 2.0,
        max_body_bytes: int = 10 * 2**20,
        max_batch_rows: int = 10_000,
        max_batch_size: int = 64,
        max_batch_delay: float = 0.0,
        max_queue_rows: int = 4096,
    ) -> ServerState:
        name = services.project.spec.name
        metrics = ServerMetrics()
        metrics.model_version.labels(name).set(0)
        for counter in (metrics.rows, metrics.swaps, metrics.load_failures):
            counter.labels(name)  # exported as 0 from the start, so rates and alerts work

        def swapped(previous: LoadedModel | None, loaded: LoadedModel) -> None:
            metrics.model_version.labels(name).set(loaded.version)
            if previous is not None:
                metrics.swaps.labels(name).inc()

        def refused(failure: LoadFailure) -> None:
            metrics.load_failures.labels(name).inc()

        follower = ModelFollower(
            services.registry,
            services.store,
            name,
            poll_interval=poll_interval,
            on_swap=swapped,
            on_failure=refused,
        )
        # Read at each scrape, so it follows the follower's state exactly (a refusal is
        # cleared by a swap, and by production moving back to the served version).
        metrics.failing_version.labels(name).set_function(
            lambda: follower.failure.version if follower.failure is not None else 0
        )
        batcher = MicroBatcher(
            max_batch_size=max_batch_size,
            max_delay=max_batch_delay,
            max_queue_rows=max_queue_rows,
            on_batch=metrics.batch_rows.observe,
        )
        extra = services.project.spec.serve.extra_fields
        return cls(
            name, follower, metrics, max_body_bytes, max_batch_rows, batcher, extra_fields=extra
        )

    def model(self, name: str) -> LoadedModel:
        if name != self.name:
            raise NotFoundError(f"no model {name!r} here; this server serves {self.name!r}")
        model = self.follower.current
        if model is None:
            why = "no version of it holds production yet"
            if self.follower.failure is not None:
                why = f"production v{self.follower.failure.version} failed to load"
            raise ServiceUnavailableError(f"{name} is not ready: {why}")
        return model

    async def predict_columns(self, model: LoadedModel, columns: Columns) -> Predictions:
        """Predict on checked columns with `model`, micro-batched with concurrent requests."""
        predictions = await self.batcher.predict(model.predictor, columns)
        self.metrics.rows.labels(model.name).inc(len(predictions.labels))
        return predictions

    def reader(self, model: LoadedModel) -> RecordReader:
        # Every served version has the same inputs (the follower refuses others), so one
        # reader serves them all; it is rebuilt only for a new signature object.
        reader = self._reader
        if reader is None or reader.signature is not model.signature:
            reader = RecordReader(model.signature, self.max_batch_rows, self.extra_fields)
            self._reader = reader
        return reader

    def describe(self) -> dict[str, Any]:
        model = self.follower.current
        failure = self.follower.failure
        return {
            "name": self.name,
            "alias": self.follower.alias,
            "ready": model is not None,
            "served": model.describe() if model is not None else None,
            "refused": failure.describe() if failure is not None else None,
        }


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLargeError(f"the body has {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLargeError(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
