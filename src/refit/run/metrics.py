"""The scheduler's Prometheus metrics, read from the registry at each scrape.

Nothing is counted in the scheduler's memory: every value comes from the registry when
Prometheus asks, so it is right after a restart, whichever process made the snapshot or ran
the training (a scheduler, `refit train` by hand, a Kubernetes CronJob), and several
schedulers of one registry answer alike. Each scrape does a bounded amount of work: counts are
SQL aggregates, the durations histogram reads the last `RUN_WINDOW` finished runs and the
metrics of versions the last `VERSION_WINDOW` versions. A scrape that cannot read the registry
still answers, with `refit_scheduler_scrape_error 1` and nothing else.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from refit.registry import PRODUCTION, Registry
from refit.registry.monitoring import latest_report
from refit.registry.tables import (
    AliasRow,
    DecisionRow,
    IngestBatchRow,
    ModelVersionRow,
    SnapshotRow,
    TrainingRunRow,
    TrainRequestRow,
    utcnow,
)

log = logging.getLogger("refit.scheduler")

RUN_WINDOW = 1_000
"""The finished training runs, newest first, that the durations histogram is made of."""
VERSION_WINDOW = 50
"""The versions, newest first, whose holdout metrics are exported."""
DURATION_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
"""Upper bounds, in seconds, of the buckets of `refit_training_run_duration_seconds`."""
RUNNING = "running"
UNCHANGED_ROWS = ("unchanged", "rebuilt")
"""Ingest batches whose rows are not new: the same data again, or a snapshot made anew from
every batch (their counts are the rebuild's)."""


class RegistryCollector(Collector):
    """The scheduler's metrics of model `name`, read from `registry` at each `collect()`."""

    def __init__(
        self, registry: Registry, name: str, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.registry = registry
        self.name = name
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        try:
            families = list(self._families())
            failed = 0.0
        except Exception as exc:  # a scrape always answers: the error is a metric of its own
            log.warning("cannot read the registry for /metrics: %s: %s", type(exc).__name__, exc)
            families, failed = [], 1.0
        yield from families
        yield GaugeMetricFamily(
            "refit_scheduler_scrape_error",
            "1 when this scrape could not read the registry (its other metrics are missing).",
            value=failed,
        )

    def _families(self) -> Iterator[Metric]:
        now = self.clock()
        with self.registry.read() as s:
            yield from self._ingest(s, now)
            yield from self._runs(s)
            yield from self._decisions(s, now)
            yield from self._versions(s)
            requests = s.scalar(
                select(func.count())
                .select_from(TrainRequestRow)
                .where(TrainRequestRow.name == self.name, TrainRequestRow.run_id.is_(None))
            )
        yield self._gauge(
            "refit_training_requests_open",
            "Training runs asked for by the monitor (drift, live quality) that no run has "
            "answered yet.",
            requests or 0,
        )
        yield from self._report()

    # --- ingest -----------------------------------------------------------------------------

    def _ingest(self, s: Session, now: datetime) -> Iterator[Metric]:
        count, newest = s.execute(
            select(func.count(), func.max(SnapshotRow.created_at)).where(
                SnapshotRow.project == self.name
            )
        ).one()
        yield self._counter("refit_snapshots", "Snapshots made.", count)
        if newest is not None:
            yield self._gauge(
                "refit_last_snapshot_age_seconds",
                "Seconds since the newest snapshot was made.",
                _age(now, newest),
            )
        batches = self._labelled_counter(
            "refit_ingest_batches",
            "Ingest runs that found data, by status (accepted, unchanged, refused, rebuilt).",
            ["status"],
        )
        valid = rejected = 0
        query = (
            select(
                IngestBatchRow.status,
                func.count(),
                func.sum(IngestBatchRow.rows_valid),
                func.sum(IngestBatchRow.rows_rejected),
            )
            .where(IngestBatchRow.project == self.name)
            .group_by(IngestBatchRow.status)
        )
        for status, batch_count, status_valid, status_rejected in s.execute(query):
            batches.add_metric([self.name, status], batch_count)
            if status not in UNCHANGED_ROWS:
                rejected += status_rejected or 0
                if status == "accepted":
                    valid += status_valid or 0
        yield batches
        yield self._counter(
            "refit_ingested_rows", "Valid rows of the batches made into snapshots.", valid
        )
        yield self._counter(
            "refit_rejected_rows",
            "Rows that failed validation, in accepted and refused batches.",
            rejected,
        )

    # --- training -----------------------------------------------------------------------------

    def _runs(self, s: Session) -> Iterator[Metric]:
        finished = self._labelled_counter(
            "refit_training_runs",
            "Finished training runs, by status (succeeded, failed, interrupted) and trigger "
            "(schedule, manual, drift, quality, ...).",
            ["status", "trigger"],
        )
        running = 0
        query = (
            select(TrainingRunRow.status, TrainingRunRow.trigger, func.count())
            .where(TrainingRunRow.name == self.name)
            .group_by(TrainingRunRow.status, TrainingRunRow.trigger)
        )
        for status, trigger, count in s.execute(query):
            if status == RUNNING:
                running += count
            else:
                finished.add_metric([self.name, status, trigger], count)
        yield finished
        yield self._gauge("refit_training_runs_running", "Training runs in progress.", running)
        recent = s.execute(
            select(TrainingRunRow.status, TrainingRunRow.started_at, TrainingRunRow.finished_at)
            .where(TrainingRunRow.name == self.name, TrainingRunRow.finished_at.is_not(None))
            .order_by(TrainingRunRow.started_at.desc())
            .limit(RUN_WINDOW)
        )
        durations: dict[str, list[float]] = defaultdict(list)
        for status, started, ended in recent:
            if ended is not None:  # as the query says: for mypy
                durations[status].append(_age(ended, started))
        histogram = HistogramMetricFamily(
            "refit_training_run_duration_seconds",
            f"Durations of the last {RUN_WINDOW} finished training runs, by status.",
            labels=["model", "status"],
        )
        for status, seconds in sorted(durations.items()):
            # The bounds written as prometheus-client writes a Histogram's: 5.0, 1800.0.
            buckets = [(str(le), sum(d <= le for d in seconds)) for le in DURATION_BUCKETS]
            buckets.append(("+Inf", len(seconds)))
            histogram.add_metric([self.name, status], buckets, sum_value=sum(seconds))
        yield histogram

    def _decisions(self, s: Session, now: datetime) -> Iterator[Metric]:
        gate = self._labelled_counter(
            "refit_gate_decisions",
            "The gate's decisions on new versions, by outcome (promoted, rejected).",
            ["outcome"],
        )
        outcomes = {True: 0, False: 0}
        query = (
            select(DecisionRow.promoted, func.count())
            .where(DecisionRow.name == self.name, DecisionRow.action == "gate")
            .group_by(DecisionRow.promoted)
        )
        for promoted, count in s.execute(query):
            outcomes[bool(promoted)] += count
        gate.add_metric([self.name, "promoted"], outcomes[True])
        gate.add_metric([self.name, "rejected"], outcomes[False])
        yield gate
        production = s.get(AliasRow, (self.name, PRODUCTION))
        yield self._gauge(
            "refit_model_production_version",
            "The version production points to (0: none yet).",
            production.version if production is not None else 0,
        )
        if production is not None:
            yield self._gauge(
                "refit_last_promotion_age_seconds",
                "Seconds since production last moved (the gate, a promotion, a rollback).",
                _age(now, production.updated_at),
            )

    def _versions(self, s: Session) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "refit_model_version_metric",
            f"Each metric of the last {VERSION_WINDOW} versions, on their holdout at training.",
            labels=["model", "version", "metric"],
        )
        rows = s.execute(
            select(ModelVersionRow.version, ModelVersionRow.metrics)
            .where(ModelVersionRow.name == self.name)
            .order_by(ModelVersionRow.version.desc())
            .limit(VERSION_WINDOW)
        )
        for version, metrics in rows:
            for metric, value in _numbers(metrics):
                family.add_metric([self.name, str(version), metric], value)
        yield family

    # --- the monitor's latest report ----------------------------------------------------------

    def _report(self) -> Iterator[Metric]:
        report = latest_report(self.registry, self.name)
        score = GaugeMetricFamily(
            "refit_drift_score",
            "How far each feature (and the prediction) has drifted from the training data, "
            "in the latest monitor report (higher: more).",
            labels=["model", "feature"],
        )
        flagged = GaugeMetricFamily(
            "refit_drift_flagged",
            "1 when the latest monitor report flags the feature (or the prediction) as drifted.",
            labels=["model", "feature"],
        )
        live = GaugeMetricFamily(
            "refit_live_quality",
            "Each version's quality measured on feedback, in the latest monitor report.",
            labels=["model", "version", "metric"],
        )
        estimated = GaugeMetricFamily(
            "refit_estimated_quality",
            "Each classifier version's quality estimated from its predicted probabilities, "
            "before labels arrive, in the latest monitor report.",
            labels=["model", "version", "metric"],
        )
        labelled = GaugeMetricFamily(
            "refit_labelled_rows",
            "Each version's predictions joined to feedback, in the latest monitor report.",
            labels=["model", "version"],
        )
        if report is not None:
            for feature, verdict in _entries(report.drift):
                if isinstance(value := verdict.get("score"), (int, float)):
                    score.add_metric([self.name, feature], float(value))
                flagged.add_metric([self.name, feature], 1.0 if verdict.get("drifted") else 0.0)
            for version, quality in _entries(report.quality):
                labels = [self.name, version]
                measured = _mapping(quality.get("live"))
                for metric, value in _numbers(measured, skip=("rows",)):
                    live.add_metric([*labels, metric], value)
                rows = quality.get("labelled", measured.get("rows"))
                if isinstance(rows, (int, float)) and not isinstance(rows, bool):
                    labelled.add_metric(labels, float(rows))
                guessed = _mapping(quality.get("estimated"))
                for metric, value in _numbers(guessed, skip=("rows",)):
                    estimated.add_metric([*labels, metric], value)
        yield from (score, flagged, live, estimated, labelled)
        if report is not None:
            yield self._gauge(
                "refit_monitor_report_rows",
                "Logged rows the latest monitor report judged.",
                report.rows,
            )
            yield self._gauge(
                "refit_monitor_report_timestamp_seconds",
                "When the latest monitor report was made (Unix time).",
                report.created_at.timestamp(),
            )

    # --- families -----------------------------------------------------------------------------

    def _counter(self, name: str, documentation: str, value: float) -> CounterMetricFamily:
        family = CounterMetricFamily(name, documentation, labels=["model"])
        family.add_metric([self.name], value)
        return family

    def _labelled_counter(
        self, name: str, documentation: str, labels: list[str]
    ) -> CounterMetricFamily:
        return CounterMetricFamily(name, documentation, labels=["model", *labels])

    def _gauge(self, name: str, documentation: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, documentation, labels=["model"])
        family.add_metric([self.name], value)
        return family


def _age(now: datetime, then: datetime) -> float:
    return max(0.0, (now - then).total_seconds())


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _entries(value: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """The (key, mapping) items of a report's JSON object, in the order written."""
    for key, entry in _mapping(value).items():
        if isinstance(entry, dict):
            yield str(key), entry


def _numbers(value: Any, skip: Iterable[str] = ()) -> Iterator[tuple[str, float]]:
    """The finite numbers of a JSON object of metrics (booleans and text left out)."""
    left_out = set(skip)
    for key, number in _mapping(value).items():
        if key in left_out or isinstance(number, bool) or not isinstance(number, (int, float)):
            continue
        if math.isfinite(number):
            yield str(key), float(number)


def collectors(registry: Registry, name: str) -> CollectorRegistry:
    """A Prometheus registry holding the scheduler's metrics of model `name`."""
    scheduler = CollectorRegistry(auto_describe=False)
    scheduler.register(RegistryCollector(registry, name))
    return scheduler


def render(registry: Registry, name: str) -> bytes:
    """The scheduler's metrics of model `name`, in Prometheus' text format, read now."""
    return generate_latest(collectors(registry, name))


class MetricsServer:
    """The scheduler's `/metrics`, served by a thread of this process until `close()`.

    Raises `OSError` when `host:port` cannot be listened on (port 0: a free one, see `port`).
    """

    def __init__(self, registry: Registry, name: str, host: str, port: int) -> None:
        self._server, self._thread = start_http_server(
            port, addr=host, registry=collectors(registry, name)
        )
        self.host = host
        self.port: int = self._server.server_address[1]
        self._closed = threading.Event()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
