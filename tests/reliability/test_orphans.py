"""Orphans never hold the port: when a `refit serve` of several workers is killed with
SIGKILL (it cannot stop them), its workers end within a few seconds, and a new `refit serve`
listens on the same port."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from serving import alive, make_project, serving, start_serving, wait_until, workers_of

GONE_WITHIN = 5.0


@pytest.mark.slow
def test_workers_end_with_their_supervisor_and_free_the_port(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    first = start_serving(root, workers=2)
    port = int(first.url.rsplit(":", 1)[1])
    workers: set[int] = set()
    try:
        first.wait_live()
        first.converge(1, workers=2)
        workers = workers_of(first.process.pid)
        assert len(workers) == 2, workers
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        killed = time.monotonic()

        def orphans_gone() -> bool:
            return not any(alive(pid) for pid in workers)

        took = wait_until("the orphaned workers gone", orphans_gone, GONE_WITHIN, every=0.05)
    finally:
        first.http.close()
        for pid in workers:  # a failed test leaves nothing behind
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    print(f"\nworkers {sorted(workers)} ended {took:.2f} s after their supervisor's SIGKILL")
    with serving(root, workers=2, port=port) as second:
        second.converge(1, workers=2)
        restarted = time.monotonic() - killed
    print(f"a new refit serve on port {port} served {restarted:.1f} s after the SIGKILL")
