"""`refit serve`: the inference server."""

from __future__ import annotations

import contextlib
import logging.config
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from refit.apikeys import check_exposure
from refit.cli._output import checked_by, err
from refit.cli._server import (
    HostOption,
    PortOption,
    WorkersOption,
    bind_failures_reported,
    check_address,
)
from refit.deploy.pod import WORKER_STARTUP_SECONDS
from refit.errors import SpecError
from refit.project import load_project
from refit.registry.database import require_registry
from refit.serve._multiprocess import shared_metrics
from refit.spec import ServeSpec

if TYPE_CHECKING:
    from refit.serve._server import DrainingConfig


ProjectsOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--project",
        "-p",
        metavar="DIR",
        help="The project folder (holding refit.yaml); repeat it to serve several projects' "
        "models at once (the first is the default model, and gives the server's settings).",
        show_default=False,
    ),
]


def serve(
    project: ProjectsOption = None,
    host: HostOption = None,
    port: PortOption = None,
    workers: WorkersOption = None,
    log_format: Annotated[
        str | None,
        typer.Option(
            help="text, or json: one JSON object per line (default serve.log_format, text).",
            callback=checked_by(ServeSpec, "log_format"),
        ),
    ] = None,
    access_log: Annotated[
        bool | None,
        typer.Option(help="Log every request (default serve.access_log, on).", show_default=False),
    ] = None,
) -> None:
    """Serve predictions from the version that holds production, following its promotions."""
    with shared_metrics():  # before prometheus_client is imported, here or in a worker
        _serve(project or [Path(".")], host, port, workers, log_format, access_log)


def _serve(
    projects: list[Path],
    host: str | None,
    port: int | None,
    workers: int | None,
    log_format: str | None,
    access_log: bool | None,
) -> None:
    from uvicorn.config import STARTUP_FAILURE

    from refit.serve._server import run
    from refit.serve.main import PROJECT_ENV, log_config

    overrides = {
        "HOST": host,
        "PORT": port,
        "WORKERS": workers,
        "LOG_FORMAT": log_format,
        "ACCESS_LOG": None if access_log is None else str(access_log).lower(),
    }
    for key, value in overrides.items():
        if value is not None:
            os.environ[f"REFIT_SERVE__{key}"] = str(value)
    # A bad spec stops here, before any worker starts; so does a registry that is not there.
    served = [load_project(project) for project in projects]
    loaded = served[0]
    names = [each.spec.name for each in served]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise SpecError(
            f"two of the projects served are named {twice[0]!r}: every model of a server "
            "needs its own name (the `name` of its refit.yaml)"
        )
    # One math-library thread per worker: workers are the unit of parallelism, and on a few
    # cores scikit-learn's default thread pools slow concurrent requests 2-3x (measured).
    for threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(threads, "1")
    os.environ[PROJECT_ENV] = os.pathsep.join(str(each.root) for each in served)
    settings = loaded.spec.serve
    check_address(settings.host, settings.port)
    check_exposure(settings, os.environ)  # no keys: loopback only, unless auth: none is said
    for each in served:
        require_registry(each.metadata_url)
    shown = f"http://{settings.host}:{settings.port}"
    logging_config = log_config(settings.log_format, settings.access_log)
    serving = (
        f"Serving {', '.join(names)} (production) on {shown} with {settings.workers} "
        f"worker(s); API docs at {shown}/docs, dashboard at {shown}/ui"
    )
    if settings.log_format == "json":  # every line on stderr is then a JSON object
        logging.config.dictConfig(logging_config)
        logging.getLogger("refit.serve").info(serving)
    else:
        err.print(serving)
    with _sigterm_exits_cleanly(), bind_failures_reported(settings.host, settings.port):
        if not run(server_config(settings)):
            raise SystemExit(STARTUP_FAILURE)


def server_config(settings: ServeSpec) -> DrainingConfig:
    """The uvicorn configuration of `refit serve` with these settings."""
    from refit.serve._http import uvicorn_options
    from refit.serve._server import DrainingConfig
    from refit.serve.main import log_config

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "log_config": log_config(settings.log_format, settings.access_log),
        "access_log": settings.access_log,
        "timeout_graceful_shutdown": settings.grace_period,
        # A worker imports scikit-learn and loads its model before it serves (and answers
        # the supervisor's health check with "started").
        "timeout_worker_healthcheck": WORKER_STARTUP_SECONDS,
        **uvicorn_options(settings),
    }
    return DrainingConfig(
        "refit.serve.main:app_from_environment",
        factory=True,
        drain_delay=settings.drain_delay,
        **options,
    )


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


@contextlib.contextmanager
def _sigterm_exits_cleanly() -> Iterator[None]:
    """SIGTERM (Kubernetes, docker, `refit up`) ends the server with status 0 in every mode,
    also before it serves: while it serves, the server handles SIGTERM itself (it drains, see
    `refit.serve._server`) and then exits 0.
    """
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
