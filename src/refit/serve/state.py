"""What a server process holds: its models, each following its own alias, its metrics and its
limits.

Every protocol's routes (refit's own, Open Inference V2, `/invocations`) reach a model through
`ServerState.read_and_predict`, the one inference path: the model by name (or 404/503), the
body read by the protocol's codec into columns checked against its signature, and the
predictions, micro-batched per model. A sample of what each model answers is logged
(`refit.serve.prediction_log`): one append per request, written by a thread of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request
from starlette.requests import ClientDisconnect

from refit.errors import (
    CodeError,
    ModelRefusedError,
    NotFoundError,
    Problem,
    ServiceUnavailableError,
    SpecError,
    TooLargeError,
)
from refit.prediction_logs import answered
from refit.predictions import Columns, NonFiniteOutputError, Predictions
from refit.registry.heartbeats import new_instance
from refit.serve._logging import current_request_id
from refit.serve._numbers import client_count, shown
from refit.serve.batching import MicroBatcher, ModelFailure
from refit.serve.follower import LoadFailure, ModelFollower
from refit.serve.metrics import PredictionCounter, ServerMetrics
from refit.serve.prediction_log import LogBuffer, LogWriter, model_logs
from refit.serve.predictor import LoadedModel, LoadPolicy
from refit.serve.records import ExtraFields, RecordReader
from refit.services import Services
from refit.signature import Signature

T = TypeVar("T")


class ServedModel:
    """One model of a server: the follower of its `production` alias, the reader of its
    records, and its own micro-batcher, so that a slow or failing model holds up no other."""

    def __init__(
        self,
        follower: ModelFollower,
        metrics: ServerMetrics,
        *,
        batcher: MicroBatcher,
        max_batch_rows: int = 10_000,
        extra_fields: ExtraFields = "reject",
        log: LogBuffer | None = None,
        feedback: LogBuffer | None = None,
    ) -> None:
        """`log` keeps a sample of the answers (None: nothing is logged); `feedback` the true
        values clients send."""
        self.name = follower.name
        self.follower = follower
        self.batcher = batcher
        self.max_batch_rows = max_batch_rows
        self.extra_fields: ExtraFields = extra_fields
        self.log = log
        self.feedback = feedback
        self._reader: RecordReader | None = None
        self._rows = metrics.rows.labels(self.name)  # a child per model, not per request

    def current(self) -> LoadedModel:
        """The version to answer with; 503 while there is none."""
        model = self.follower.current
        if model is None:
            raise ServiceUnavailableError(f"{self.name} is not ready: {self.follower.waiting()}")
        return model

    @property
    def ready(self) -> bool:
        return self.follower.current is not None

    def reader(self, model: LoadedModel) -> RecordReader:
        # Every served version has the same inputs (the follower refuses others), so one
        # reader serves them all; it is rebuilt only for a new signature object.
        reader = self._reader
        if reader is None or reader.signature is not model.signature:
            reader = RecordReader(model.signature, self.max_batch_rows, self.extra_fields)
            self._reader = reader
        return reader

    async def predict(self, model: LoadedModel, columns: Columns) -> Predictions:
        """Predict on checked columns with `model`, micro-batched with concurrent requests.

        Rows the model fails on (it raises, or answers NaN) fail their own request alone,
        with a `ModelRefusedError` naming what is known of the cause."""
        try:
            predictions = await self.batcher.predict(model.predictor, columns)
        except ModelFailure as failure:
            if isinstance(failure.error, CodeError):  # the project's hook, not the request
                raise failure.error from None
            raise refusal(model.signature.names, columns, failure.error) from None
        rows = len(predictions)
        self._rows.inc(rows)
        log = self.log
        if log is not None and log.sampled():
            entry = answered(current_request_id(), time.time(), model.version, columns, predictions)
            log.add(entry, rows)
        return predictions

    def describe(self) -> dict[str, Any]:
        """What `/v1/models` shows: the version holding the alias, the one served and, when
        they differ, why (as a client may read it: see `refit.redaction`)."""
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


@dataclass
class ServerState:
    """What a server process holds: its models by name (the first is the default, which the
    routes without a model name answer with), its metrics and its limits."""

    models: dict[str, ServedModel]
    metrics: ServerMetrics
    max_body_bytes: int = 10 * 2**20
    draining: bool = False
    writer: LogWriter | None = None
    """Writes the models' prediction logs and feedback (started and closed by the app)."""

    @classmethod
    def open(
        cls,
        services: Services,
        *,
        more: Sequence[Services] = (),
        poll_interval: float = 2.0,
        max_body_bytes: int = 10 * 2**20,
        max_batch_rows: int = 10_000,
        max_batch_size: int = 64,
        max_batch_delay: float = 0.0,
        max_queue_rows: int = 4096,
        heartbeat: bool = True,
    ) -> ServerState:
        """The state of a server of `services`' project's model (the default) and of each of
        `more`'s; with `heartbeat`, it reports what it serves to the registry (see
        `refit.registry.heartbeats`). Every model follows its own registry's alias, and logs
        what it answers as its project's `monitor` section says."""
        metrics = ServerMetrics()
        models: dict[str, ServedModel] = {}
        buffers: list[LogBuffer] = []
        for each in (services, *more):
            name = each.project.spec.name
            if name in models:
                raise SpecError(f"two of the projects served are named {name!r}")
            counter = PredictionCounter(metrics, name)
            signatures: dict[int, Signature] = {}
            follower = _follower(each, metrics, poll_interval, heartbeat, counter, signatures)
            batcher = MicroBatcher(
                max_batch_size=max_batch_size,
                max_delay=max_batch_delay,
                max_queue_rows=max_queue_rows,
                on_batch=metrics.batch_rows.labels(name).observe,
                on_predictions=counter,
            )
            instance = follower.instance or new_instance()  # the heartbeat's id, if it beats
            log, feedback = model_logs(each, metrics, instance, signatures.__getitem__)
            buffers += [b for b in (log, feedback) if b is not None]
            models[name] = ServedModel(
                follower,
                metrics,
                batcher=batcher,
                max_batch_rows=max_batch_rows,
                extra_fields=each.project.spec.serve.extra_fields,
                log=log,
                feedback=feedback,
            )
        return cls(models, metrics, max_body_bytes, writer=LogWriter(buffers))

    @property
    def default(self) -> ServedModel:
        """The model of the routes that name none (`/predict`, `/invocations`)."""
        return next(iter(self.models.values()))

    @property
    def name(self) -> str:
        return self.default.name

    @property
    def follower(self) -> ModelFollower:
        return self.default.follower

    @property
    def batcher(self) -> MicroBatcher:
        return self.default.batcher

    def served(self, name: str) -> ServedModel:
        """The model named `name`; 404 when this server serves none of that name."""
        served = self.models.get(name)
        if served is None:
            here = ", ".join(repr(n) for n in self.models)
            raise NotFoundError(f"no model {shown(name)} here; this server serves {here}")
        return served

    def model(self, name: str) -> LoadedModel:
        """The version of model `name` to answer with (404 unknown, 503 not loaded)."""
        return self.served(name).current()

    def reader(self, model: LoadedModel) -> RecordReader:
        return self.models[model.name].reader(model)

    async def predict_columns(self, model: LoadedModel, columns: Columns) -> Predictions:
        """Predict on checked columns with `model` (see `ServedModel.predict`)."""
        return await self.models[model.name].predict(model, columns)

    async def read_and_predict(
        self,
        request: Request,
        name: str,
        read: Callable[[bytes, RecordReader, LoadedModel], tuple[Columns, T]],
        version: Callable[[LoadedModel], LoadedModel] = lambda model: model,
    ) -> tuple[LoadedModel, T, Predictions]:
        """The one inference path of every protocol: the model (404, 503), then the body
        (bounded), read by the protocol's codec (`read(body, reader, model)` -> the checked
        columns and what else the codec needs to answer: off the event loop when the body is
        large), then the predictions, micro-batched."""
        served = self.served(name)
        model = version(served.current())
        body = await read_body(request, self.max_body_bytes)
        reader = self.reader(model)
        columns, extra = await off_the_loop(body, lambda b: read(b, reader, model))
        predictions = await self.predict_columns(model, columns)
        return model, extra, predictions


