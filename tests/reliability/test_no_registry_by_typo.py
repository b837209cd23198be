"""A typo in a SQLite `metadata_url` never creates a new, empty registry.

The commands that only read (and the server) say there is no registry at that path, exit with
the registry's code (8) and leave no file or folder behind; the commands that write a project's
first rows (`refit ingest`, `refit train`, ...) make it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from refit.cli import app
from refit.cli._output import run_app
from refit.errors import StoreError
from refit.examples import create_project

READING_COMMANDS = [
    ["serve", "--port", "0"],
    ["status"],
    ["models", "list"],
    ["models", "show", "1"],
    ["models", "decisions"],
    ["models", "promote", "1"],
    ["models", "rollback"],
    ["models", "sign"],
    ["snapshots", "list"],
    ["snapshots", "show", "abc"],
    ["batches", "list"],
    ["batches", "rejects", "1"],
]


@pytest.fixture
def typo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose metadata_url names a file (in a folder) that does not exist."""
    create_project(tmp_path / "p", "breast-cancer")
    monkeypatch.chdir(tmp_path / "p")
    missing = tmp_path / "pth" / "typo.db"
    monkeypatch.setenv("REFIT_STORAGE__METADATA_URL", f"sqlite:///{missing}")
    monkeypatch.setenv("COLUMNS", "400")  # one line per message, whatever the terminal
    return missing


@pytest.mark.parametrize("command", READING_COMMANDS, ids=" ".join)
def test_a_reading_command_says_there_is_no_registry_and_creates_nothing(
    command: list[str], typo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_app(app, command)

    message = capsys.readouterr().err
    assert code == StoreError.exit_code, message
    assert f"there is no registry at {typo}" in message
    assert "refit ingest" in message
    assert not typo.parent.exists(), "a reading command created the registry's folder"


def test_the_commands_that_write_first_rows_make_the_registry(
    typo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_app(app, ["ingest"]) == 0, capsys.readouterr().err
    assert typo.is_file()
    # ... and from then on the reading commands open it.
    assert run_app(app, ["models", "list"]) == 0, capsys.readouterr().err
    assert run_app(app, ["snapshots", "list"]) == 0, capsys.readouterr().err


def test_every_creator_named_is_a_command() -> None:
    import typer.main

    from refit.cli._output import REGISTRY_CREATORS

    root = typer.main.get_command(app)
    names = set()
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        names.add(name)
        names.update(f"{name} {sub}" for sub in getattr(command, "commands", {}))
    assert names >= REGISTRY_CREATORS
    assert {"ingest", "train", "up", "demo"} <= REGISTRY_CREATORS
