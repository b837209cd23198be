"""Promise: the CLI never prints a secret of the configuration.

The `refit` command is run as a user runs it, with secrets in the places a configuration holds
them: a database URL's password, a key where its hash belongs, a misspelt secret field. What it
prints (stdout and stderr, on success and on failure) must never contain the secret; a URL is
shown with its user and `***` for its password.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from refit._spec_problems import NOT_SHOWN, redact, shown
from refit.apikeys import new_key
from refit.examples import create_project

pytestmark = pytest.mark.slow

PASSWORD = "hunter2-s3cr3t"


def refit(root: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REFIT_")}
    return subprocess.run(
        [sys.executable, "-m", "refit", *args, "-p", str(root)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("env", "told"),
    [
        pytest.param(
            {"REFIT_STORAGE__METADATA_URL": f"mysql://refit:{PASSWORD}@db/refit"},
            "storage.metadata_url: got 'mysql://refit:***@db/refit'",
            id="spec-error-url",
        ),
        pytest.param(
            {"REFIT_STORAGE__METADATA_URL": f"postgresql:/refit:{PASSWORD}@db/refit"},
            "not a database URL: 'postgresql:/refit:***@db/refit'",
            id="store-error-url",
        ),
        pytest.param(
            {"REFIT_SERVE__KEYS": f'["{new_key()}"]'},
            "serve.keys.0: got a value not shown",
            id="key-instead-of-hash",
        ),
        pytest.param(
            {
                "REFIT_STORAGE__S3__SECRET_ACCESS_KEY": "x",
                "REFIT_STORAGE__S3__SECRET_ACESS_KEY": PASSWORD,
            },
            "a value not shown, as it may be a secret",
            id="misspelt-secret",
        ),
    ],
)
@pytest.mark.parametrize("command", [("status",), ("models", "list")])
def test_the_cli_never_echoes_a_secret(
    tmp_path: Path, env: dict[str, str], told: str, command: tuple[str, ...]
) -> None:
    root = tmp_path / "project"
    create_project(root, "breast-cancer")
    done = refit(root, *command, env=env)
    printed = done.stdout + done.stderr
    assert done.returncode in (2, 8), printed
    assert told in printed
    for secret in (PASSWORD, *(v for v in env.values() if v.startswith('["refit_'))):
        assert secret.strip('[]"') not in printed
    assert "Traceback" not in printed


def test_one_redaction_rule() -> None:
    assert redact(f"postgresql+psycopg://refit:{PASSWORD}@db:5432/refit") == (
        "postgresql+psycopg://refit:***@db:5432/refit"
    )
    assert redact("see s3://bucket/a@b and https://user@host/x") == (
        "see s3://bucket/a@b and https://user@host/x"
    )
    assert shown("password", "x") == NOT_SHOWN
    assert shown("storage", {"metadata_url": f"sqlite://u:{PASSWORD}@h/db", "api_token": "t"}) == {
        "metadata_url": "sqlite://u:***@h/db",
        "api_token": NOT_SHOWN,
    }
