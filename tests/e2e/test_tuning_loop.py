"""A tuned nearest-neighbours model through the whole loop under a real `refit up`: ingest,
tune, train, gate, promote and serve; the next snapshot's search starts
from production's best."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from refit.examples import create_project, drop_batch, example_rows
from refit.flavors import load_model
from refit.project import load_project
from refit.run.scheduler import TRIAL_PREFIX
from refit.services import open_services
from refit.signature import Signature
from refit.spec import SPEC_FILE, ArtifactFormat
from servers import free_port

pytestmark = pytest.mark.slow

NAME = "breast-cancer"
DEADLINE = 90.0  # a run imports scikit-learn and fits 7 models: slow on 2 busy cores
CHOICES = [3, 9, 15]


def tuned_project(root: Path) -> Path:
    """The breast-cancer example with a kNN classifier whose k is searched on a grid; nothing
    ingested yet: `refit up` does it all."""
    create_project(root, NAME)
    spec = yaml.safe_load((root / SPEC_FILE).read_text())
    spec["model"].update(
        estimator="sklearn.neighbors.KNeighborsClassifier",
        params={},
        tune={"params": {"n_neighbors": CHOICES}, "sampler": "grid", "folds": 2, "jobs": 1},
    )
    spec["schedule"] = {"ingest": "2s", "train": "2s", "monitor": None, "metrics_port": None}
    (root / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
    return root


def wait_for(check: Callable[[], Any], what: str, within: float = DEADLINE) -> Any:
    end = time.monotonic() + within
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_tuned_knn_goes_through_the_loop_under_refit_up(tmp_path: Path) -> None:
    root = tuned_project(tmp_path / "p")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFIT_")}
    up = subprocess.Popen(
        [sys.executable, "-m", "refit", "up", "-p", str(root), "--port", str(port)],
        env={**env, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert up.stdout is not None
        with up.stdout:
            lines.extend(line.rstrip("\n") for line in up.stdout)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def served() -> int | None:
        try:
            return int(httpx.get(f"{url}/v1/models/{NAME}", timeout=2).json()["served"]["version"])
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            return None

    try:
        wait_for(lambda: served() == 1, f"v1 served\n{lines}")
        with open_services(load_project(root)) as services:
            v1 = services.registry.get_version(NAME, 1)
            model = load_model(
                services.store.get(v1.artifact_uri, v1.artifact_sha256),
                ArtifactFormat.JOBLIB,
                v1.flavor,
                Signature.from_dict(v1.signature),
            )
        records = example_rows(NAME).drop(columns=["diagnosis"]).iloc[:40]
        reply = httpx.post(
            f"{url}/predict/batch", json={"records": records.to_dict("records")}, timeout=10
        )
        assert reply.status_code == 200, reply.text
        answered = reply.json()

        assert v1.tuning is not None
        trials = v1.tuning["trials"]
        assert [t["params"]["n_neighbors"] for t in trials] == CHOICES
        assert all(t["state"] == "complete" and np.isfinite(t["score"]) for t in trials)
        best = trials[v1.tuning["best"]]
        assert v1.params["n_neighbors"] == best["params"]["n_neighbors"]
        assert v1.onnx is not None and v1.onnx["status"] == "ok"
        assert answered["predictions"] == [str(label) for label in model.predict(records)]
        wait_for(lambda: "trained breast-cancer v1" in "\n".join(said_by_train(lines)), "v1's line")
        trial_lines = [line for line in said_by_train(lines) if line.startswith(TRIAL_PREFIX)]
        assert [line.split()[1] for line in trial_lines] == ["1/3", "2/3", "3/3"]

        drop_batch(root, NAME, 2, 2)  # the next snapshot: v2's search starts from v1's best
        wait_for(lambda: len(services_versions(root)) == 2, f"v2 trained\n{lines}")
        v2 = services_versions(root)[0]
        assert v2.tuning is not None and v2.tuning["warm_start"] is True
        assert v2.tuning["trials"][0]["params"] == best["params"]
        assert len(v2.tuning["trials"]) == 3
    finally:
        up.terminate()
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        reader.join(5)


def said_by_train(lines: list[str]) -> list[str]:
    """What `refit up` printed for the train job (`HH:MM:SS train     ...`), less the prefix."""
    said = [line.split(maxsplit=1) for line in lines]
    return [
        parts[1].removeprefix("train").lstrip()
        for parts in said
        if len(parts) == 2 and parts[1].startswith("train ")
    ]


def services_versions(root: Path) -> list[Any]:
    with open_services(load_project(root)) as services:
        return services.registry.list_versions(NAME)
