"""A real Prometheus (Debian's `prometheus`, run with its own config on 127.0.0.1) scrapes a
running `refit serve` and a running `refit scheduler`, and reads refit's metrics back through
its query API; `promtool check metrics` passes on both live endpoints.

The scheduler runs no job here (its schedules are off): it only answers `/metrics`, from the
registry, so what the test process writes there (a new snapshot and a training run) shows in
Prometheus at its next scrapes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from refit.project import load_project
from refit.services import open_services
from refit.spec import SPEC_FILE
from servers import free_port
from serving import NAME, Server, example_records, make_project, retrain, serving, stop

pytestmark = pytest.mark.slow

MISSING = "Prometheus is not installed: apt-get install prometheus (.ci/run installs it)"
SCRAPE_WITHIN = 60.0  # its first scrape comes ~6 s after it starts; more on 2 busy cores
BATCH = 5


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{MISSING}; CI must run these tests, not skip them")
        pytest.skip(MISSING)
    return path


def read(url: str, timeout: float = 10.0) -> bytes:
    """GET `url` with the standard library (only refit serve's answers are checked against
    its OpenAPI document, and this is not one)."""
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        body: bytes = answer.read()
        return body


# --- the processes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example with v1 in production; its scheduler runs no job."""
    root = make_project(tmp_path_factory.mktemp("prometheus") / "p")
    spec = yaml.safe_load((root / SPEC_FILE).read_text())
    spec["schedule"] = {"ingest": None, "train": None, "monitor": None}
    (root / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
    return root


@pytest.fixture(scope="module")
def server(project: Path) -> Iterator[Server]:
    with serving(project, workers=2) as running:
        yield running


@dataclass
class Scheduler:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def scheduler(project: Path) -> Iterator[Scheduler]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFIT_")}
    args = [sys.executable, "-m", "refit", "scheduler", "-p", str(project)]
    args += ["--host", "127.0.0.1", "--metrics-port", str(port)]
    log = project.parent / "scheduler.log"
    with log.open("wb") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    running = Scheduler(process, f"http://127.0.0.1:{port}/metrics", log)
    try:
        deadline = time.monotonic() + 90
        while f"metrics: {running.url}" not in running.output():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"refit scheduler did not serve /metrics:\n{running.output()}")
            time.sleep(0.2)
        yield running
    finally:
        code = stop(process)
        assert code == 0, f"refit scheduler exited with {code}:\n{running.output()}"


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def query(self, expression: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        answer = json.loads(read(url))
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, expression: str) -> float | None:
        """The value of a query that gives one series (None: no series yet)."""
        result = self.query(expression)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def wait_for(self, expression: str, wanted: float) -> None:
        deadline = time.monotonic() + SCRAPE_WITHIN
        seen = None
        while time.monotonic() < deadline:
            seen = self.value(expression)
            if seen == wanted:
                return
            time.sleep(0.5)
        log = self.log.read_text(errors="replace")[-3000:]
        pytest.fail(f"Prometheus says {expression} = {seen}, not {wanted}:\n{log}")


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, server: Server, scheduler: Scheduler
) -> Iterator[Prometheus]:
    binary = tool("prometheus")
    folder = tmp_path_factory.mktemp("prometheus-server")
    serve_target = server.url.removeprefix("http://")
    scheduler_target = scheduler.url.removeprefix("http://").removesuffix("/metrics")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "serve", "static_configs": [{"targets": [serve_target]}]},
            {"job_name": "scheduler", "static_configs": [{"targets": [scheduler_target]}]},
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    args = [
        binary,
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    log = folder / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    running = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + SCRAPE_WITHIN
        while True:
            try:
                if read(f"{running.url}/-/ready", timeout=2) is not None:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prometheus did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# --- the tests ------------------------------------------------------------------------------


def test_prometheus_reads_the_servers_predictions(server: Server, prometheus: Prometheus) -> None:
    records = example_records(BATCH)
    for record in records:
        assert server.http.post("/predict", json=record).status_code == 200
    assert server.http.post("/predict/batch", json={"records": records}).status_code == 200

    prometheus.wait_for('up{job="serve"}', 1)
    expression = f'sum(refit_predicted_rows_total{{job="serve",model="{NAME}"}})'
    prometheus.wait_for(expression, 2 * BATCH)
    prometheus.wait_for(f'refit_model_version{{job="serve",model="{NAME}"}}', 1)


def test_prometheus_reads_the_schedulers_figures_after_a_training_run(
    project: Path, prometheus: Prometheus
) -> None:
    prometheus.wait_for('up{job="scheduler"}', 1)
    where = f'job="scheduler",model="{NAME}"'
    prometheus.wait_for(f"refit_snapshots_total{{{where}}}", 1)
    prometheus.wait_for(f'sum(refit_training_runs_total{{{where},status="succeeded"}})', 1)
    prometheus.wait_for(f"refit_model_production_version{{{where}}}", 1)
    prometheus.wait_for("refit_scheduler_scrape_error", 0)

    with open_services(load_project(project)) as services:  # another process than the scheduler
        retrain(services, project, 2)
        production = services.registry.alias_version(NAME)
    prometheus.wait_for(f"refit_snapshots_total{{{where}}}", 2)
    prometheus.wait_for(f'sum(refit_training_runs_total{{{where},status="succeeded"}})', 2)
    prometheus.wait_for(f"sum(refit_gate_decisions_total{{{where}}})", 2)
    prometheus.wait_for(f"refit_model_production_version{{{where}}}", float(production or 0))
    count = f'refit_training_run_duration_seconds_count{{{where},status="succeeded"}}'
    prometheus.wait_for(count, 2)
    metrics = prometheus.query(f'refit_model_version_metric{{{where},metric="roc_auc"}}')
    assert {s["metric"]["version"] for s in metrics} == {"1", "2"}


def promtool_check(body: bytes) -> subprocess.CompletedProcess[bytes]:
    promtool = tool("promtool")
    return subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=60
    )


def test_promtool_passes_the_servers_live_metrics(server: Server) -> None:
    record = example_records(1)[0]
    assert server.http.post("/predict", json=record).status_code == 200
    answer = server.http.get("/metrics")
    assert answer.status_code == 200
    assert b"refit_predicted_rows_total" in answer.content
    checked = promtool_check(answer.content)
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()
    assert not (checked.stdout + checked.stderr).strip(), checked.stdout + checked.stderr


def test_promtool_passes_the_schedulers_live_metrics(scheduler: Scheduler) -> None:
    body = read(scheduler.url)
    assert b"refit_training_runs_total" in body and b"refit_scheduler_scrape_error 0.0" in body
    checked = promtool_check(body)
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()
    assert not (checked.stdout + checked.stderr).strip(), checked.stdout + checked.stderr
