"""SIGKILL at chosen moments of `refit ingest` and `refit train` leaves a consistent registry.

strace's fault injection kills the process exactly when it enters the N-th call of a chosen
system call: the fsyncs and the rename of an artifact write, and the writes of SQLite's
journal (the registry's commits). After every kill, every snapshot and version the registry
knows must have its file, whole, and the next run must work.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from refit.data.ingest import run_ingest
from refit.examples import create_project, example_rows
from refit.project import load_project
from refit.services import open_services
from refit.train.run import run_training

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed"),
]

INCOMING = Path("data/incoming")


# Imports refit first, untraced, then has strace attach to this very process before the
# command runs: the kill points land in the command, and startup runs at full speed.
DRIVER = """
import json, os, subprocess, sys, time
import sklearn.ensemble
import refit.data.ingest, refit.train.run  # imported by the commands themselves, not traced
from refit.cli import main

def traced():
    with open("/proc/self/status") as status:
        return any(l.split()[:2] != ["TracerPid:", "0"] for l in status if l.startswith("Tracer"))

options = json.loads(sys.argv[1])
if options:
    subprocess.Popen(["strace", "-f", "-qq", *options, "-p", str(os.getpid())])
    while not traced():
        time.sleep(0.005)
main(sys.argv[2:])
"""


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFIT_")}
    env["OMP_NUM_THREADS"] = "1"
    # Every training run on the same snapshot then ends promoting (the retrains tie), so each
    # makes the writes the kill points were counted on, the promotion's transaction included.
    env["REFIT_GATE__PROMOTE_TIES"] = "true"
    return env


def refit_traced(project: Path, command: str, options: list[str]) -> int:
    """Run `refit COMMAND -p PROJECT` with strace OPTIONS attached; its return code."""
    driver = project.parent / "driver.py"
    driver.write_text(DRIVER)
    args = [sys.executable, str(driver), json.dumps(options), command, "-p", str(project)]
    done = subprocess.run(args, env=environment(), capture_output=True, text=True, timeout=180)
    if done.returncode not in (0, -signal.SIGKILL, 128 + signal.SIGKILL):
        raise AssertionError(
            f"refit {command} {options} exited {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return done.returncode


def refit_killed_at(project: Path, command: str, point: str | None) -> int:
    """Run the command, killed by SIGKILL at `point` (`syscall:when=N`) if given."""
    if point is None:
        return refit_traced(project, command, [])
    syscall = point.split(":")[0]
    options = ["-o", os.devnull, "-e", f"trace={syscall}", "-e", f"inject={point}:signal=KILL"]
    return refit_traced(project, command, options)


def count_calls(project: Path, command: str, syscall: str) -> int:
    """How many times a full run of the command makes `syscall` (run on a copy)."""
    copy = project.with_name(project.name + "-count")
    shutil.copytree(project, copy)
    summary = copy.parent / "count.txt"
    assert refit_traced(copy, command, ["-c", "-o", str(summary), "-e", f"trace={syscall}"]) == 0
    text = summary.read_text()
    shutil.rmtree(copy)
    summary.unlink()
    match = re.search(rf"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?{syscall}$", text, re.M)
    return int(match.group(1)) if match else 0


def assert_consistent(project: Path) -> tuple[int, int]:
    """Every recorded file exists and verifies; returns (snapshots, versions)."""
    with open_services(load_project(project)) as services:
        name = services.project.spec.name
        registry, store = services.registry, services.store
        snapshots = registry.list_snapshots(name)
        for snap in snapshots:
            store.get(snap.uri, snap.sha256)
        versions = registry.list_versions(name)
        for version in versions:
            store.get(version.artifact_uri, version.artifact_sha256)
        production = registry.alias_version(name)
        assert production is None or production in {v.version for v in versions}
        assert all(run.status != "succeeded" or run.version for run in registry.list_runs(name))
        return len(snapshots), len(versions)


def kill_points(project: Path, command: str) -> list[str]:
    # The artifact write: its data fsync, the rename into place, the folder's fsync.
    points = ["fsync:when=1", "rename:when=1", "fsync:when=2"]
    if command == "train":
        points.append("rename:when=2")  # the second artifact: the model's ONNX file
    writes = count_calls(project, command, "pwrite64")
    # SQLite's commits are the last writes of a run: kill across the final stretch of them
    # (the count varies a little from run to run, so the very last one may not be reached).
    points += [f"pwrite64:when={n}" for n in sorted({max(1, writes - k) for k in (0, 3, 8)})]
    return points


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = create_project(tmp_path / "demo", "breast-cancer")
    with open_services(load_project(root)) as services:
        run_ingest(services.project, services.registry, services.store)
        run_training(services)
    return root


def add_rows(project: Path, name: str, start: int, stop: int) -> None:
    example_rows("breast-cancer").iloc[start:stop].to_csv(project / INCOMING / name, index=False)


def test_killed_training_never_leaves_a_version_without_its_artifact(project: Path) -> None:
    add_rows(project, "batch-0002.csv", 341, 569)
    assert refit_killed_at(project, "ingest", None) == 0
    killed = interrupted = 0
    for number, point in enumerate(kill_points(project, "train")):
        # Each point meets the project the points were counted on: a run killed earlier leaves
        # files that the next run then need not write (the store keeps what it holds).
        copy = project.with_name(f"{project.name}-{number}")
        shutil.copytree(project, copy)
        code = refit_killed_at(copy, "train", point)
        assert code in (0, -signal.SIGKILL, 128 + signal.SIGKILL), point
        assert_consistent(copy)
        if code != 0:
            killed += 1
            assert refit_killed_at(copy, "train", None) == 0, point  # the next run succeeds
            with open_services(load_project(copy)) as services:
                runs = services.registry.list_runs("breast-cancer", limit=50)
            assert {r.status for r in runs} <= {"succeeded", "interrupted"}, point
            assert not [r for r in runs if r.status == "running"], point
            interrupted += any(r.status == "interrupted" for r in runs)
            assert_consistent(copy)
        shutil.rmtree(copy)
    assert killed >= 5, "the kill points must hit the training run"
    assert interrupted >= 1


def test_killed_ingest_never_leaves_a_half_made_snapshot(project: Path) -> None:
    add_rows(project, "batch-0002.csv", 341, 569)
    before, _ = assert_consistent(project)
    killed = 0
    for point in kill_points(project, "ingest"):
        code = refit_killed_at(project, "ingest", point)
        assert code in (0, -signal.SIGKILL, 128 + signal.SIGKILL), point
        killed += code != 0
        assert_consistent(project)
    assert killed >= 3, "the kill points must hit the ingest run"
    assert refit_killed_at(project, "ingest", None) == 0
    snapshots, _ = assert_consistent(project)
    assert snapshots == before + 1, "the batch makes exactly one snapshot, however often killed"
