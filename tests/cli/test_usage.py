"""Calling a command wrongly is a usage error (exit 2, with the usage), never an internal one."""

from __future__ import annotations

import pytest

from refit.cli import app
from refit.cli._output import INTERNAL, USAGE, fail, run_app


@pytest.mark.parametrize(
    ("args", "usage", "error"),
    [
        (["foo"], "Usage: refit [OPTIONS] COMMAND", "No such command 'foo'."),
        (["init"], "Usage: refit init [OPTIONS]", "Missing argument 'directory'."),
        (["ingest", "--bogus"], "Usage: refit ingest [OPTIONS]", "No such option: --bogus"),
        (
            ["models", "show", "abc"],
            "Usage: refit models show [OPTIONS]",
            "Invalid value for 'version': Input should be a valid integer",
        ),
        (
            ["serve", "--workers", "x"],
            "Usage: refit serve [OPTIONS]",
            "Invalid value for '--workers': Input should be a valid integer",
        ),
        (["train", "--force"], "Usage: refit train [OPTIONS]", "No such option: --force"),
    ],
)
def test_a_usage_error_shows_the_usage_and_exits_2(
    capsys: pytest.CaptureFixture[str], args: list[str], usage: str, error: str
) -> None:
    assert run_app(app, args) == USAGE == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(usage), captured.err
    assert "--help' for help." in captured.err
    assert f"Error: {error}" in captured.err
    assert "internal error" not in captured.err and "bug in refit" not in captured.err
    assert captured.out == ""


def test_a_group_without_a_command_shows_its_help_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_app(app, ["models"]) == USAGE
    captured = capsys.readouterr()
    assert "register" in captured.out and "promote" in captured.out
    assert "internal error" not in captured.err


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(app, ["--help"]) == 0
    assert "Usage: refit" in capsys.readouterr().out
    assert run_app(app, ["--version"]) == 0
    assert capsys.readouterr().out.startswith("refit ")


def test_a_real_bug_is_still_reported_as_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert fail(ZeroDivisionError("division by zero")) == INTERNAL == 70
    printed = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: division by zero" in printed
    assert "This is a bug in refit" in printed
