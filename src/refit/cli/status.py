"""`refit status`: the registry's view of the loop (snapshots, versions, runs, decisions, jobs,
the servers and the monitor)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from refit.cli._output import (
    JsonOption,
    ProjectOption,
    open_project_services,
    out,
    print_json,
    print_table,
    when,
)
from refit.cli._serving import SERVER_COLUMNS, server_dicts, server_rows, serving_line
from refit.cli.monitor import status_line
from refit.intervals import difference_text, summary
from refit.project import load_project
from refit.registry import PRODUCTION
from refit.registry.heartbeats import list_servers
from refit.registry.jobs import job_states
from refit.registry.monitoring import latest_report
from refit.registry.tables import utcnow
from refit.schedule import parse_schedule


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
            nxt = parse_schedule(text).next_run(last, utcnow())
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
        ["when", "action", "version", "promoted", "difference", "reason"],
        [
            (
                when(d.created_at),
                d.action,
                f"v{d.candidate_version}",
                d.promoted,
                difference_text(d.evidence) or "",
                d.reason,
            )
            for d in decisions
        ],
        title="last decisions",
    )
    gated = next((d for d in decisions if d.action == "gate"), None)
    if gated is not None:
        out.print(f"last gate: {summary(gated)}", markup=False)
