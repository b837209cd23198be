"""The server's Prometheus metrics, in a registry of their own (made per app, never at import)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServerMetrics:
    """Request, prediction and model-swap metrics of one server process."""

    def __init__(self) -> None:
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
            "refit_model_version", "The version being served (0: none yet).", ["model"], registry=r
        )
        self.swaps = Counter(
            "refit_model_swaps",
            "Times a newly promoted version was swapped in.",
            ["model"],
            registry=r,
        )
        self.load_failures = Counter(
            "refit_model_load_failures",
            "Versions refused because a load step failed (fetch, checksum, load, warm-up).",
            ["model"],
            registry=r,
        )
        self.failing_version = Gauge(
            "refit_model_refused_version",
            "The version that last failed to load (0: none is failing).",
            ["model"],
            registry=r,
        )

        self.batch_rows = Histogram(
            "refit_batch_rows",
            "Rows per call of the model (micro-batching gathers concurrent requests).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096),
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
