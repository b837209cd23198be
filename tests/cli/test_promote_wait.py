"""`refit models promote VERSION --wait` returns once every live server serves the version, saying
how far it has got; it says so at once when no server is live, and a version the servers refuse
ends the wait at `--timeout` with exit code 11 and their reason. Real `refit serve` processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from refit.cli import app
from refit.cli._output import run_app
from refit.errors import WaitTimedOutError
from refit.project import load_project
from refit.registry import PRODUCTION
from refit.registry.heartbeats import is_stale, list_servers
from refit.registry.signing import SIGNING_KEY_ENV
from refit.services import Services, open_services
from serving import NAME, make_project, register_copies, serving, wait_until

pytestmark = pytest.mark.slow

KEY = "k" * 16 + "3f9a1c2e7b4d8f60"


def live_versions(services: Services) -> list[int | None]:
    return [s.version for s in list_servers(services.registry, NAME) if not is_stale(s)]


def test_with_no_live_server_it_says_so_and_returns_at_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = make_project(tmp_path / "p")
    with open_services(load_project(root)) as services:
        register_copies(services, 1, 1)
    capsys.readouterr()
    started = time.monotonic()
    assert run_app(app, ["models", "promote", "2", "-p", str(root), "--wait"]) == 0
    assert time.monotonic() - started < 30  # not the 120 s of the default --timeout
    printed = capsys.readouterr()
    assert f"{NAME}@production -> v2" in printed.out
    assert f"no live server of {NAME} has reported: nothing to wait for" in printed.err


def test_it_returns_once_every_live_server_serves_the_version(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = make_project(tmp_path / "p")
    with open_services(load_project(root)) as services:
        register_copies(services, 1, 1)
        with serving(root, workers=2):
            wait_until("both workers' heartbeats", lambda: live_versions(services) == [1, 1], 30)
            capsys.readouterr()
            args = ["models", "promote", "2", "-p", str(root), "--wait", "--timeout", "60"]
            assert run_app(app, [*args, "--json"]) == 0
            # At its return, and not later: every live server already says it serves v2.
            assert live_versions(services) == [2, 2]
            printed = capsys.readouterr()
            assert "live servers serve v2" in printed.err
            assert f"{NAME} v2 is served by every live server (2)" in printed.err
            assert '"served": {\n    "version": 2,\n    "serving": 2,\n    "live": 2\n  }' in (
                printed.out
            )
            # Already there: nothing to change, and nothing to wait for either.
            assert run_app(app, ["models", "promote", "2", "-p", str(root), "--wait"]) == 0
            again = capsys.readouterr()
            assert "already holds production" in again.out
            assert "served by every live server (2)" in again.err


def test_a_version_the_servers_refuse_times_out_with_their_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as env:  # v1 signed with the key that the server will hold
        env.setenv(SIGNING_KEY_ENV, KEY)
        root = make_project(tmp_path / "p")
    with open_services(load_project(root)) as services:
        register_copies(services, 1, 1)  # v2, registered without the key: not signed by it
        with serving(root, workers=1, env={SIGNING_KEY_ENV: KEY}):
            wait_until("the server's heartbeat", lambda: live_versions(services) == [1], 30)
            capsys.readouterr()
            args = ["models", "promote", "2", "-p", str(root), "--wait", "--timeout", "4"]
            assert run_app(app, args) == WaitTimedOutError.exit_code == 11
            printed = capsys.readouterr().err
            assert "waiting: 0/1 live servers serve v2" in printed
            assert f"{NAME} v2 is not served everywhere after 4 s: 0/1 live servers" in printed
            assert "refused: " in printed and SIGNING_KEY_ENV in printed
            assert services.registry.alias_version(NAME, PRODUCTION) == 2  # it stays promoted
            assert live_versions(services) == [1]
