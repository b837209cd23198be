"""Where the workers of one `refit serve` keep their metrics: one directory, shared by them.

Kept apart from `metrics.py` so that `refit serve` can set the directory before anything
imports prometheus_client, which chooses how it stores values when it is imported.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

DIRECTORY_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's multiprocess mode: each process writes its values to files here."""


@contextlib.contextmanager
def shared_metrics() -> Iterator[str]:
    """A new, empty directory for the metrics of one server's workers, named by
    `PROMETHEUS_MULTIPROC_DIR` while the server runs, then removed: a scrape of any worker
    answers the totals of all of them, and nothing of an earlier server is counted."""
    directory = tempfile.mkdtemp(prefix="refit-metrics-")
    previous = os.environ.get(DIRECTORY_ENV)
    os.environ[DIRECTORY_ENV] = directory
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(DIRECTORY_ENV, None)
        else:
            os.environ[DIRECTORY_ENV] = previous
        shutil.rmtree(directory, ignore_errors=True)
