"""`refit keys create`, and the rule that a server without keys stays on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from refit.apikeys import KEY_PREFIX, Scope, hash_key, parse_key_line
from refit.cli import app
from refit.cli._output import run_app
from refit.examples import create_project


def test_create_prints_a_new_key_once_and_the_hash_line_that_configures_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_app(app, ["keys", "create", "--scope", "admin", "--name", "ops"]) == 0
    printed = capsys.readouterr()
    lines = dict(
        line.split(maxsplit=1) for line in printed.out.replace("hash line", "hash").splitlines()
    )
    key, line = lines["key"].strip(), lines["hash"].strip()
    assert key.startswith(KEY_PREFIX) and len(key) >= len(KEY_PREFIX) + 43  # 32 random bytes
    configured = parse_key_line(line)
    assert (configured.scope, configured.name, configured.digest) == (
        Scope.ADMIN,
        "ops",
        hash_key(key),
    )
    assert "shown only this once" in printed.err and key not in printed.err

    assert run_app(app, ["keys", "create", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["key"] != key
    assert parse_key_line(made["hash_line"]).scope is Scope.PREDICT


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--name", "has space"], "cannot name a key"),
        (["--scope", "root"], "'root' is not one of"),
    ],
)
def test_a_bad_option_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], args: list[str], problem: str
) -> None:
    assert run_app(app, ["keys", "create", *args]) == 2
    assert problem in capsys.readouterr().err


@pytest.mark.parametrize("command", ["serve", "up"])
def test_without_keys_the_server_does_not_listen_beyond_loopback(
    tmp_path: Path, command: str
) -> None:
    root = create_project(tmp_path / "project", "breast-cancer")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REFIT_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "refit",
            command,
            "-p",
            str(root),
            "--host",
            "0.0.0.0",
            "--port",
            "0",
        ],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "with no API key" in done.stderr
    for way in ("refit keys create", "REFIT_API_KEY_HASHES", "127.0.0.1", "serve.auth: none"):
        assert way in done.stderr
    assert "Traceback" not in done.stderr
