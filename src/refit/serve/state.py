"""What a server process holds: the follower of its model, its metrics and its limits.

Every protocol's routes (refit's own, Open Inference V2, `/invocations`) reach the model
through `ServerState`: `model(name)` for the version to answer with (or 404/503), `reader` to
check records against its signature, and `predict_columns` to run it, micro-batched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request

from refit.errors import (
    ModelRefusedError,
    NotFoundError,
    Problem,
    ServiceUnavailableError,
    TooLargeError,
)
from refit.serve._numbers import client_count
from refit.serve.batching import MicroBatcher, ModelFailure
from refit.serve.follower import LoadFailure, ModelFollower
from refit.serve.metrics import ServerMetrics
from refit.serve.predictor import LoadedModel, NonFiniteOutputError, Predictions
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
        heartbeat: bool = True,
    ) -> ServerState:
        """The state of a server of `services`' project; with `heartbeat`, it reports what it
        serves to the registry (see `refit.registry.heartbeats`)."""
        name = services.project.spec.name
        metrics = ServerMetrics()
        metrics.model_version.labels(name).set(0)
        metrics.production_version.labels(name).set(0)
        metrics.failing_version.labels(name).set(0)
        for counter in (metrics.rows, metrics.swaps, metrics.load_failures):
            counter.labels(name)  # exported as 0 from the start, so rates and alerts work

        def swapped(previous: LoadedModel | None, loaded: LoadedModel) -> None:
            metrics.model_version.labels(name).set(loaded.version)
            if previous is not None:
                metrics.swaps.labels(name).inc()
            if loaded.onnx_error is not None:  # served natively, but a failed artifact
                metrics.load_failures.labels(name).inc()

        def production(version: int | None) -> None:
            metrics.production_version.labels(name).set(version or 0)

        def refused(failure: LoadFailure | None) -> None:
            metrics.failing_version.labels(name).set(0 if failure is None else failure.version)
            if failure is not None:
                metrics.load_failures.labels(name).inc()

        follower = ModelFollower(
            services.registry,
            services.store,
            name,
            poll_interval=poll_interval,
            on_swap=swapped,
            on_failure=refused,
            on_production=production,
            heartbeat=heartbeat,
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
            raise ServiceUnavailableError(f"{name} is not ready: {self.follower.waiting()}")
        return model

    async def predict_columns(self, model: LoadedModel, columns: Columns) -> Predictions:
        """Predict on checked columns with `model`, micro-batched with concurrent requests.

        Rows the model fails on (it raises, or answers NaN) fail their own request alone,
        with a `ModelRefusedError` naming what is known of the cause."""
        try:
            predictions = await self.batcher.predict(model.predictor, columns)
        except ModelFailure as failure:
            raise refusal(model.signature.names, columns, failure.error) from None
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
        """What `/v1/models` shows: the version holding the alias, the one served and, when
        they differ, why (as a client may read it: see `refit.serve.redaction`)."""
        follower = self.follower
        model, failure = follower.current, follower.failure
        served = None
        if model is not None:
            served = model.describe() | {"onnx_failed": model.onnx_error is not None}
        return {
            "name": self.name,
            "alias": follower.alias,
            "ready": model is not None,
            "production": follower.production,
            "serving": model.version if model is not None else None,
            "reason": self._not_serving_production(),
            "served": served,
            "refused": failure.describe() if failure is not None else None,
        }

    def _not_serving_production(self) -> str | None:
        """Why the served version is not the one holding the alias (None: it is)."""
        follower = self.follower
        model, production, failure = follower.current, follower.production, follower.failure
        if model is None:
            return follower.waiting()
        if production is None or production == model.version:
            return None
        if failure is not None and failure.version == production:
            return f"v{production} failed to load: {failure.reason}"
        if follower.loading == production:
            return f"loading v{production}"
        return f"v{production} is not loaded yet"


_SHOWN_ROWS = 5
_SAID = 300  # characters of the model's own message (scikit-learn's may list every feature)


def _rows(indices: list[int]) -> str:
    shown = ", ".join(str(i) for i in indices[:_SHOWN_ROWS])
    more = f" and {len(indices) - _SHOWN_ROWS} more" if len(indices) > _SHOWN_ROWS else ""
    return f"row{'s' if len(indices) > 1 else ''} {shown}{more}"


def refusal(names: list[str], columns: Columns, error: Exception) -> ModelRefusedError:
    """The error of a request whose own rows the model failed on: what the model did, and the
    fields that held missing values in those rows (the likeliest cause, though a model does
    not say which value it could not take). Rows are numbered from 0 within the request."""
    if isinstance(error, NonFiniteOutputError):
        implicated: list[int] | None = error.rows
        did = f"answered {error.what} for {_rows(error.rows)} of the request"
    else:
        implicated = None  # every row of the request
        said = str(error)
        said = said if len(said) <= _SAID else said[: _SAID - 3] + "..."
        did = f"raised {type(error).__name__}: {said}"
    problems = []
    for name, values in zip(names, columns, strict=True):
        if implicated is not None:
            missing = [i for i in implicated if values[i] is None]
        else:
            missing = [i for i, v in enumerate(values) if v is None] if None in values else []
        if missing:
            problem = f"missing in {_rows(missing)}; the model {did}"
            problems.append(Problem(name, problem, None, "a value"))
    if not problems:
        return ModelRefusedError(
            f"the model failed on this request: it {did}",
            [Problem("the request", f"the model {did}", None, None)],
        )
    held = ", ".join(p.field for p in problems)
    return ModelRefusedError(
        f"the model failed on this request: it {did}. Its rows hold missing values in {held}: "
        "the signature allows them, but the model may not take them",
        problems,
    )


T = TypeVar("T")

LARGE_BODY = 64 * 1024
"""Bodies above this size (about 80 records of 30 numbers) are parsed and checked in a thread:
10,000 records take a few hundred milliseconds, which on the event loop would hold up every
other connection and the health probes. Smaller ones are quicker than the hop to a thread."""


async def off_the_loop(body: bytes, read: Callable[[bytes], T]) -> T:
    """`read(body)`: in a thread when the body is large, else here."""
    if len(body) <= LARGE_BODY:
        return read(body)
    return await asyncio.to_thread(read, body)


async def read_body(request: Request, limit: int) -> bytes:
    """The body of `request`, refused (413) past `limit` bytes before more is read."""
    declared = request.headers.get("content-length")
    if declared is not None and (size := client_count(declared, "Content-Length")) > limit:
        raise TooLargeError(f"the body has {size} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLargeError(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
