"""`refit demo` and `refit feed`: an example project, a simulated feed of its rows (drifting,
for the breast-cancer example) and traffic, and the loop turning on it."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from refit.cli._output import (
    checked_by,
    err,
    open_project_services,
)
from refit.cli._server import (
    PortOption,
    WorkersOption,
    check_address,
)
from refit.cli.data import _bundled
from refit.cli.run import say, supervisor_stopped, until_signalled
from refit.errors import DataError
from refit.examples import DEMO, EXAMPLES
from refit.project import load_project
from refit.registry import PRODUCTION
from refit.registry.tables import utcnow
from refit.services import Services
from refit.spec import SPEC_FILE, Schedule, ServeSpec

if TYPE_CHECKING:
    from refit.run.demo import Feed


def _positive(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise typer.BadParameter(f"{value:g} is not a number of seconds above 0")
    return value


def demo(
    directory: Annotated[Path, typer.Argument(help="Folder for the demo project.")] = Path(
        "refit-demo"
    ),
    example: Annotated[
        str | None,
        typer.Option(
            help=f"The bundled example to run: {', '.join(EXAMPLES)} (default "
            f"{DEMO}; for a demo folder made before, its own).",
            callback=_bundled,
        ),
    ] = None,
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
    """Create an example project and run the loop on it with a simulated feed of its rows, and
    requests from the same world, which the monitor judges (the breast-cancer example's
    drifts, and the monitor flags it)."""
    from refit.run.demo import Feed, create_demo_project
    from refit.run.local import run_up
    from refit.run.supervisor import SupervisorError

    exists = (directory / SPEC_FILE).exists()
    made = load_project(directory).spec if exists else None
    # A new demo project serves on the spec's defaults.
    settings = ServeSpec() if made is None else made.serve
    example = (example if made is None else _example_of(made.name, example)) or DEMO
    port = settings.port if port is None else port
    check_address(settings.host, port)  # before anything is created
    if not exists:
        create_demo_project(directory, example=example, ingest=ingest, train=train, monitor=monitor)
    loaded = load_project(directory)
    services = open_project_services(loaded, "demo")
    url = f"http://{settings.host}:{port}"
    err.print(f"refit demo: {loaded.spec.name} in {loaded.root}")
    err.print(f"  API  {url}   docs {url}/docs   metrics {url}/metrics   dashboard {url}/ui")
    err.print(
        f"  try  curl -s {url}/predict -H 'content-type: application/json' "
        f"-d @{loaded.root / 'request.json'}"
    )
    err.print("  new batches of data arrive every few seconds; Ctrl-C stops the demo")
    started = utcnow()
    deadline = None if duration is None else time.monotonic() + duration
    with until_signalled() as stop:
        feed = Feed.into_project(loaded.root, example=example, interval=feed_interval)
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
            run_up(loaded, stop, say, port=port, workers=workers)
        except SupervisorError as exc:
            raise supervisor_stopped("refit demo", exc) from None
        finally:
            stop.set()
            watcher.join(5)
            asker.join(5)
            traffic.join(5)
            services.close()
    err.print("refit demo: stopped; `refit status -p DIR` shows what happened")


def _example_of(project: str, asked: str | None) -> str | None:
    """The example a demo folder made before runs: the one its project is named after, which
    `--example` (`asked`) may only repeat."""
    own = next((name for name, e in EXAMPLES.items() if e.spec["name"] == project), None)
    if asked is not None and own is not None and asked != own:
        raise typer.BadParameter(
            f"the folder holds the {own} demo already; give a new folder for {asked}",
            param_hint="'--example'",
        )
    return asked or own


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
    example: Annotated[
        str,
        typer.Option(
            help=f"The bundled example whose rows to drop: {', '.join(EXAMPLES)}.",
            callback=_bundled,
        ),
    ] = DEMO,
) -> None:
    """Drop a new batch of an example's rows (by default the breast-cancer example's drifting
    ones) every few seconds, as refit demo does, into any folder or object store (the Compose
    stack's feeder)."""
    from refit.run.demo import Feed

    try:
        source = Feed(to, example=example, interval=interval, rows=rows)
    except (OSError, ValueError) as exc:  # ValueError: fsspec knows no such protocol
        raise DataError(f"refit feed: {exc}") from None
    dropped = 0
    with until_signalled() as stop:
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
            say(
                "client",
                f"POST /predict with request.json -> {data['prediction']!r} from v{seen}",
            )


def _traffic(url: str, feed: Feed, stop: threading.Event) -> None:
    """Requests from the feed's world, a batch of 20 records twice a second: what the server
    logs and the monitor judges."""
    import httpx

    with httpx.Client(base_url=url, timeout=5) as client:
        while not stop.wait(0.5):
            try:
                client.post("/predict/batch", json={"records": feed.requests(20)})
            except httpx.HTTPError:
                continue
