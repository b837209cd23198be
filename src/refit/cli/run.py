"""`refit up`, `refit scheduler`, `refit status`, `refit demo` and `refit feed`: the loop on one
machine, and the demo's data feed on its own."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from refit.apikeys import check_exposure
from refit.cli._output import (
    JsonOption,
    ProjectOption,
    checked_by,
    err,
    open_project_services,
    out,
    print_json,
    print_table,
    when,
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
from refit.cli._serving import SERVER_COLUMNS, server_dicts, server_rows, serving_line
from refit.cli.monitor import status_line
from refit.errors import DataError, RefitError
from refit.project import load_project
from refit.registry import PRODUCTION
from refit.registry.heartbeats import list_servers
from refit.registry.jobs import job_states
from refit.registry.monitoring import latest_report
from refit.registry.tables import utcnow
from refit.schedule import parse_schedule
from refit.services import Services
from refit.spec import SPEC_FILE, Schedule, ServeSpec

if TYPE_CHECKING:
    from refit.run.demo import Feed
    from refit.run.supervisor import SupervisorError


@contextmanager
def _until_signalled() -> Iterator[threading.Event]:
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


def _say(name: str, line: str) -> None:
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
    from refit.run.metrics import MetricsServer
    from refit.run.scheduler import Scheduler
    from refit.train.checks import check_model

    loaded = load_project(project)
    host = loaded.spec.serve.host if host is None else host
    port = chosen_metrics_port(loaded.spec.schedule, metrics_port)
    if port:
        check_address(host, port, METRICS_PORT)  # before the model is built: at once
    check_model(loaded.spec, loaded.root)
    with open_project_services(loaded, "scheduler") as services, _until_signalled() as stop:
        metrics = None
        if port is not None:
            try:
                metrics = MetricsServer(services.registry, loaded.spec.name, host, port)
            except OSError as exc:
                raise listen_error(host, port, exc, METRICS_PORT) from None
            print(f"metrics: {metrics.url}", flush=True)
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
    err.print(f"refit up: {loaded.spec.name} in {loaded.root}; API {url}, docs {url}/docs")
    if metrics:
        err.print(f"scheduler metrics: http://{host}:{metrics}/metrics")
    err.print("Ctrl-C stops everything cleanly.")
    with _until_signalled() as stop:
        try:
            run_up(
                loaded,
                stop,
                _say,
                host=host,
                port=port,
                workers=workers,
                metrics_port="off" if metrics is None else str(metrics),
            )
        except SupervisorError as exc:
            raise _stopped("refit up", exc) from None
    err.print("refit up: stopped")


def _stopped(command: str, exc: SupervisorError) -> RefitError:
    """The supervisor gave up: exit with the child's own code when restarting cannot help."""
    from refit.run.supervisor import FatalExitError

    error = RefitError(f"{command} stopped: {exc}")
    if isinstance(exc, FatalExitError):
        error.exit_code = exc.code
    return error


