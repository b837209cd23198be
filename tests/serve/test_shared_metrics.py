"""The shared metrics of a server's workers: what a worker that died leaves is dropped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from refit.serve.metrics import _drop_dead_workers


def test_the_live_gauges_of_dead_workers_are_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    gone = int(dead.stdout)  # that process has ended
    mine = os.getpid()
    names = [
        f"gauge_livemax_{gone}.db",
        f"gauge_livemax_{mine}.db",
        f"counter_{gone}.db",  # a dead worker's counts stay in the totals
        f"histogram_{gone}.db",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    _drop_dead_workers(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])