def _follower(
    services: Services,
    metrics: ServerMetrics,
    poll_interval: float,
    heartbeat: bool,
    counter: PredictionCounter,
    signatures: dict[int, Signature],
) -> ModelFollower:
    """The follower of `services`' project's production, reporting to `metrics`; at each
    swap, `counter` counts for the new version and `signatures` gains its signature."""
    name = services.project.spec.name
    metrics.model_version.labels(name).set(0)
    metrics.production_version.labels(name).set(0)
    metrics.failing_version.labels(name).set(0)
    for each in (metrics.rows, metrics.swaps, metrics.load_failures):
        each.labels(name)  # exported as 0 from the start, so rates and alerts work

    def swapped(previous: LoadedModel | None, loaded: LoadedModel) -> None:
        signatures[loaded.version] = loaded.signature
        counter.serving(loaded.signature.output)
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

    spec = services.project.spec
    return ModelFollower(
        services.registry,
        services.store,
        name,
        poll_interval=poll_interval,
        on_swap=swapped,
        on_failure=refused,
        on_production=production,
        heartbeat=heartbeat,
        policy=LoadPolicy(
            signing_key=services.registry.signing_key,
            allow_pickle=spec.serve.allow_pickle,
            trusted_types=tuple(spec.model.trusted_types),
        ),
    )


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
    while True:  # the ASGI messages themselves: Starlette's stream() costs microseconds more
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLargeError(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
