"""`refit monitor` (one run of the monitor) and `refit drift` (its latest report, readably)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from refit.cli._output import (
    JsonOption,
    ProjectOption,
    UnderLeaseOption,
    open_project_services,
    out,
    print_json,
    print_table,
    when,
)
from refit.project import load_project
from refit.registry.jobs import holding, job_lease
from refit.registry.monitoring import PREDICTIONS, latest_report, list_logs, open_request
from refit.registry.tables import MonitorReportRow


def monitor(
    project: ProjectOption = Path("."),
    json: JsonOption = False,
    train: Annotated[
        bool,
        typer.Option(
            "--train",
            help="Then, if a training run is asked for and the newest snapshot has none, run "
            "it now (where no scheduler runs, as in a Kubernetes CronJob).",
        ),
    ] = False,
    under_lease: UnderLeaseOption = None,
) -> None:
    """Judge the logged predictions once: drift against the training data, live quality from
    feedback; store the report and ask for training when `monitor` says so.

    It runs under the project's monitor lease: while another run holds it, it exits 4."""
    from refit.monitor.run import run_monitor

    loaded = load_project(project)
    spec = loaded.spec
    with open_project_services(loaded, "monitor") as services:
        registry = services.registry
        with holding(
            registry, job_lease(spec.name, "monitor"), spec.schedule.lease_timeout, under_lease
        ):
            result = run_monitor(services)
        trained: dict[str, Any] | None = None
        if train:
            trained = _train_if_asked(services)
        logged = result.report.rows > 0 or bool(list_logs(registry, spec.name, PREDICTIONS))
    if json:
        print_json({**result.to_dict(), "trained": trained})
        return
    out.print(f"{spec.name}: {result.line}", markup=False)
    if not logged:
        out.print(
            "  the servers have logged no predictions yet: is monitor.log on, and does "
            "`refit serve` answer requests?"
            if spec.monitor.log
            else "  monitor.log is off: the servers log nothing for the monitor to judge",
            markup=False,
        )
    if result.forgotten:
        out.print(f"  retention ({spec.monitor.retention}): {result.forgotten} log file(s) deleted")
    if trained is not None:
        out.print(f"  train: {trained['message']}", markup=False)
    elif train and open_request(services.registry, spec.name) is not None:
        out.print("  train: asked for, waiting for a new snapshot", markup=False)


def _train_if_asked(services: Any) -> dict[str, Any] | None:
    """The train job, run now as the scheduler runs it, if the monitor asked for it."""
    from refit.run.scheduler import Scheduler

    lines: list[str] = []
    scheduler = Scheduler(
        services.project,
        services.registry,
        lease_ttl=services.project.spec.schedule.lease_timeout,
        on_event=lambda job, line: lines.append(line),
    )
    result = scheduler.train_if_asked()
    if result is None:
        return None
    return {"status": result.status, "message": result.message}


def drift(project: ProjectOption = Path("."), json: JsonOption = False) -> None:
    """The monitor's latest report: each feature's drift (flagged first), then live quality
    per version beside its estimate. No report yet: says so and exits 0."""
    from refit.monitor.run import describe

    loaded = load_project(project)
    spec = loaded.spec
    with open_project_services(loaded, "drift") as services:
        report = latest_report(services.registry, spec.name)
    if json:
        print_json(None if report is None else report.to_dict())
        return
    if report is None:
        out.print(
            f"{spec.name}: no monitor report yet: `refit monitor` makes one (refit up runs it "
            f"every {spec.schedule.monitor or '(off)'})",
            markup=False,
        )
        return
    out.print(
        f"report {report.id} of {when(report.created_at)}: {describe(report, spec)}", markup=False
    )
    if report.cause:
        out.print(f"asked for training: {report.cause}", markup=False)
    if report.drift:
        version = next(iter(report.drift.values())).get("version")
        _print_drift(report.drift, f"drift of v{version} (the version that served the newest rows)")
    if report.quality:
        print_table(
            ["version", "rows", "labelled", "metric", "live", "estimated", "holdout"],
            [_quality_row(v, q) for v, q in report.quality.items()],
            title="quality",
        )


def _print_drift(drift: dict[str, Any], title: str) -> None:
    """The features as a table, flagged first (names never cut), then each flagged one's
    reasons."""
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    table.add_column("feature", no_wrap=True)
    for column in ("kind", "verdict", "psi", "test", "p-value", "effect", "missing", "unseen"):
        table.add_column(column, no_wrap=True)
    for name, entry in drift.items():
        missing = entry.get("missing") or {}
        unseen = entry.get("unseen")
        table.add_row(
            name,
            str(entry.get("kind", "")),
            "DRIFT" if entry.get("drifted") else "ok",
            _number(entry.get("psi"), "{:.3f}"),
            str(entry.get("test", "")),
            _number(entry.get("p_value"), "{:.2g}"),
            _number(entry.get("effect_size"), "{:.3f}"),
            f"{_share(missing.get('reference'))}->{_share(missing.get('live'))}",
            "" if unseen is None else _share(unseen),
        )
    # Piped, a line is as long as the table is: nothing is cut at 80 columns.
    out.print(table, width=None if out.is_terminal else out.measure(table).maximum)
    for name, entry in drift.items():
        if entry.get("drifted"):
            out.print(f"  {name}: {'; '.join(entry.get('reasons') or [])}", markup=False)


def _quality_row(version: str, quality: dict[str, Any]) -> list[str]:
    metric = quality["metric"]
    live, estimate = quality.get("live"), quality.get("estimated")
    return [
        f"v{version}",
        str(quality["rows"]),
        str(quality["labelled"]),
        metric,
        _number(live.get(metric)) if live else "-",
        _number(estimate.get(metric)) if estimate else "-",
        _number(quality.get("holdout")),
    ]


def _number(value: Any, form: str = "{:.4f}") -> str:
    return "-" if value is None else form.format(float(value))


def _share(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0%}"


def status_line(report: MonitorReportRow | None) -> str:
    """`refit status`'s line on the monitor: the latest verdict on drift and live quality."""
    if report is None:
        return "monitor: no report yet"
    drifted = ", ".join(report.drifted) if report.drifted else "none"
    quality = []
    for version, entry in report.quality.items():
        live, metric = entry.get("live"), entry["metric"]
        if live and metric in live:
            quality.append(f"v{version} {metric} {live[metric]:.4f} ({entry['labelled']} labelled)")
    words = f"monitor: report {report.id} of {when(report.created_at)}, {report.rows} rows"
    words += f", drift: {drifted if report.drift else 'no verdict'}"
    if quality:
        words += "; live " + ", ".join(quality)
    return words
