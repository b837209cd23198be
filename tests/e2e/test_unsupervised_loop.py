"""The loop under a real `refit up` for the two tasks without a learnt target, from the bundled
examples: ingest, train (a clustering's search of k), gate, promote, serve (cluster ids with
distances; anomaly flags with scores) and a monitor run judging what was served."""

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

from refit.examples import create_project, example_rows
from refit.project import load_project
from refit.registry.monitoring import latest_report
from refit.services import open_services
from refit.spec import SPEC_FILE
from servers import free_port

pytestmark = pytest.mark.slow

DEADLINE = 90.0


def project(tmp_path: Path, example: str) -> Path:
    """The example, untrained, on fast schedules: `refit up` does every step."""
    root = create_project(tmp_path / example, example)
    spec = yaml.safe_load((root / SPEC_FILE).read_text())
    spec["schedule"] = {"ingest": "2s", "train": "3s", "monitor": "2s", "metrics_port": None}
    spec["monitor"] = {"window": "5m", "min_rows": 20, "min_labels": 10, "flush_seconds": 0.5}
    (root / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
    return root


@contextmanager
def up(root: Path) -> Iterator[tuple[str, list[str]]]:
    """`refit up` on the project: its address and its output lines (as they come)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFIT_")}
    env.update(OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "refit", "up", "-p", str(root), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        with process.stdout:
            lines.extend(line.rstrip("\n") for line in process.stdout)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield f"http://127.0.0.1:{port}", lines
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(5)


def wait_for(check: Callable[[], Any], what: Callable[[], str]) -> Any:
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what()}")


def served(url: str, name: str) -> dict[str, Any] | None:
    try:
        reply = httpx.get(f"{url}/v1/models/{name}", timeout=2)
        found: dict[str, Any] | None = reply.json()["served"]
        return found
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return None


def records(example: str, drop: list[str], count: int) -> list[dict[str, Any]]:
    rows = example_rows(example).drop(columns=drop).tail(count)
    return list(rows.to_dict(orient="records"))


def drift_says(root: Path) -> str:
    """What `refit drift` prints of the latest report (it must not fail)."""
    done = subprocess.run(
        [sys.executable, "-m", "refit", "drift", "-p", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_clustering_goes_round_the_loop(tmp_path: Path) -> None:
    root = project(tmp_path, "clusters")
    with up(root) as (url, lines), open_services(load_project(root)) as services:
        wait_for(lambda: served(url, "clusters"), lambda: "v1 served\n" + "\n".join(lines))
        version = services.registry.get_version("clusters", 1)
        k = version.params["n_clusters"]
        assert k == 3  # the search of k on the first batch finds the three cultivars
        assert version.tuning is not None and len(version.tuning["trials"]) == 9
        assert "silhouette@n_clusters=3" in version.metrics
        batch = records("clusters", [], 40)
        reply = httpx.post(f"{url}/predict/batch", json={"records": batch}, timeout=10)
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        assert set(answer["predictions"]) <= set(range(k))
        assert len(answer["distances"]) == 40
        assert all(set(d) == {str(i) for i in range(k)} for d in answer["distances"])
        for ids, distances in zip(answer["predictions"], answer["distances"], strict=True):
            assert min(distances, key=distances.__getitem__) == str(ids)  # the nearest centre
        report = wait_for(
            lambda: (r := latest_report(services.registry, "clusters")) and r.rows >= 40 and r,
            lambda: "a monitor report\n" + "\n".join(lines),
        )
    assert "prediction" in report.drift  # the cluster ids against the holdout's
    assert report.drift["prediction"]["kind"] == "category"
    quality = report.quality["1"]
    assert quality["live"] is None and "a clustering has no true values" in quality["skipped"]
    assert "a clustering has no true values: live quality is not judged" in drift_says(root)


def test_an_anomaly_detector_goes_round_the_loop(tmp_path: Path) -> None:
    root = project(tmp_path, "anomalies")
    with up(root) as (url, lines), open_services(load_project(root)) as services:
        wait_for(lambda: served(url, "anomalies"), lambda: "v1 served\n" + "\n".join(lines))
        version = services.registry.get_version("anomalies", 1)
        assert version.metric == "roc_auc" and version.metrics["roc_auc"] > 0.8
        assert version.params["contamination"] == 0.05
        rows = example_rows("anomalies").tail(60)
        batch = list(rows.drop(columns=["malignant"]).to_dict(orient="records"))
        reply = httpx.post(f"{url}/predict/batch", json={"records": batch}, timeout=10)
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        assert all(isinstance(flag, bool) for flag in answer["predictions"])
        assert [s > 0 for s in answer["scores"]] == answer["predictions"]
        told = [
            {"id": answer["id"], "row": i, "value": bool(label)}
            for i, label in enumerate(rows["malignant"])
        ]
        feedback = httpx.post(
            f"{url}/v1/models/anomalies/feedback", json={"feedback": told}, timeout=10
        )
        assert feedback.status_code < 300, feedback.text
        report = wait_for(
            lambda: (
                (r := latest_report(services.registry, "anomalies"))
                and (r.quality.get("1") or {}).get("live")
                and r
            ),
            lambda: "a report with live quality\n" + "\n".join(lines),
        )
    assert report.drift["prediction"]["kind"] == "numeric"  # the scores against the holdout's
    live = report.quality["1"]["live"]
    assert live["rows"] == 60 and {"f1", "precision", "recall", "roc_auc"} <= set(live)
    assert "live roc_auc" in drift_says(root)
