"""The loop closed under `refit up`, every part a real process: predictions from a shifted
world through the real server are logged, the monitor flags the shifted feature and asks for
training, and the next snapshot is trained with trigger "drift" and its cause; wrong labels
sent as feedback push live quality under `monitor.min_quality` and ask for training too."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from refit.data.ingest import run_ingest
from refit.examples import create_project, drop_batch, example_rows
from refit.project import load_project
from refit.registry.monitoring import latest_report, open_request
from refit.registry.tables import TrainingRunRow
from refit.services import Services, open_services
from refit.spec import SPEC_FILE
from refit.train.run import run_training
from servers import free_port

pytestmark = pytest.mark.slow

NAME = "breast-cancer"
DEADLINE = 60.0


def project(tmp_path: Path, **monitor: Any) -> Path:
    """The breast-cancer example with v1 in production, ingesting every 3 s, training
    only when asked (its schedule is an hour), judged every 2 s on the last minute of logs
    written at once (the first ingest and training are done here, before `refit up`)."""
    root = create_project(tmp_path / "p", NAME)
    spec = yaml.safe_load((root / SPEC_FILE).read_text())
    spec["schedule"] = {"ingest": "3s", "train": "1h", "monitor": "2s", "metrics_port": None}
    spec["monitor"] = {"window": "1m", "min_rows": 100, "flush_seconds": 0.5, **monitor}
    (root / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
    with open_services(load_project(root)) as services:
        assert run_ingest(services.project, services.registry, services.store).snapshot
        run_training(services)
    return root


class Up:
    """`refit up` on a project, its output collected line by line."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("REFIT_")}
        env.update(OMP_NUM_THREADS="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "refit", "up", "-p", str(root), "--port", str(self.port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:  # closed at the end, not left to the garbage collector
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(5)


@contextmanager
def running(root: Path) -> Iterator[Up]:
    up = Up(root)
    try:
        wait_for(lambda: served(up) == 1, f"v1 served\n{up.output}")
        yield up
    finally:
        up.stop()


def served(up: Up) -> int | None:
    try:
        reply = httpx.get(f"{up.url}/v1/models/{NAME}", timeout=2)
        return int(reply.json()["served"]["version"])
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return None


def wait_for(check: Callable[[], Any], what: str, within: float = DEADLINE) -> Any:
    end = time.monotonic() + within
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def records(start: int, count: int, shift: dict[str, float] | None = None) -> list[dict[str, Any]]:
    rows = example_rows(NAME).iloc[start : start + count].drop(columns=["diagnosis"])
    for feature, factor in (shift or {}).items():
        rows[feature] = rows[feature] * factor
    return list(rows.to_dict(orient="records"))


def predict(up: Up, batch: list[dict[str, Any]]) -> dict[str, Any]:
    reply = httpx.post(f"{up.url}/predict/batch", json={"records": batch}, timeout=10)
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    assert answer["id"] and reply.headers["x-request-id"] == answer["id"]
    return answer


def asked_run(services: Services, trigger: str) -> TrainingRunRow | None:
    runs = services.registry.list_runs(NAME)
    return next((r for r in runs if r.trigger == trigger and r.status == "succeeded"), None)


def test_drift_in_served_requests_retrains_the_next_snapshot_with_its_cause(
    tmp_path: Path,
) -> None:
    root = project(tmp_path, retrain_on_drift=True)
    with running(root) as up, open_services(load_project(root)) as services:
        for start in (0, 100, 200):
            predict(up, records(start, 100, {"mean_texture": 1.8}))
        report = wait_for(
            lambda: (r := latest_report(services.registry, NAME)) and r.drifted and r,
            f"a report flagging drift\n{up.output}",
        )
        assert "mean_texture" in report.drifted
        assert [f for f in report.drifted if f != "prediction"] == ["mean_texture"]
        request = open_request(services.registry, NAME)
        assert request is not None and request.trigger == "drift"
        assert (
            request.cause.startswith("drift in ")
            and f"(report {request.report_id})" in request.cause
        )

        drop_batch(root, NAME, 2, 2)  # a new snapshot to train on
        run = wait_for(lambda: asked_run(services, "drift"), f"a run asked by drift\n{up.output}")
        assert run.cause == request.cause and run.version == 2
        assert open_request(services.registry, NAME) is None
        wait_for(lambda: "caused by drift in" in up.output, f"the run's line\n{up.output}", 10)
        assert "monitor" in up.output and "drift in mean_texture" in up.output


def test_wrong_labels_sent_as_feedback_retrain_with_trigger_quality(tmp_path: Path) -> None:
    root = project(tmp_path, min_labels=30, min_quality=0.7)
    with running(root) as up, open_services(load_project(root)) as services:
        answers = [predict(up, records(start, 50)) for start in (0, 50, 100)]
        flipped = {"benign": "malignant", "malignant": "benign"}
        for answer in answers:
            items = [
                {"id": answer["id"], "row": row, "value": flipped[label]}
                for row, label in enumerate(answer["predictions"])
            ]
            reply = httpx.post(
                f"{up.url}/v1/models/{NAME}/feedback", json={"feedback": items}, timeout=10
            )
            assert reply.status_code == 202, reply.text
        request = wait_for(
            lambda: open_request(services.registry, NAME),
            f"a training request from live quality\n{up.output}",
        )
        assert request.trigger == "quality"
        assert request.cause.startswith("live quality: roc_auc ")
        assert "labelled rows is below min_quality 0.7" in request.cause
        quality = latest_report(services.registry, NAME).quality["1"]  # type: ignore[union-attr]
        assert quality["labelled"] == 150 and quality["live"]["accuracy"] == 0.0

        drop_batch(root, NAME, 2, 2)
        run = wait_for(
            lambda: asked_run(services, "quality"), f"a run asked by quality\n{up.output}"
        )
        assert run.cause == request.cause
