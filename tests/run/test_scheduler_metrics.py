"""The scheduler's `/metrics`: every value read from the registry at the scrape (so any process's
work counts, and two schedulers agree), in Prometheus' text format; a registry that cannot be
read answers `refit_scheduler_scrape_error 1`; the port is chosen, refused when busy, or off."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

import refit.run.metrics as scheduler_metrics
from refit.cli import app
from refit.cli._output import run_app
from refit.examples import create_blank_project
from refit.project import load_project
from refit.registry import PRODUCTION, Registry
from refit.registry.monitoring import add_report, request_training
from refit.registry.tables import (
    AliasRow,
    Base,
    DecisionRow,
    IngestBatchRow,
    ModelVersionRow,
    MonitorReportRow,
    SnapshotRow,
    TrainingRunRow,
)
from refit.run.local import children
from refit.run.metrics import MetricsServer, render

NAME = "churn"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(body: bytes) -> Samples:
    """Every sample of a scrape: (name, labels) -> value."""
    found: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset({"model": NAME, **labels}.items()))]


def scrape(registry: Registry, now: datetime = NOW) -> Samples:
    collector = scheduler_metrics.RegistryCollector(registry, NAME, clock=lambda: now)
    return samples(_text(collector))


def _text(collector: scheduler_metrics.RegistryCollector) -> bytes:
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import generate_latest

    holder = CollectorRegistry(auto_describe=False)
    holder.register(collector)
    return generate_latest(holder)


def add(registry: Registry, *rows: Base) -> None:
    with registry.write() as s:
        for row in rows:
            s.add(row)
            s.flush()


def snapshot(id_: str, made: datetime, project: str = NAME) -> SnapshotRow:
    return SnapshotRow(
        id=id_,
        project=project,
        created_at=made,
        uri=f"snapshots/{id_}.parquet",
        sha256="0" * 64,
        size_bytes=1,
        row_count=10,
        mode="append",
        parent_id=None,
        columns={},
        stats={},
    )


def batch(status: str, valid: int, rejected: int, snapshot_id: str | None = None) -> IngestBatchRow:
    return IngestBatchRow(
        project=NAME,
        status=status,
        description="a batch",
        rows_read=valid + rejected,
        rows_valid=valid,
        rows_rejected=rejected,
        rejects_uri=None,
        rejects_sha256=None,
        snapshot_id=snapshot_id,
        reason=None,
    )


def run(
    id_: str, status: str, trigger: str, seconds: float | None, started: datetime = NOW
) -> TrainingRunRow:
    return TrainingRunRow(
        id=id_,
        name=NAME,
        snapshot_id="s1",
        status=status,
        trigger=trigger,
        started_at=started,
        finished_at=None if seconds is None else started + timedelta(seconds=seconds),
        host="h",
        pid=1,
        version=None,
        error=None,
        timings={},
    )


def version(number: int, metrics: dict[str, object]) -> ModelVersionRow:
    return ModelVersionRow(
        name=NAME,
        version=number,
        task="classification",
        flavor="sklearn",
        format="joblib",
        artifact_uri="models/x.joblib",
        artifact_sha256="0" * 64,
        artifact_size=1,
        signature={},
        params={},
        metric="roc_auc",
        metrics=metrics,
        snapshot_id="s1",
        run_id="r1",
        code_revision=None,
    )


def gate(promoted: bool, candidate: int) -> DecisionRow:
    return DecisionRow(
        name=NAME,
        action="gate",
        alias=PRODUCTION,
        promoted=promoted,
        candidate_version=candidate,
        previous_version=None,
        metric="roc_auc",
        candidate_value=0.9,
        champion_value=None,
        reason="a reason",
        actor="test",
    )


def fill(registry: Registry) -> None:
    """A model's history: 2 snapshots, 4 batches, 5 runs, 2 versions, 3 gate decisions,
    production on v2 for 10 minutes, and one monitor report."""
    add(
        registry,
        snapshot("s1", NOW - timedelta(hours=2)),
        snapshot("s2", NOW - timedelta(seconds=90)),
        snapshot("elsewhere", NOW, project="other"),
        batch("accepted", 80, 3, "s1"),
        batch("accepted", 40, 1, "s2"),
        batch("refused", 2, 50),
        batch("rebuilt", 120, 4, "s2"),
        run("r1", "succeeded", "schedule", 4.0),
        run("r2", "succeeded", "schedule", 40.0),
        run("r3", "failed", "manual", 0.5),
        run("r4", "succeeded", "drift", 7.0),
        run("r5", "running", "schedule", None),
        version(1, {"roc_auc": 0.91, "accuracy": 0.88, "note": "text", "flag": True}),
        version(2, {"roc_auc": 0.95, "accuracy": 0.9, "log_loss": None}),
        gate(True, 1),
        gate(True, 2),
        gate(False, 2),
        AliasRow(name=NAME, alias=PRODUCTION, version=2, updated_at=NOW - timedelta(minutes=10)),
    )
    report = add_report(
        registry,
        MonitorReportRow(
            name=NAME,
            created_at=NOW - timedelta(minutes=1),
            window_start=NOW - timedelta(hours=1),
            window_end=NOW,
            rows=500,
            versions=[2],
            drifted=["tenure"],
            drift={
                "tenure": {"kind": "numeric", "drifted": True, "score": 0.8, "psi": 0.4},
                "plan": {"kind": "category", "drifted": False, "score": 0.01},
                "prediction": {"kind": "category", "drifted": False, "score": 0.02},
            },
            quality={
                "2": {
                    "rows": 500,
                    "labelled": 120,
                    "metric": "roc_auc",
                    "holdout": 0.95,
                    "live": {"accuracy": 0.8, "f1": 0.75, "rows": 120},
                    "estimated": {"accuracy": 0.86, "rows": 500},
                },
                "1": {
                    "rows": 20,
                    "labelled": 7,
                    "metric": "roc_auc",
                    "holdout": 0.91,
                    "live": None,  # fewer labelled rows than monitor.min_labels
                    "estimated": None,
                },
            },
            cause="drift in tenure",
        ),
    )
    request_training(registry, NAME, "drift", "drift in tenure", report.id)


def test_an_empty_registry_answers_zeros_and_no_error(registry: Registry) -> None:
    found = scrape(registry)
    assert value(found, "refit_snapshots_total") == 0
    assert value(found, "refit_ingested_rows_total") == 0
    assert value(found, "refit_model_production_version") == 0
    assert value(found, "refit_training_requests_open") == 0
    assert value(found, "refit_gate_decisions_total", outcome="promoted") == 0
    assert found[("refit_scheduler_scrape_error", frozenset())] == 0
    names = {name for name, _ in found}
    assert "refit_last_snapshot_age_seconds" not in names  # no snapshot: no age at all
    assert "refit_last_promotion_age_seconds" not in names
    assert "refit_drift_score" not in names


def test_every_value_comes_from_the_registry(registry: Registry) -> None:
    fill(registry)
    found = scrape(registry)

    assert value(found, "refit_snapshots_total") == 2  # another model's is not counted
    assert value(found, "refit_last_snapshot_age_seconds") == 90
    assert value(found, "refit_ingest_batches_total", status="accepted") == 2
    assert value(found, "refit_ingest_batches_total", status="refused") == 1
    assert value(found, "refit_ingest_batches_total", status="rebuilt") == 1
    assert value(found, "refit_ingested_rows_total") == 120  # a rebuild's rows are not new
    assert value(found, "refit_rejected_rows_total") == 3 + 1 + 50

    runs = "refit_training_runs_total"
    assert value(found, runs, status="succeeded", trigger="schedule") == 2
    assert value(found, runs, status="failed", trigger="manual") == 1
    assert value(found, runs, status="succeeded", trigger="drift") == 1
    assert not any(n == runs and ("status", "running") in labels for n, labels in found)
    assert value(found, "refit_training_runs_running") == 1

    duration = "refit_training_run_duration_seconds"
    succeeded = {"status": "succeeded"}
    assert value(found, f"{duration}_count", **succeeded) == 3
    assert value(found, f"{duration}_sum", **succeeded) == 51
    assert value(found, f"{duration}_bucket", le="5.0", **succeeded) == 1
    assert value(found, f"{duration}_bucket", le="10.0", **succeeded) == 2
    assert value(found, f"{duration}_bucket", le="60.0", **succeeded) == 3
    assert value(found, f"{duration}_bucket", le="+Inf", **succeeded) == 3
    assert value(found, f"{duration}_bucket", le="1.0", status="failed") == 1

    assert value(found, "refit_gate_decisions_total", outcome="promoted") == 2
    assert value(found, "refit_gate_decisions_total", outcome="rejected") == 1
    assert value(found, "refit_model_production_version") == 2
    assert value(found, "refit_last_promotion_age_seconds") == 600

    metric = "refit_model_version_metric"
    assert value(found, metric, version="1", metric="roc_auc") == 0.91
    assert value(found, metric, version="2", metric="accuracy") == 0.9
    exported = {dict(labels)["metric"] for name, labels in found if name == metric}
    assert exported == {"roc_auc", "accuracy"}  # text, booleans and nulls are left out

    assert value(found, "refit_drift_score", feature="tenure") == 0.8
    assert value(found, "refit_drift_flagged", feature="tenure") == 1
    assert value(found, "refit_drift_flagged", feature="plan") == 0
    assert value(found, "refit_drift_flagged", feature="prediction") == 0
    assert value(found, "refit_live_quality", version="2", metric="accuracy") == 0.8
    assert value(found, "refit_live_quality", version="2", metric="f1") == 0.75
    assert value(found, "refit_estimated_quality", version="2", metric="accuracy") == 0.86
    assert value(found, "refit_labelled_rows", version="2") == 120
    assert value(found, "refit_labelled_rows", version="1") == 7
    assert not any(dict(labels).get("version") == "1" for n, labels in found if "quality" in n)
    assert value(found, "refit_monitor_report_rows") == 500
    assert value(found, "refit_training_requests_open") == 1
    assert found[("refit_scheduler_scrape_error", frozenset())] == 0


def test_two_schedulers_of_one_registry_answer_alike(registry: Registry) -> None:
    fill(registry)
    first = scheduler_metrics.RegistryCollector(registry, NAME, clock=lambda: NOW)
    second = scheduler_metrics.RegistryCollector(registry, NAME, clock=lambda: NOW)
    assert _text(first) == _text(second)


def test_the_durations_are_those_of_the_latest_runs_only(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_metrics, "RUN_WINDOW", 3)
    add(registry, snapshot("s1", NOW))
    for i in range(5):  # the oldest two took 100 s, the newest three 1 s
        took = 100.0 if i < 2 else 1.0
        add(registry, run(f"r{i}", "succeeded", "schedule", took, NOW + timedelta(minutes=i)))
    found = scrape(registry)
    duration = "refit_training_run_duration_seconds"
    assert value(found, f"{duration}_count", status="succeeded") == 3
    assert value(found, f"{duration}_sum", status="succeeded") == 3
    assert value(found, "refit_training_runs_total", status="succeeded", trigger="schedule") == 5


def test_a_registry_that_cannot_be_read_is_a_scrape_error(registry: Registry) -> None:
    fill(registry)
    with registry.write() as s:
        s.execute(text("DROP TABLE decisions"))
    found = scrape(registry)
    assert found == {("refit_scheduler_scrape_error", frozenset()): 1.0}


# --- the endpoint --------------------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another socket listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_the_endpoint_serves_the_text_format_until_closed(registry: Registry) -> None:
    fill(registry)
    server = MetricsServer(registry, NAME, "127.0.0.1", 0)
    try:
        answer = httpx.get(server.url, timeout=10)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        found = samples(answer.content)
        assert value(found, "refit_snapshots_total") == 2
        assert samples(render(registry, NAME)).keys() == found.keys()
    finally:
        server.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url, timeout=2)


def test_a_busy_port_is_an_os_error(registry: Registry, busy_port: int) -> None:
    with pytest.raises(OSError):
        MetricsServer(registry, NAME, "127.0.0.1", busy_port)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return create_blank_project(tmp_path / "mine")


@pytest.mark.parametrize("command", ["scheduler", "up"])
def test_a_metrics_port_in_use_exits_10_naming_the_flag(
    capsys: pytest.CaptureFixture[str], project: Path, busy_port: int, command: str
) -> None:
    args = [command, "-p", str(project), "--metrics-port", str(busy_port)]
    assert run_app(app, args) == 10
    printed = capsys.readouterr().err
    assert f"port {busy_port} on 127.0.0.1 is in use" in printed
    assert "--metrics-port (or schedule.metrics_port)" in printed


@pytest.mark.parametrize("command", ["scheduler", "up"])
@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("70000", "Input should be less than or equal to 65535"),
        ("on", "expected a port number (0 to 65535) or off"),
        ("-1", "expected a port number (0 to 65535) or off"),
    ],
)
def test_a_bad_metrics_port_is_a_usage_error_naming_the_flag(
    capsys: pytest.CaptureFixture[str], project: Path, command: str, given: str, problem: str
) -> None:
    assert run_app(app, [command, "-p", str(project), "--metrics-port", given]) == 2
    printed = capsys.readouterr().err
    assert f"Invalid value for '--metrics-port': {problem}" in printed


@pytest.mark.parametrize(
    ("written", "port"), [("off", None), ("false", None), ("0", 0), ("9100", 9100), ("", 9464)]
)
def test_the_spec_says_where_or_off(project: Path, written: str, port: int | None) -> None:
    spec = project / "refit.yaml"
    if written:
        spec.write_text(spec.read_text() + f"schedule:\n  metrics_port: {written}\n")
    assert load_project(project, {}).spec.schedule.metrics_port == port
    environ = {"REFIT_SCHEDULE__METRICS_PORT": "off"}
    assert load_project(project, environ).spec.schedule.metrics_port is None


def test_refit_up_hands_its_host_and_metrics_port_to_the_scheduler(project: Path) -> None:
    scheduler, serve = children(load_project(project), host="::1", metrics_port="off")
    assert scheduler.args[-4:] == ["--host", "::1", "--metrics-port", "off"]
    assert serve.args[serve.args.index("--host") + 1] == "::1"
