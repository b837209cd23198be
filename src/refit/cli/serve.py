"""`refit serve`: the inference server."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from refit.cli._output import ProjectOption, err
from refit.cli._server import (
    HostOption,
    PortOption,
    WorkersOption,
    bind_failures_reported,
    check_address,
)
from refit.deploy.pod import DRAIN_SECONDS, WORKER_STARTUP_SECONDS
from refit.project import load_project
from refit.serve._http import uvicorn_options
from refit.serve._multiprocess import shared_metrics


def serve(
    project: ProjectOption = Path("."),
    host: HostOption = None,
    port: PortOption = None,
    workers: WorkersOption = None,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
) -> None:
    """Serve predictions from the version that holds production, following its promotions."""
    with shared_metrics():  # before prometheus_client is imported, here or in a worker
        _serve(project, host, port, workers, access_log)


def _serve(
    project: Path, host: str | None, port: int | None, workers: int | None, access_log: bool
) -> None:
    import uvicorn

    from refit.serve.main import PROJECT_ENV, log_config

    overrides = {"HOST": host, "PORT": port, "WORKERS": workers}
    for key, value in overrides.items():
        if value is not None:
            os.environ[f"REFIT_SERVE__{key}"] = str(value)
    loaded = load_project(project)  # a bad spec stops here, before any worker starts
    # One math-library thread per worker: workers are the unit of parallelism, and on a few
    # cores scikit-learn's default thread pools slow concurrent requests 2-3x (measured).
    for threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(threads, "1")
    os.environ[PROJECT_ENV] = str(loaded.root)
    settings = loaded.spec.serve
    check_address(settings.host, settings.port)  # one worker binds only after loading its model
    shown = f"http://{settings.host}:{settings.port}"
    err.print(
        f"Serving {loaded.spec.name} (production) on {shown} with {settings.workers} "
        f"worker(s); API docs at {shown}/docs"
    )
    with _sigterm_exits_cleanly(), bind_failures_reported(settings.host, settings.port):
        uvicorn.run(
            "refit.serve.main:app_from_environment",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_config=log_config(),
            access_log=access_log,
            timeout_graceful_shutdown=DRAIN_SECONDS,
            # A worker imports scikit-learn and loads a model before it answers health pings.
            timeout_worker_healthcheck=WORKER_STARTUP_SECONDS,
            **uvicorn_options(settings),
        )


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


@contextlib.contextmanager
def _sigterm_exits_cleanly() -> Iterator[None]:
    """SIGTERM (Kubernetes, docker, `refit up`) ends the server with status 0 in every mode.

    While it serves, uvicorn handles SIGTERM itself: it stops accepting connections, lets the
    requests in flight finish and runs the app's shutdown. In one process it then puts back the
    handler it found and raises the signal again, so a server that drained as asked would end
    "killed by SIGTERM" (-15; 143 in a shell), while its multi-worker supervisor exits 0.
    The handler it puts back is this one, which exits 0 instead.
    """
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
