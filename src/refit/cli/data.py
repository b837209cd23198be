"""`refit init`, `refit ingest`, `refit batches` and `refit snapshots`: projects and their
data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from refit.cli._output import (
    JsonOption,
    ProjectOption,
    UnderLeaseOption,
    err,
    out,
    print_json,
    print_table,
    progress,
    services_for,
    when,
)
from refit.deploy.workflow import WORKFLOW_FILE
from refit.errors import BatchRefusedError, NotFoundError
from refit.examples import EXAMPLES, create_blank_project, create_project, find_example
from refit.registry import SnapshotRow
from refit.registry.jobs import holding, job_lease

snapshots_app = typer.Typer(help="Inspect data snapshots.", no_args_is_help=True)
batches_app = typer.Typer(
    help="Inspect ingest batches and their rejected rows.", no_args_is_help=True
)


def _bundled(example: str | None) -> str | None:
    if example is not None:
        try:
            find_example(example)
        except NotFoundError as exc:
            raise typer.BadParameter(exc.message) from None
    return example


def init(
    directory: Annotated[Path, typer.Argument(help="The folder to create the project in.")],
    example: Annotated[
        str | None,
        typer.Option(
            help=f"Start from a bundled example: {', '.join(EXAMPLES)}.", callback=_bundled
        ),
    ] = None,
) -> None:
    """Create a project: a refit.yaml, a data/incoming/ folder and a GitHub Actions workflow."""
    if example is not None:
        create_project(directory, example, workflow=True)
        err.print(f"Created the {example} example in {directory}, with a first batch of data.")
    else:
        create_blank_project(directory, workflow=True)
        err.print(f"Created {directory / 'refit.yaml'}: describe your columns there.")
    err.print(f"Next: cd {directory} && refit ingest && refit train")
    err.print(
        f"CI/CD: {directory / WORKFLOW_FILE} tests, retrains, builds and deploys it on GitHub "
        "(its variables and secrets: refit's docs/deploying.md, 'CI/CD')"
    )


def ingest(
    project: ProjectOption = Path("."),
    json: JsonOption = False,
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild",
            help="Make the snapshot again from every row read so far, under the current spec.",
        ),
    ] = False,
    under_lease: UnderLeaseOption = None,
) -> None:
    """Read new data from the source into a snapshot (rebuilt when the spec's columns changed).

    It runs under the project's ingest lease: while another ingest runs, it exits 4."""
    from refit.data.ingest import run_ingest  # pandas and pyarrow: only for this command

    with services_for(project, "ingest") as services, progress("Ingesting"):
        spec = services.project.spec
        lease = job_lease(spec.name, "ingest")
        with holding(services.registry, lease, spec.schedule.lease_timeout, under_lease):
            result = run_ingest(
                services.project, services.registry, services.store, rebuild=rebuild
            )
    if json:
        print_json(
            {
                "status": result.status,
                "message": result.message,
                "batch": result.batch.to_dict() if result.batch else None,
                "snapshot": snapshot_dict(result.snapshot) if result.snapshot else None,
                "duplicates": result.duplicates,
            }
        )
    else:
        out.print(result.message)
    if result.status == "refused":
        raise BatchRefusedError(result.message)


def snapshot_dict(row: SnapshotRow, stats: bool = False) -> dict[str, Any]:
    data = row.to_dict()
    if not stats:
        data.pop("stats")
    return data


@snapshots_app.command("list")
def list_snapshots(project: ProjectOption = Path("."), json: JsonOption = False) -> None:
    """The project's snapshots, newest first."""
    with services_for(project, "snapshots list") as services:
        rows = services.registry.list_snapshots(services.project.spec.name)
    if json:
        print_json([snapshot_dict(r) for r in rows])
        return
    print_table(
        ["id", "created", "rows", "mode", "parent"],
        [
            (r.id[:12], when(r.created_at), r.row_count, r.mode, (r.parent_id or "")[:12])
            for r in rows
        ],
    )


@snapshots_app.command("show")
def show_snapshot(
    snapshot_id: Annotated[str, typer.Argument(metavar="ID", help="A snapshot id or its prefix.")],
    project: ProjectOption = Path("."),
    json: JsonOption = False,
) -> None:
    """One snapshot: its rows, columns and statistics."""
    with services_for(project, "snapshots show") as services:
        row = services.registry.get_snapshot(snapshot_id, services.project.spec.name)
    if json:
        print_json(snapshot_dict(row, stats=True))
        return
    out.print(f"snapshot {row.id}")
    out.print(f"created  {when(row.created_at)}   rows {row.row_count}   mode {row.mode}")
    out.print(f"file     {row.uri} ({row.size_bytes} bytes, sha256 {row.sha256[:12]}...)")
    if row.parent_id:
        out.print(f"parent   {row.parent_id}")
    table = []
    for name, dtype in row.columns.items():
        stats = row.stats.get(name, {})
        if "mean" in stats:
            summary = f"mean {_num(stats['mean'])}  std {_num(stats.get('std'))}"
            summary += f"  [{_num(stats.get('min'))}, {_num(stats.get('max'))}]"
        elif "frequencies" in stats:
            top = list(stats["frequencies"].items())[:3]
            summary = ", ".join(f"{k}: {v}" for k, v in top)
        else:
            summary = f"{stats.get('min', '')} .. {stats.get('max', '')}"
        table.append((name, dtype, stats.get("nulls", ""), summary))
    print_table(["column", "type", "nulls", "summary"], table)


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


@batches_app.command("list")
def list_batches(
    project: ProjectOption = Path("."),
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 50,
    json: JsonOption = False,
) -> None:
    """The project's ingest batches, newest first: rows read, valid and rejected."""
    with services_for(project, "batches list") as services:
        rows = services.registry.list_batches(services.project.spec.name, limit)
    if json:
        print_json([r.to_dict() for r in rows])
        return
    print_table(
        ["id", "created", "status", "read", "valid", "rejected", "snapshot", "what"],
        [
            (
                r.id,
                when(r.created_at),
                r.status,
                r.rows_read,
                r.rows_valid,
                r.rows_rejected,
                (r.snapshot_id or "")[:12],
                r.description,
            )
            for r in rows
        ],
    )


@batches_app.command("rejects")
def show_rejects(
    batch_id: Annotated[int, typer.Argument(metavar="ID", help="A batch id (refit batches list).")],
    project: ProjectOption = Path("."),
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many rows.")] = 100,
    json: JsonOption = False,
) -> None:
    """A batch's rejected rows: file, line and reason (--json: with every field as read)."""
    from refit.data.ingest import read_rejects  # pandas and pyarrow: only for this command

    with services_for(project, "batches rejects") as services:
        batch = services.registry.get_batch(services.project.spec.name, batch_id)
        rejects = read_rejects(services.store, batch)
    shown = rejects.head(limit)
    if json:
        records = shown.astype(object).where(shown.notna(), None).to_dict("records")
        print_json([{str(k): v for k, v in record.items()} for record in records])
        return
    if rejects.empty:
        err.print(f"batch {batch.id} ({batch.status}) has no rejected rows")
        return
    located = "_file" in rejects.columns
    columns = ["file", "line", "reason"] if located else ["row", "reason"]
    rows = [
        (r["_file"], r["_line"], r["_reason"]) if located else (r["_row"], r["_reason"])
        for r in shown.to_dict("records")
    ]
    title = f"batch {batch.id} ({batch.status}): {len(rejects)} rejected of {batch.rows_read}"
    if len(rejects) > limit:
        title += f", the first {limit} shown"
    print_table(columns, rows, title=title)
