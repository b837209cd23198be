"""The server's own metrics as JSON: the values `/metrics` gives, grouped for a page that
computes rates and percentiles from two successive samples. The dashboard's own requests
(`/ui...`) are left out: watching the server is no traffic of it."""

from __future__ import annotations

import math
import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = "/ui"

_SERIES = {
    "refit_requests": "requests",
    "refit_request_duration_seconds": "latency",
    "refit_batch_rows": "batch_rows",
    "refit_predicted_rows": "rows",
    "refit_model_version": "version",
    "refit_model_production_version": "production",
    "refit_model_swaps": "swaps",
    "refit_model_load_failures": "load_failures",
}


def traffic(exposition: bytes) -> dict[str, Any]:
    """A server's metrics, from their Prometheus text `exposition`, sampled now (`time_ms`,
    Unix time in milliseconds): `requests` (count by route and status), `latency` and
    `batch_rows` (cumulative histogram buckets, count and sum by route or model), and per
    model its predicted `rows`, served `version`, `production`, `swaps` and `load_failures`."""
    text = exposition.decode()
    requests: list[dict[str, Any]] = []
    histograms: dict[str, dict[tuple[str, str], dict[str, Any]]] = {"latency": {}, "batch_rows": {}}
    models: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        kind = _SERIES.get(family.name)
        if kind is None:
            continue
        for sample in family.samples:
            labels, value = sample.labels, sample.value
            if labels.get("route", "").startswith(DASHBOARD):
                continue
            if kind == "requests" and sample.name.endswith("_total"):
                requests.append(
                    {"route": labels["route"], "status": labels["status"], "count": value}
                )
            elif kind in histograms:
                key = (
                    ("route", labels["route"]) if "route" in labels else ("model", labels["model"])
                )
                entry = histograms[kind].setdefault(
                    key, {key[0]: key[1], "buckets": [], "count": 0.0, "sum": 0.0}
                )
                if sample.name.endswith("_bucket"):
                    le = float(labels["le"])
                    entry["buckets"].append([None if math.isinf(le) else le, value])
                elif sample.name.endswith("_count"):
                    entry["count"] = value
                elif sample.name.endswith("_sum"):
                    entry["sum"] = value
            elif "model" in labels and not sample.name.endswith("_created"):
                models.setdefault(labels["model"], {"model": labels["model"]})[kind] = value
    return {
        "time_ms": time.time_ns() // 1_000_000,
        "requests": requests,
        "latency": list(histograms["latency"].values()),
        "batch_rows": list(histograms["batch_rows"].values()),
        "models": list(models.values()),
    }
