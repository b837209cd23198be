"""`refit serve` and `refit up` as processes on a port in use: one message, its own exit code."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from refit.errors import ListenError
from refit.examples import create_blank_project

pytestmark = pytest.mark.slow


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another socket listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def refit(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFIT_")}
    return subprocess.run(
        [sys.executable, "-m", "refit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # a restart loop would take longer than this to give up
    )


@pytest.mark.parametrize("command", ["serve", "up"])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_ends_the_command_at_once_with_its_code(
    tmp_path: Path, busy_port: int, command: str, workers: str
) -> None:
    root = create_blank_project(tmp_path / "mine")
    done = refit(command, "-p", str(root), "--port", str(busy_port), "--workers", workers)
    assert done.returncode == ListenError.exit_code == 10, done.stderr
    assert done.stderr.strip() == (
        f"error: port {busy_port} on 127.0.0.1 is in use by another process: stop it, "
        "or choose another port with --port (or serve.port)"
    )
    assert done.stdout == ""
