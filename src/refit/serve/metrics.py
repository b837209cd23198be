"""The server's Prometheus metrics, in a registry of their own (made per app, never at import).

Under `refit serve` the workers share them: each writes its values to files in one directory
(prometheus_client's multiprocess mode, set up by `refit serve` before any worker starts), and
a scrape of any worker answers the sum over every worker that ever ran, so totals never go
back when successive scrapes reach different workers. A gauge is the highest value among the
live workers (the files of a worker that died are dropped by the next one to start). Without
that directory (an app built in process) the values are this process's own.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from refit.predictions import Predictions
from refit.serve._multiprocess import DIRECTORY_ENV
from refit.signature import Output
from refit.spec import Task

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_DECADES = tuple(10.0**k for k in range(-2, 7))
VALUE_BUCKETS = (*(-b for b in reversed(_DECADES)), 0.0, *_DECADES)
"""The buckets of a regressor's predicted values, whatever its scale: one per power of ten
from 0.01 to 10^6 on each side of 0 (-10^6, ..., -0.01, 0, 0.01, ..., 10^6, and +Inf)."""


class ServerMetrics:
    """Request, prediction and model-swap metrics of one server process."""

    def __init__(self) -> None:
        # No `_created` series: a counter's creation time differs by worker, and is one more
        # series per label set that no dashboard of refit's reads.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.directory = os.environ.get(DIRECTORY_ENV) or None
        if self.directory is not None:
            _drop_dead_workers(self.directory)
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "refit_requests",
            "HTTP requests answered, by route and status code.",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "refit_request_duration_seconds",
            "Time to answer a request, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rows = Counter(
            "refit_predicted_rows", "Rows predicted, by model.", ["model"], registry=r
        )
        self.model_version = Gauge(
            "refit_model_version",
            "The version being served (0: none yet); the highest among the workers.",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.production_version = Gauge(
            "refit_model_production_version",
            "The version holding production at the last look (0: none); alert when it "
            "differs from refit_model_version for longer than a load takes.",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.swaps = Counter(
            "refit_model_swaps",
            "Times a newly promoted version was swapped in.",
            ["model"],
            registry=r,
        )
        self.load_failures = Counter(
            "refit_model_load_failures",
            "Versions refused because a load step failed (fetch, checksum, load, warm-up), "
            "and ONNX artifacts that failed to load (their version served natively).",
            ["model"],
            registry=r,
        )
        self.failing_version = Gauge(
            "refit_model_refused_version",
            "The version that last failed to load (0: none is failing); the highest among "
            "the workers.",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )

        self.batch_rows = Histogram(
            "refit_batch_rows",
            "Rows per call of the model (micro-batching gathers concurrent requests), by model.",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096),
            registry=r,
        )

        self.predictions = Counter(
            "refit_predictions",
            "A classifier's predictions by predicted class, a clustering's by cluster id, an "
            "anomaly detector's by flag (True: an anomaly), by model.",
            ["model", "class"],
            registry=r,
        )
        self.predicted_value = Histogram(
            "refit_predicted_value",
            "A regressor's predicted values or an anomaly detector's scores, by model; "
            "buckets at each power of ten from 0.01 to 1e6, on both sides of 0.",
            ["model"],
            buckets=VALUE_BUCKETS,
            registry=r,
        )

        self.log_buffered = Gauge(
            "refit_prediction_log_buffered_rows",
            "Rows waiting to be written to the prediction log (kind: predictions or "
            "feedback); the sum over the live workers.",
            ["model", "kind"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.log_capacity = Gauge(
            "refit_prediction_log_capacity_rows",
            "Rows the prediction log's buffers hold at most (monitor.buffer_rows per worker); "
            "the sum over the live workers.",
            ["model", "kind"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.log_written = Counter(
            "refit_prediction_log_written_rows",
            "Rows written to the prediction log (Parquet files in the artifact store).",
            ["model", "kind"],
            registry=r,
        )
        self.log_dropped = Counter(
            "refit_prediction_log_dropped_rows",
            "Rows not logged: buffer_full (the buffer had no room), write_failed (the store "
            "or the registry failed, and the buffer had no room to keep them).",
            ["model", "kind", "reason"],
            registry=r,
        )
        self.log_files = Counter(
            "refit_prediction_log_files",
            "Files written to the prediction log.",
            ["model", "kind"],
            registry=r,
        )

    def render(self) -> bytes:
        if self.directory is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.directory)  # type: ignore[no-untyped-call]
        return generate_latest(merged)

    def close(self) -> None:
        """A worker that stops takes its gauges out of the merged values."""
        if self.directory is not None:
            mark_process_dead(os.getpid(), self.directory)  # type: ignore[no-untyped-call]


def _drop_dead_workers(directory: str) -> None:
    """Remove the gauges of workers that died without `close()` (killed, and restarted)."""
    pids: set[int] = set()
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        number = os.path.basename(path).rsplit("_", 1)[-1].removesuffix(".db")
        if number.isdigit():
            pids.add(int(number))
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except PermissionError:  # alive, as another user
            pass


class PredictionCounter:
    """Counts what one model predicts, per call of the model (never per row in Python): a
    classifier's predictions by class (a clustering's by cluster id, an anomaly detector's by
    flag), a regressor's values (an anomaly detector's scores) in a histogram; rows whose
    answer was withheld are not counted. `output` is set to the served version's at each swap
    (versions of one model have the same task)."""

    def __init__(self, metrics: ServerMetrics, name: str) -> None:
        self.metrics = metrics
        self.name = name
        self.output: Output | None = None
        self.counted = False
        self.observed: str | None = None
        self._classes: dict[Any, Any] = {}
        self._values: Any = None

    def serving(self, output: Output) -> None:
        """Count for a version of `output` from now on; its classes (or the histogram) are
        exported at 0 from then on."""
        self.output = output
        anomaly = output.task is Task.ANOMALY
        classes = [False, True] if anomaly else output.classes
        self.counted = classes is not None
        self.observed = "scores" if anomaly else ("labels" if classes is None else None)
        for label in classes or ():
            self._class(label)
        if self.observed is not None and self._values is None:
            self._values = self.metrics.predicted_value.labels(self.name)

    def _class(self, label: Any) -> Any:
        child = self._classes.get(label)
        if child is None:
            shown = label.item() if isinstance(label, np.generic) else label
            child = self._classes[label] = self.metrics.predictions.labels(self.name, str(shown))
        return child

    def __call__(self, predictions: Predictions) -> None:
        output, labels, scores = self.output, predictions.labels, predictions.scores
        if output is None or not len(labels):
            return
        if predictions.withheld is not None:  # only what was answered
            answered = ~predictions.withheld
            labels = labels[answered]
            scores = None if scores is None else scores[answered]
        if self.counted:
            if len(labels) == 1:
                self._class(labels[0]).inc()
            else:
                found, counts = np.unique(labels, return_counts=True)
                for label, count in zip(found.tolist(), counts.tolist(), strict=True):
                    self._class(label).inc(count)
        if self._values is not None:
            values = scores if self.observed == "scores" else labels
            if values is not None:
                observe_many(self._values, values)


def observe_many(histogram: Any, values: Any) -> None:
    """`histogram.observe(v)` for each of `values`, in one pass of numpy: prometheus_client
    observes one value at a time, and a Python call per predicted row would cost more than
    the prediction. Fills the child's buckets as `Histogram.observe` does (a value goes to the
    first bucket whose bound it does not pass; +Inf holds what passes them all)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return
    bounds = np.asarray(histogram._upper_bounds[:-1])  # the last is +Inf
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds) + 1)
    histogram._sum.inc(float(values.sum()))
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=True):
        if count:
            bucket.inc(count)
