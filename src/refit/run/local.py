"""`refit up`: the whole loop as processes on this machine (scheduler + server).

The children are the same commands a person (or Kubernetes) would run: `refit scheduler` and
`refit serve`. The supervisor shows one line per event: a snapshot made, a version trained
with its metric, the gate's decision, a worker swapping to a new version.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable

from refit.errors import ListenError, SpecError
from refit.project import Project
from refit.run.supervisor import Child, Supervisor

# Restarting a child cannot fix these: a bad spec or bad arguments (the command line's usage
# errors share the spec's code, 2), or a server address that cannot be listened on.
_FATAL = frozenset({SpecError.exit_code, ListenError.exit_code})

_LOG_PREFIX = re.compile(r"^(INFO|WARNING|ERROR|CRITICAL):\s+")
_QUIET = (
    "Started server process",
    "Waiting for application startup",
    "Application startup complete",
    "Waiting for child process",
    "Started parent process",
    "Finished server process",
    "Waiting for background tasks",
    "Waiting for connections to close",
    "Shutting down",
)


def server_line(line: str) -> str | None:
    """Keep what an operator wants from uvicorn's output: swaps, refusals, errors."""
    if any(quiet in line for quiet in _QUIET):
        return None
    return _LOG_PREFIX.sub("", line)


def children(
    project: Project,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    metrics_port: str | None = None,
) -> list[Child]:
    """The scheduler and the server; `host` is both's, `metrics_port` the scheduler's (a
    number or `off`)."""
    root = str(project.root)
    refit = [sys.executable, "-m", "refit"]
    serve = [*refit, "serve", "-p", root, "--no-access-log"]
    for flag, value in (("--host", host), ("--port", port), ("--workers", workers)):
        if value is not None:
            serve += [flag, str(value)]
    scheduler = [*refit, "scheduler", "-p", root]
    for flag, value in (("--host", host), ("--metrics-port", metrics_port)):
        if value is not None:
            scheduler += [flag, str(value)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return [
        Child("scheduler", scheduler, env=env, fatal=_FATAL),
        Child("serve", serve, env=env, keep=server_line, fatal=_FATAL),
    ]


def run_up(
    project: Project,
    stop: threading.Event,
    say: Callable[[str, str], None],
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    metrics_port: str | None = None,
) -> None:
    """Run the scheduler and the server until `stop` is set (raises SupervisorError)."""
    launched = children(project, host=host, port=port, workers=workers, metrics_port=metrics_port)
    supervisor = Supervisor(launched, on_line=say)
    supervisor.start()
    supervisor.run(stop)