def _positive(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise typer.BadParameter(f"{value:g} is not a number of seconds above 0")
    return value


def demo(
    directory: Annotated[Path, typer.Argument(help="Folder for the demo project.")] = Path(
        "refit-demo"
    ),
    cycles: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many training runs.")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds.", callback=_positive)
    ] = None,
    workers: WorkersOption = 2,
    port: PortOption = None,
    feed_interval: Annotated[
        float, typer.Option(help="Seconds between new batches.", callback=_positive)
    ] = 4.0,
    ingest: Annotated[
        str, typer.Option(help="Ingest schedule.", callback=checked_by(Schedule, "ingest"))
    ] = "3s",
    train: Annotated[
        str, typer.Option(help="Train schedule.", callback=checked_by(Schedule, "train"))
    ] = "5s",
    monitor: Annotated[
        str, typer.Option(help="Monitor schedule.", callback=checked_by(Schedule, "monitor"))
    ] = "5s",
) -> None:
    """Create an example project and run the loop on it with a simulated data feed, and
    requests from the same drifting world, which the monitor flags."""
    from refit.run.demo import Feed, create_demo_project
    from refit.run.local import run_up
    from refit.run.supervisor import SupervisorError

    exists = (directory / SPEC_FILE).exists()
    # A new demo project serves on the spec's defaults.
    settings = load_project(directory).spec.serve if exists else ServeSpec()
    port = settings.port if port is None else port
    check_address(settings.host, port)  # before anything is created
    if not exists:
        create_demo_project(directory, ingest=ingest, train=train, monitor=monitor)
    loaded = load_project(directory)
    services = open_project_services(loaded, "demo")
    url = f"http://{settings.host}:{port}"
    err.print(f"refit demo: {loaded.spec.name} in {loaded.root}")
    err.print(f"  API  {url}   docs {url}/docs   metrics {url}/metrics")
    err.print(
        f"  try  curl -s {url}/predict -H 'content-type: application/json' "
        f"-d @{loaded.root / 'request.json'}"
    )
    err.print("  new batches of data arrive every few seconds; Ctrl-C stops the demo")
    started = utcnow()
    deadline = None if duration is None else time.monotonic() + duration
    with _until_signalled() as stop:
        feed = Feed.into_project(loaded.root, interval=feed_interval)
        feeder = threading.Thread(target=feed.run, args=(stop,), daemon=True)
        feeder.start()

        def watch() -> None:
            while not stop.wait(0.5):
                done = _cycles(services, started)
                if cycles is not None and done >= cycles:
                    served = _await_served(services, url, stop)
                    err.print(f"refit demo: {done} training cycles done, {served}; stopping")
                    stop.set()
                elif deadline is not None and time.monotonic() >= deadline:
                    stop.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        asker = threading.Thread(target=_ask, args=(url, loaded.root / "request.json", stop))
        asker.start()
        traffic = threading.Thread(target=_traffic, args=(url, feed, stop))
        traffic.start()
        try:
            run_up(loaded, stop, _say, port=port, workers=workers)
        except SupervisorError as exc:
            raise _stopped("refit demo", exc) from None
        finally:
            stop.set()
            watcher.join(5)
            asker.join(5)
            traffic.join(5)
            services.close()
    err.print("refit demo: stopped; `refit status -p DIR` shows what happened")


def feed(
    to: Annotated[
        str,
        typer.Argument(
            metavar="TO", help="A folder or URL to drop the files into: s3://refit/incoming/."
        ),
    ],
    interval: Annotated[
        float, typer.Option(help="Seconds between new batches.", callback=_positive)
    ] = 5.0,
    rows: Annotated[int, typer.Option(min=1, max=100_000, help="Rows per batch.")] = 80,
    batches: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many batches (default: never).")
    ] = None,
) -> None:
    """Drop a new batch of the breast-cancer example's drifting rows every few seconds, as
    refit demo does, into any folder or object store (the Compose stack's feeder)."""
    from refit.run.demo import Feed

    try:
        source = Feed(to, interval=interval, rows=rows)
    except (OSError, ValueError) as exc:  # ValueError: fsspec knows no such protocol
        raise DataError(f"refit feed: {exc}") from None
    dropped = 0
    with _until_signalled() as stop:
        while (batches is None or dropped < batches) and not stop.wait(interval):
            try:
                written = source.drop()
            except OSError as exc:  # an object store that is down for a moment: try again
                source.count -= 1
                err.print(f"refit feed: {exc}; trying again in {interval:g} s")
                continue
            dropped += 1
            print(f"feed: {written}: {source.rows} rows", flush=True)


def _cycles(services: Services, since: datetime) -> int:
    """Training cycles finished since `since`: runs that reached a gate decision, or failed."""
    name = services.project.spec.name
    decided = services.registry.list_decisions(name, limit=500)
    failed = services.registry.list_runs(name, limit=500)
    return sum(d.action == "gate" and d.created_at >= since for d in decided) + sum(
        r.status == "failed" and r.started_at >= since for r in failed
    )


