"""`refit demo --cycles 3` from start to clean exit, with a client asking for predictions."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from refit.project import load_project
from refit.registry import PRODUCTION
from refit.services import open_services
from servers import free_port

pytestmark = pytest.mark.slow


class Client:
    """Asks for a prediction as fast as one connection allows, from ready until told to stop."""

    def __init__(self, url: str, body: bytes) -> None:
        self.url, self.body = url, body
        self.answers: list[int] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.is_set():
                try:
                    reply = client.post(
                        "/predict", content=self.body, headers={"content-type": "application/json"}
                    )
                except httpx.HTTPError as exc:
                    if not self.stop.is_set():
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if reply.status_code == 200:
                    self.answers.append(reply.json()["version"])
                elif not self.stop.is_set():
                    self.failures.append(f"{reply.status_code}: {reply.text}")
                time.sleep(0.02)


WORKERS = 2  # refit demo's default


def wait_ready(url: str, process: subprocess.Popen[str], lines: list[str], deadline: float) -> None:
    """Until every worker serves a version: each loads the first one at its own poll, and
    until it has, a request it takes is a 503 (the documented start-up answer)."""
    while time.monotonic() < deadline:
        assert process.poll() is None, "refit demo exited before its server was ready"
        serving = {m[1] for line in list(lines) if (m := re.search(r"worker (\d+) serving", line))}
        try:
            ready = httpx.get(f"{url}/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            ready = False
        if ready and len(serving) >= WORKERS:
            return
        time.sleep(0.2)
    raise AssertionError("the demo's server was not ready in time")


def test_the_demo_turns_the_loop_three_times(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    project = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFIT_")}
    env.update(OMP_NUM_THREADS="1", REFIT_SERVE__POLL_INTERVAL="0.5")
    args = [sys.executable, "-m", "refit", "demo", str(project), "--cycles", "3"]
    args += ["--port", str(port), "--feed-interval", "1.5", "--ingest", "2s", "--train", "3s"]
    process = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    client: Client | None = None

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip())
            if "training cycles done" in line and client is not None:
                client.stop.set()  # the demo stops next: later refusals are not failures

    reader = threading.Thread(target=read)
    reader.start()
    try:
        wait_ready(url, process, lines, time.monotonic() + 180)
        client = Client(url, (project / "request.json").read_bytes())
        client.thread.start()
        code = process.wait(timeout=300)
    finally:
        if client is not None:
            client.stop.set()
            client.thread.join(15)
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(10)
        assert process.stdout is not None
        process.stdout.close()
    output = "\n".join(lines)
    assert code == 0, output
    assert client is not None
    assert client.answers, output
    assert client.failures == [], output

    with open_services(load_project(project)) as services:
        registry, name = services.registry, services.project.spec.name
        snapshots = registry.list_snapshots(name)
        versions = registry.list_versions(name)
        gates = [d for d in registry.list_decisions(name) if d.action == "gate"]
        production = registry.alias_version(name, PRODUCTION)
        runs = registry.list_runs(name)
    assert len(snapshots) >= 3
    assert len(versions) >= 3
    assert len(gates) >= 3 and all(d.reason for d in gates)
    promoted = {d.candidate_version for d in gates if d.promoted}
    assert set(client.answers) <= promoted, "every answer came from a promoted version"
    assert client.answers[-1] == production, output
    assert "running" not in {r.status for r in runs}, "no run is left half-done"
    assert "refit demo: stopped" in output
    assert "POST /predict with request.json" in output
