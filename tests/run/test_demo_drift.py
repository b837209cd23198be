"""`refit demo`'s drifting world reaches the monitor: its requests follow the feed's drift,
the monitor flags it, and a training run is caused by it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from refit.project import load_project
from refit.run.demo import Feed, create_demo_project
from refit.services import open_services
from servers import free_port


def test_the_demo_project_is_monitored_on_a_fast_schedule_and_retrains_on_drift(
    tmp_path: Path,
) -> None:
    spec = load_project(create_demo_project(tmp_path / "demo", monitor="4s")).spec
    assert spec.schedule.monitor == "4s"
    assert spec.monitor.retrain_on_drift is True
    assert spec.monitor.window == "30s" and spec.monitor.min_rows == 100


def test_the_demos_requests_follow_the_feeds_drift_without_their_labels(tmp_path: Path) -> None:
    feed = Feed(tmp_path / "incoming")
    early = pd.DataFrame(feed.requests(400))
    feed.count = 20  # twenty batches later
    late = pd.DataFrame(feed.requests(400))
    assert "diagnosis" not in early.columns and len(late) == 400
    json.dumps(feed.requests(2))  # plain values, ready to send
    # Batch 21's world is (1 + 0.02 * 21) / (1 + 0.02 * 1) times batch 1's, give or take.
    ratio = late["mean_radius"].mean() / early["mean_radius"].mean()
    assert ratio == pytest.approx(1.42 / 1.02, rel=0.05)
    # Asking does not touch the feed's own random numbers: its batches stay the same.
    feed_first = Feed(tmp_path / "fourth")
    feed_first.requests(50)
    assert feed_first.batch(1).equals(Feed(tmp_path / "fifth").batch(1))


@pytest.mark.slow
def test_the_demo_shows_drift_flagged_and_a_training_run_caused_by_it(tmp_path: Path) -> None:
    port = free_port()
    project = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFIT_")}
    env.update(OMP_NUM_THREADS="1", REFIT_SERVE__POLL_INTERVAL="0.5")
    env.update(REFIT_SCHEDULE__METRICS_PORT=str(free_port()))
    args = [sys.executable, "-m", "refit", "demo", str(project), "--workers", "1"]
    args += ["--port", str(port), "--feed-interval", "1.5", "--ingest", "2s", "--train", "3s"]
    args += ["--monitor", "3s", "--duration", "150"]
    process = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                lines.append(line.rstrip())
                if "caused by drift in" in line:
                    seen.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        deadline = time.monotonic() + 150
        while not seen.wait(0.5) and process.poll() is None and time.monotonic() < deadline:
            continue
        process.send_signal(signal.SIGINT)  # Ctrl-C: the demo stops cleanly
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(10)
    output = "\n".join(lines)
    assert seen.is_set(), output
    assert code == 0, output
    monitor = [line for line in lines if " monitor " in line]
    assert any("drift in" in line and "asked for training" in line for line in monitor), output
    trained = next(line for line in lines if "caused by drift in" in line)
    assert " train " in trained and "trained breast-cancer v" in trained
    with open_services(load_project(project)) as services:
        runs = services.registry.list_runs(services.project.spec.name, limit=100)
        decisions = services.registry.list_decisions(services.project.spec.name, limit=200)
    caused = [r for r in runs if r.trigger == "drift"]
    assert caused and all(r.cause and r.cause.startswith("drift in ") for r in caused)
    # The gate promotes only what is clearly better, and the demo's lines show the intervals.
    gated = [
        line for line in lines if "trained breast-cancer v" in line and " vs production" in line
    ]
    interval = re.compile(r"[+-]\d+\.\d+ \[-?\d+\.\d+, -?\d+\.\d+\] at 95% \(delong, ")
    assert gated and all(interval.search(line) for line in gated), output
    for decision in decisions:
        if decision.action == "gate" and decision.promoted and decision.evidence is not None:
            assert decision.evidence["low"] > 0, decision.reason
