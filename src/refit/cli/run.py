"""`refit up`, `refit scheduler` and `refit metrics`: the loop on one machine, and the registry's
Prometheus figures alone."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from refit.apikeys import check_exposure
from refit.cli._output import (
    ProjectOption,
    checked_by,
    err,
    open_project_services,
    out,
)
from refit.cli._server import (
    METRICS_PORT,
    HostOption,
    MetricsPortOption,
    PortOption,
    WorkersOption,
    check_address,
    listen_error,
)
from refit.cli._server import metrics_port as chosen_metrics_port
from refit.errors import RefitError, SpecError
from refit.project import load_project
from refit.services import Services
from refit.spec import SPEC_FILE, Schedule

if TYPE_CHECKING:
    from refit.run.metrics import MetricsServer
    from refit.run.supervisor import SupervisorError

EXPORTER_PORT = "--port (or schedule.metrics_port)"
"""Where `refit metrics` has its port chosen, for `listen_error`."""


@contextmanager
def until_signalled() -> Iterator[threading.Event]:
    """An event set by Ctrl-C or SIGTERM, so a long-running command stops cleanly."""
    stop = threading.Event()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def say(name: str, line: str) -> None:
    job, _, rest = line.partition(": ")
    if name == "scheduler" and job in ("ingest", "train", "monitor"):
        name, line = job, rest
    stamp = datetime.now().strftime("%H:%M:%S")
    out.print(f"[dim]{stamp}[/] [bold]{name:<9}[/] {line}", markup=True, highlight=False)


def scheduler(
    project: ProjectOption = Path("."),
    host: HostOption = None,
    metrics_port: MetricsPortOption = None,
) -> None:
    """Run the scheduled ingest and train jobs until stopped, and serve their Prometheus
    /metrics (refit up runs this for you)."""
    from refit.run.scheduler import Scheduler
    from refit.train.checks import check_model

    loaded = load_project(project)
    host = loaded.spec.serve.host if host is None else host
    port = chosen_metrics_port(loaded.spec.schedule, metrics_port)
    if port:
        check_address(host, port, METRICS_PORT)  # before the model is built: at once
    check_model(loaded.spec, loaded.root)
    with open_project_services(loaded, "scheduler") as services, until_signalled() as stop:
        metrics = None
        if port is not None:
            metrics = _serve_metrics(services, host, port, METRICS_PORT)
        jobs = Scheduler(
            loaded,
            services.registry,
            lease_ttl=loaded.spec.schedule.lease_timeout,
            on_event=lambda job, line: print(f"{job}: {line}", flush=True),
        )
        jobs.start()
        stop.wait()
        jobs.stop()
        if metrics is not None:
            metrics.close()


def metrics(
    project: ProjectOption = Path("."),
    host: HostOption = None,
    port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            help="Port to listen on (default schedule.metrics_port, 9464; 0: a free port).",
            callback=checked_by(Schedule, "metrics_port"),
        ),
    ] = None,
) -> None:
    """Serve the registry's Prometheus /metrics alone, until stopped: the scheduler's figures
    where no scheduler runs (CronJobs on Kubernetes)."""
    loaded = load_project(project)
    host = loaded.spec.serve.host if host is None else host
    if port is None:
        port = loaded.spec.schedule.metrics_port
    if port is None:
        raise SpecError(
            f"{loaded.root / SPEC_FILE}: schedule.metrics_port: got off (or "
            "REFIT_SCHEDULE__METRICS_PORT=off): refit metrics serves /metrics and nothing else: "
            "give its port with --port, or set schedule.metrics_port (default 9464)"
        )
    check_address(host, port, EXPORTER_PORT)  # before the registry is opened: at once
    with open_project_services(loaded, "metrics") as services, until_signalled() as stop:
        endpoint = _serve_metrics(services, host, port, EXPORTER_PORT)
        stop.wait()
        endpoint.close()


def _serve_metrics(services: Services, host: str, port: int, port_flag: str) -> MetricsServer:
    """Start the registry's `/metrics` on `host:port` and say where; a `ListenError` naming
    `port_flag` when it cannot listen there."""
    from refit.run.metrics import MetricsServer

    try:
        endpoint = MetricsServer(services.registry, services.project.spec.name, host, port)
    except OSError as exc:
        raise listen_error(host, port, exc, port_flag) from None
    print(f"metrics: {endpoint.url}", flush=True)
    return endpoint


def up(
    project: ProjectOption = Path("."),
    host: HostOption = None,
    port: PortOption = None,
    workers: WorkersOption = None,
    metrics_port: MetricsPortOption = None,
) -> None:
    """Run the whole loop here: the scheduler and the server, restarted if they die."""
    from refit.run.local import run_up
    from refit.run.supervisor import SupervisorError
    from refit.train.checks import check_model

    loaded = load_project(project)
    check_model(loaded.spec, loaded.root)
    settings = loaded.spec.serve
    host = settings.host if host is None else host
    port = settings.port if port is None else port
    metrics = chosen_metrics_port(loaded.spec.schedule, metrics_port)
    check_address(host, port)  # a port in use stops refit up here, not in a restart loop
    if metrics:
        check_address(host, metrics, METRICS_PORT)
    check_exposure(settings.model_copy(update={"host": host}), os.environ)
    with open_project_services(loaded, "up"):
        pass  # migrate the registry once, before the children race to
    url = f"http://{host}:{port}"
    err.print(
        f"refit up: {loaded.spec.name} in {loaded.root}; API {url}, docs {url}/docs, "
        f"dashboard {url}/ui"
    )
    if metrics:
        err.print(f"scheduler metrics: http://{host}:{metrics}/metrics")
    err.print("Ctrl-C stops everything cleanly.")
    with until_signalled() as stop:
        try:
            run_up(
                loaded,
                stop,
                say,
                host=host,
                port=port,
                workers=workers,
                metrics_port="off" if metrics is None else str(metrics),
            )
        except SupervisorError as exc:
            raise supervisor_stopped("refit up", exc) from None
    err.print("refit up: stopped")


def supervisor_stopped(command: str, exc: SupervisorError) -> RefitError:
    """The supervisor gave up: exit with the child's own code when restarting cannot help."""
    from refit.run.supervisor import FatalExitError

    error = RefitError(f"{command} stopped: {exc}")
    if isinstance(exc, FatalExitError):
        error.exit_code = exc.code
    return error