def _await_served(services: Services, url: str, stop: threading.Event) -> str:
    """Wait (a little) until the server answers with the version that holds production."""
    import httpx

    name = services.project.spec.name
    production = services.registry.alias_version(name, PRODUCTION)
    if production is None:
        return "nothing in production"
    confirmed = 0
    for _ in range(120):
        try:  # a new connection each time, so that every worker gets asked
            served = httpx.get(f"{url}/v1/models/{name}", timeout=5).json()["served"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            served = None
        confirmed = confirmed + 1 if served and served["version"] == production else 0
        if confirmed >= 6:
            return f"serving production v{production}"
        if stop.wait(0.25):
            break
    return f"production is v{production}"


def _ask(url: str, request: Path, stop: threading.Event) -> None:
    """Ask the API for a prediction now and then; say so whenever the answering version changes."""
    import httpx

    body, seen = request.read_bytes(), None
    with httpx.Client(base_url=url, timeout=5) as client:
        while not stop.wait(2.0):
            try:
                answer = client.post(
                    "/predict", content=body, headers={"content-type": "application/json"}
                )
            except httpx.HTTPError:
                continue
            if answer.status_code != 200 or answer.json()["version"] == seen:
                continue
            data = answer.json()
            seen = data["version"]
            _say(
                "client",
                f"POST /predict with request.json -> {data['prediction']!r} from v{seen}",
            )


def _traffic(url: str, feed: Feed, stop: threading.Event) -> None:
    """Requests from the feed's drifting world, a batch of 20 records twice a second: what
    the server logs and the monitor judges."""
    import httpx

    with httpx.Client(base_url=url, timeout=5) as client:
        while not stop.wait(0.5):
            try:
                client.post("/predict/batch", json={"records": feed.requests(20)})
            except httpx.HTTPError:
                continue


def status(project: ProjectOption = Path("."), json: JsonOption = False) -> None:
    """What is served (and by which servers), the last runs and decisions, and when the jobs
    run next."""
    loaded = load_project(project)
    name = loaded.spec.name
    with open_project_services(loaded, "status") as services:
        registry = services.registry
        production = registry.alias_version(name, PRODUCTION)
        served = registry.get_version(name, production) if production is not None else None
        latest = registry.latest_snapshot(name)
        runs = registry.list_runs(name, limit=5)
        decisions = registry.list_decisions(name, limit=5)
        states = job_states(registry, name)
        servers = list_servers(registry, name)
        report = latest_report(registry, name)
    jobs: list[dict[str, Any]] = []
    for job in ("ingest", "train"):
        text = getattr(loaded.spec.schedule, job)
        state = states.get(job)
        last = state.last_started_at if state else None
        nxt = None
        if text is not None:
            nxt = parse_schedule(text).next_after(last) if last else utcnow()
        jobs.append(
            {
                "job": job,
                "schedule": text,
                "last_started_at": last,
                "last_status": state.last_status if state else None,
                "last_message": state.last_message if state else None,
                "next_at": nxt,
            }
        )
    if json:
        print_json(
            {
                "name": name,
                "production": served.to_dict() if served else None,
                "serving": serving_line(production, servers),
                "servers": server_dicts(servers),
                "latest_snapshot": latest.id if latest else None,
                "runs": [r.to_dict() for r in runs],
                "decisions": [d.to_dict() for d in decisions],
                "jobs": jobs,
                "monitor": status_line(report),
            }
        )
        return
    if served is not None:
        value = served.metrics.get(served.metric)
        out.print(
            f"{name}@production: v{served.version} ({served.metric} {value:.4f}), "
            f"snapshot {served.snapshot_id[:12]}"
        )
    else:
        out.print(f"{name}@production: not set yet")
    out.print(f"serving: {serving_line(production, servers)}", markup=False)
    if servers:
        print_table(SERVER_COLUMNS, server_rows(servers), title="servers")
    out.print(f"latest snapshot: {latest.id[:12] if latest else '-'}")
    out.print(status_line(report), markup=False)
    print_table(
        ["job", "schedule", "last run", "status", "next", "message"],
        [
            (
                j["job"],
                j["schedule"] or "off",
                when(j["last_started_at"]),
                j["last_status"] or "",
                when(j["next_at"]),
                (j["last_message"] or "")[:80],
            )
            for j in jobs
        ],
        title="jobs",
    )
    print_table(
        ["started", "status", "trigger", "snapshot", "version", "error or cause"],
        [
            (
                when(r.started_at),
                r.status,
                r.trigger,
                r.snapshot_id[:12],
                r.version or "",
                r.error or r.cause or "",
            )
            for r in runs
        ],
        title="last training runs",
    )
    print_table(
        ["when", "action", "version", "promoted", "reason"],
        [
            (when(d.created_at), d.action, f"v{d.candidate_version}", d.promoted, d.reason)
            for d in decisions
        ],
        title="last decisions",
    )
