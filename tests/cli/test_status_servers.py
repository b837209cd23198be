"""`refit status` lists the servers from their heartbeats: id, host, pid, the version each
serves and since when, when it was last seen, and those gone stale marked."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from refit.cli import app
from refit.cli._output import run_app
from refit.examples import create_project
from refit.project import load_project
from refit.registry.heartbeats import STALE_SECONDS, Beat, beat
from refit.registry.tables import ServerRow, utcnow
from refit.services import open_services

NAME = "breast-cancer"


def test_status_lists_each_server_with_its_version_and_since_when(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one line per server
    root = create_project(tmp_path / "p", NAME)
    with open_services(load_project(root)) as services:
        registry = services.registry
        beat(registry, "web-1:101:aaaa", NAME, Beat(3))
        beat(registry, "web-2:202:bbbb", NAME, Beat(None))
        beat(registry, "web-3:303:cccc", NAME, Beat(2))
        with registry.write() as s:
            long_ago = utcnow() - timedelta(seconds=STALE_SECONDS + 30)
            s.execute(
                update(ServerRow)
                .where(ServerRow.instance == "web-3:303:cccc")
                .values(seen_at=long_ago, serving_since=long_ago)
            )

    capsys.readouterr()
    assert run_app(app, ["status", "-p", str(root)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    live, loading, gone = lines["web-1:101:aaaa"], lines["web-2:202:bbbb"], lines["web-3:303:cccc"]
    assert " v3 " in live and "stale" not in live and " 0 s ago" in live
    assert " nothing yet " in loading and "stale" not in loading
    assert " v2 " in gone and gone.rstrip().endswith(" stale")
    assert f"{int(STALE_SECONDS + 30)} s ago" in gone

    assert run_app(app, ["status", "-p", str(root), "--json"]) == 0
    servers = {s["instance"]: s for s in json.loads(capsys.readouterr().out)["servers"]}
    first = servers["web-1:101:aaaa"]
    assert (first["version"], first["stale"]) == (3, False)
    assert first["serving_since"] is not None and first["serving_since"] <= first["seen_at"]
    assert servers["web-2:202:bbbb"]["serving_since"] is None
    assert servers["web-3:303:cccc"]["stale"] is True


def test_status_with_no_server_shows_no_table(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = create_project(tmp_path / "p", NAME)
    with open_services(load_project(root)):
        pass
    capsys.readouterr()
    assert run_app(app, ["status", "-p", str(root)]) == 0
    text = capsys.readouterr().out
    assert "no server has reported" in text
    assert "last seen" not in text
