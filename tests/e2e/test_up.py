"""`refit up` as a process: a killed server is restarted and serves again; SIGTERM stops all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from refit.data.ingest import run_ingest
from refit.errors import ListenError
from refit.examples import create_project
from refit.project import load_project
from refit.run.local import run_up
from refit.run.supervisor import FatalExitError
from refit.services import open_services
from refit.train.run import run_training
from servers import free_port

pytestmark = pytest.mark.slow


def children_of(pid: int) -> dict[int, str]:
    """The direct children of a process, with their command lines."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid:
            found[int(entry.name)] = cmdline
    return found


def wait_for(check: object, deadline: float, what: str) -> None:
    assert callable(check)
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def answers(url: str, body: bytes) -> bool:
    try:
        reply = httpx.post(
            f"{url}/predict", content=body, headers={"content-type": "application/json"}, timeout=5
        )
    except httpx.HTTPError:
        return False
    return reply.status_code == 200 and reply.json()["version"] == 1


def test_a_killed_server_is_restarted_and_serves_again(tmp_path: Path) -> None:
    root = create_project(tmp_path / "p", "breast-cancer")
    with open_services(load_project(root)) as services:
        run_ingest(services.project, services.registry, services.store)
        run_training(services)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    body = (root / "request.json").read_bytes()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFIT_")}
    env.update(OMP_NUM_THREADS="1", REFIT_SCHEDULE__INGEST="1h", REFIT_SCHEDULE__TRAIN="1h")
    up = subprocess.Popen(
        [sys.executable, "-m", "refit", "up", "-p", str(root), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(line.rstrip() for line in up.stdout or [])
    )
    reader.start()
    try:
        wait_for(lambda: answers(url, body), time.monotonic() + 120, "the server to answer")
        servers = [pid for pid, cmd in children_of(up.pid).items() if " serve " in cmd]
        assert len(servers) == 1, children_of(up.pid)
        os.kill(servers[0], signal.SIGKILL)
        wait_for(
            lambda: any("exited with code -9; restarting" in line for line in lines),
            time.monotonic() + 30,
            "the supervisor to notice",
        )
        wait_for(lambda: answers(url, body), time.monotonic() + 120, "the restarted server")
        restarted = [pid for pid, cmd in children_of(up.pid).items() if " serve " in cmd]
        assert restarted and restarted[0] != servers[0]
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        reader.join(10)
        if up.stdout is not None:
            up.stdout.close()
    output = "\n".join(lines)
    assert "refit up: stopped" in output
    assert not children_of(up.pid), "no child outlives refit up"


def test_a_server_that_cannot_listen_is_not_restarted(tmp_path: Path) -> None:
    # `refit up` checks the port itself first; here the server finds it taken on its own, as it
    # would if another process took the port in between.
    root = create_project(tmp_path / "p", "breast-cancer")
    lines: list[tuple[str, str]] = []
    stop = threading.Event()
    safety = threading.Timer(120, stop.set)  # fail, rather than hang, if it is restarted
    safety.start()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        try:
            with pytest.raises(FatalExitError) as raised:
                run_up(
                    load_project(root),
                    stop,
                    lambda name, line: lines.append((name, line)),
                    port=port,
                )
        finally:
            safety.cancel()
    assert not stop.is_set()
    assert (raised.value.child, raised.value.code) == ("serve", ListenError.exit_code)
    said = [line for name, line in lines if name == "serve"]
    assert said == [
        f"error: port {port} on 127.0.0.1 is in use by another process: stop it, "
        "or choose another port with --port (or serve.port)"
    ]
