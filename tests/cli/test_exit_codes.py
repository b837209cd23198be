"""The exit codes: one table in the code, the same list in the README, every error in it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from refit import errors
from refit.cli import app
from refit.cli._output import EXIT_CODES, INTERNAL, INTERRUPTED, USAGE, run_app

README = Path(__file__).parents[2] / "README.md"


def readme_exit_codes() -> dict[int, str]:
    """The rows of the table under README's '### Exit codes'."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n### Exit codes\n", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", section, flags=re.MULTILINE)
    return {int(code): meaning for code, meaning in rows}


def test_the_readme_lists_exactly_the_codes_of_the_table() -> None:
    assert readme_exit_codes() == EXIT_CODES


def _refit_errors(cls: type[errors.RefitError]) -> list[type[errors.RefitError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _refit_errors(sub)
    return found


@pytest.mark.parametrize("error", _refit_errors(errors.RefitError), ids=lambda c: c.__name__)
def test_every_error_exits_with_a_documented_code(error: type[errors.RefitError]) -> None:
    assert error.exit_code in EXIT_CODES, f"{error.__name__}.exit_code is not in EXIT_CODES"


def test_the_codes_of_the_command_line_itself_are_documented() -> None:
    assert {0, USAGE, INTERNAL, INTERRUPTED} <= EXIT_CODES.keys()
    # A bad spec and a bad command line are both the caller's to fix, and share their code.
    assert errors.SpecError.exit_code == USAGE


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (
            ["--cycles", "-1"],
            "Invalid value for '--cycles': Input should be greater than or equal to 1",
        ),
        (
            ["--cycles", "0"],
            "Invalid value for '--cycles': Input should be greater than or equal to 1",
        ),
        (["--duration", "0"], "Invalid value for '--duration': 0 is not a number of seconds"),
        (["--duration", "-5"], "Invalid value for '--duration': -5 is not a number of seconds"),
        (["--feed-interval", "0"], "Invalid value for '--feed-interval': 0 is not a number"),
        (["--ingest", "5x"], "Invalid value for '--ingest': expected an interval such as 30s"),
        (["--train", "often"], "Invalid value for '--train': expected an interval such as 30s"),
    ],
)
def test_demo_refuses_bad_arguments_before_creating_anything(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], problem: str
) -> None:
    folder = tmp_path / "demo"
    assert run_app(app, ["demo", str(folder), *args]) == USAGE
    printed = capsys.readouterr().err
    assert "Usage: refit demo" in printed
    assert problem in printed, printed
    assert not folder.exists()


def test_up_ends_with_the_code_of_a_child_that_cannot_be_restarted() -> None:
    from refit.cli.run import supervisor_stopped
    from refit.run.supervisor import CrashLoopError, FatalExitError

    fatal = supervisor_stopped("refit up", FatalExitError("serve exited with code 10", "serve", 10))
    assert fatal.exit_code == errors.ListenError.exit_code
    assert fatal.message == "refit up stopped: serve exited with code 10"
    looping = supervisor_stopped("refit up", CrashLoopError("serve exited 6 times", "serve", 1))
    assert looping.exit_code == errors.RefitError.exit_code == 1
