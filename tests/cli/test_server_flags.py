"""The server's flags and address: a bad flag is named as the flag, a port in use has its code."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from refit.cli import app
from refit.cli._output import run_app
from refit.cli._server import bind_failures_reported, check_address
from refit.errors import ListenError
from refit.examples import create_blank_project


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another socket listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with a valid spec (and no data: nothing here gets that far)."""
    return create_blank_project(tmp_path / "mine")


@pytest.mark.parametrize("command", ["serve", "up", "demo"])
@pytest.mark.parametrize(
    ("flag", "value", "problem"),
    [
        ("--port", "70000", "Input should be less than or equal to 65535"),
        ("--port", "-1", "Input should be greater than or equal to 0"),
        ("--workers", "0", "Input should be greater than or equal to 1"),
        ("--workers", "65", "Input should be less than or equal to 64"),
    ],
)
def test_a_bad_server_flag_is_a_usage_error_naming_the_flag(
    capsys: pytest.CaptureFixture[str],
    project: Path,
    command: str,
    flag: str,
    value: str,
    problem: str,
) -> None:
    where = [str(project)] if command == "demo" else ["-p", str(project)]
    assert run_app(app, [command, *where, flag, value]) == 2
    printed = capsys.readouterr().err
    assert f"Usage: refit {command}" in printed
    assert f"Invalid value for '{flag}': {problem}" in printed
    assert "REFIT_SERVE__" not in printed


def test_up_takes_host(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    assert run_app(app, ["up", "-p", str(project), "--host", "10.255.255.1"]) == 10
    printed = capsys.readouterr().err
    assert "cannot listen on 10.255.255.1:8000: Cannot assign requested address" in printed
    assert "--host" in printed


@pytest.mark.parametrize("command", ["up", "demo"])
def test_a_port_in_use_stops_up_and_demo_before_anything_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, busy_port: int, command: str
) -> None:
    folder = tmp_path / "demo"
    if command == "up":
        create_blank_project(folder)
    where = [str(folder)] if command == "demo" else ["-p", str(folder)]
    assert run_app(app, [command, *where, "--port", str(busy_port)]) == ListenError.exit_code
    printed = capsys.readouterr().err
    assert printed.strip() == (
        f"error: port {busy_port} on 127.0.0.1 is in use by another process: stop it, "
        "or choose another port with --port (or serve.port)"
    )
    assert not (folder / ".refit").exists(), "the registry was not even opened"
    if command == "demo":
        assert not folder.exists(), "nothing is created for a demo that cannot serve"


def test_check_address_accepts_a_free_port_and_refuses_a_busy_one(busy_port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    check_address("127.0.0.1", free)
    with pytest.raises(ListenError, match=f"port {busy_port} on 127.0.0.1 is in use"):
        check_address("127.0.0.1", busy_port)


async def _nothing(scope: object, receive: object, send: object) -> None:
    raise AssertionError("the server never starts")


@pytest.mark.parametrize(
    "workers",
    [
        1,
        # uvicorn's supervisor leaves the socket that failed to bind to the garbage collector.
        pytest.param(
            2, marks=pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
        ),
    ],
)
def test_a_bind_that_fails_inside_uvicorn_is_a_listen_error(busy_port: int, workers: int) -> None:
    # The port was free when checked and taken before uvicorn bound it: uvicorn logs the
    # OSError and exits 3 (one worker binds in its server, several in the supervisor).
    target = _nothing if workers == 1 else "refit.serve.main:app_from_environment"
    with (
        pytest.raises(ListenError, match=f"port {busy_port} on 127.0.0.1 is in use"),
        bind_failures_reported("127.0.0.1", busy_port),
    ):
        uvicorn.run(
            target,  # type: ignore[arg-type]
            host="127.0.0.1",
            port=busy_port,
            workers=workers,
            lifespan="off",
            log_config=None,
        )


def test_other_exits_of_uvicorn_pass_through() -> None:
    with pytest.raises(SystemExit) as exited, bind_failures_reported("127.0.0.1", 1):
        raise SystemExit(3)
    assert exited.value.code == 3
