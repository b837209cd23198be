"""How the CLI talks: data on stdout (a table, or JSON with --json), the rest on stderr."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

from refit._spec_problems import redact, shown
from refit.errors import (
    AlreadyExistsError,
    ArtifactError,
    ConflictError,
    DataError,
    ListenError,
    NotFoundError,
    RefitError,
    StoreError,
    TrainingError,
    WaitTimedOutError,
)
from refit.project import Project, load_project
from refit.services import Services, open_services

USAGE = 2
"""A command called wrongly: an unknown command or option, a missing argument, a bad value."""
INTERNAL = 70
"""A bug in refit (`EX_SOFTWARE`): anything that is not a `RefitError` nor a usage error."""
INTERRUPTED = 130
"""Ctrl-C, as a shell reports a process ended by SIGINT."""

EXIT_CODES: dict[int, str] = {
    0: "success, also when there was nothing to do: no new data to ingest, a version the gate "
    "did not promote, promoting the version that already holds `production`",
    RefitError.exit_code: "`refit up` or `refit demo` gave up on a child process that kept "
    "crashing",
    USAGE: "a usage error (an unknown command or option, a missing argument, a bad value: the "
    "usage is shown) or a bad spec",
    NotFoundError.exit_code: "not found: a snapshot, a version, an alias, or no snapshot to "
    "train on yet",
    ConflictError.exit_code: "a conflict: someone else moved `production` first",
    DataError.exit_code: "bad data: a source that cannot be read, or a batch refused; a folder "
    "or store `refit feed` cannot reach",
    ArtifactError.exit_code: "a file of the artifact store, or a model file to register, that "
    "cannot be read or written, does not match its sha256, lies outside the store, or does not "
    "fit the project; a version that `refit models promote` or `rollback` refuses because one of "
    "its artifacts is missing or altered, or it is not signed with `REFIT_SIGNING_KEY` "
    "(production is not moved); a file `refit deploy` cannot write",
    TrainingError.exit_code: "a training run failed",
    StoreError.exit_code: "the registry's database cannot be reached or migrated; no SQLite "
    "registry at `storage.metadata_url`, for a command that does not make one",
    AlreadyExistsError.exit_code: "`refit init` on a folder that already holds a project or "
    "other files; `refit deploy` over files that hold other content, without `--force`",
    ListenError.exit_code: "the server, or the scheduler's `/metrics`, cannot listen on its "
    "address: the port is in use, or the host is not this machine's",
    WaitTimedOutError.exit_code: "`refit models promote --wait`: not every live server serves "
    "the version within `--timeout` (production holds it all the same)",
    INTERNAL: "an internal error, a bug in refit (`REFIT_DEBUG=1` shows the traceback)",
    INTERRUPTED: "interrupted (Ctrl-C)",
}
"""Every exit code of the `refit` command; README.md's 'Exit codes' lists exactly these."""

T = TypeVar("T")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ProjectOption = Annotated[
    Path,
    typer.Option(
        "--project", "-p", help="The project folder (holding refit.yaml).", show_default=False
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
UnderLeaseOption = Annotated[
    str | None,
    typer.Option(
        "--under-lease",
        hidden=True,
        help="Run under the job's lease as this holder has it (a scheduler's child).",
    ),
]


def checked_by(model: type[BaseModel], field: str) -> Callable[[T], T]:
    """A typer callback: a flag's value, checked by the spec's own rule for `field` of `model`.

    A bad value is a usage error naming the flag (not the spec field, nor a `REFIT_*` variable).
    """

    def check(value: T) -> T:
        if value is not None:
            try:
                model.model_validate({field: value})
            except ValidationError as exc:
                message = str(exc.errors()[0]["msg"])
                raise typer.BadParameter(message.removeprefix("Value error, ")) from None
        return value

    return check


REGISTRY_CREATORS = frozenset({"ingest", "train", "models register", "scheduler", "up", "demo"})
"""The commands that may make a new SQLite registry (they write its first rows). Every other
command only reads or changes an existing one, and says so when there is none."""


def open_project_services(project: Project, command: str) -> Services:
    """The project's services for `command` (its full name, as `models list`): a SQLite
    registry that does not exist is made only for one of `REGISTRY_CREATORS`."""
    return open_services(project, create=command in REGISTRY_CREATORS)


@contextmanager
def services_for(project_dir: Path, command: str) -> Iterator[Services]:
    with open_project_services(load_project(project_dir), command) as services:
        yield services


def print_json(value: Any) -> None:
    """`value` as JSON on stdout, without the value of any field whose name looks secret."""
    sys.stdout.write(json.dumps(shown("", value), indent=2, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> None:
    table = Table(*columns, title=title or None, title_justify="left", box=None, pad_edge=False)
    for row in rows:
        table.add_row(*("" if cell is None else redact(str(cell)) for cell in row))
    out.print(table)


@contextmanager
def progress(message: str) -> Iterator[None]:
    """A spinner on stderr while a long step runs (only on a terminal)."""
    if err.is_terminal:
        with err.status(message):
            yield
    else:
        yield


def when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def fail(exc: BaseException) -> int:
    """Print one paragraph for an error and return the exit code."""
    if isinstance(exc, RefitError):
        err.print(f"[bold red]error:[/] {_escape(redact(exc.message))}")
        return exc.exit_code
    if os.environ.get("REFIT_DEBUG"):
        traceback.print_exception(exc)
    err.print(
        f"[bold red]internal error:[/] {type(exc).__name__}: {_escape(redact(str(exc)))}\n"
        "This is a bug in refit; set REFIT_DEBUG=1 to see the traceback."
    )
    return INTERNAL


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def run_app(app: Callable[..., Any], args: list[str] | None = None) -> int:
    try:
        code = app(args=args, prog_name="refit", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        return INTERRUPTED
    except KeyboardInterrupt:
        err.print("interrupted")
        return INTERRUPTED
    except Exception as exc:
        usage = _usage_error(exc)
        return fail(exc) if usage is None else usage
    return code if isinstance(code, int) else 0


def _usage_error(exc: Exception) -> int | None:
    """Show a command-line usage error as click does (usage, hint, error); its exit code.

    None for any other exception. Typer 0.2x raises its own copy of click's exceptions (all
    `typer.TyperException`); click's own are kept for typer versions that still use click.
    """
    import click

    if not isinstance(exc, (typer.TyperException, click.ClickException)):
        return None
    # A group called without a command has already printed its help.
    if type(exc).__name__ != "NoArgsIsHelpError":
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err.print(f"error: {_escape(str(exc))}")
    return int(getattr(exc, "exit_code", USAGE))
