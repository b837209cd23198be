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

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from refit.serve._multiprocess import DIRECTORY_ENV

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


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
