"""`refit status` on what the servers serve: "production is v4, serving v3 (2 servers) because
v4 failed to load: ...", from the servers' heartbeats."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from refit.cli import app
from refit.cli._output import run_app
from refit.cli._serving import serving_line
from refit.data.ingest import run_ingest
from refit.examples import create_project
from refit.project import load_project
from refit.registry.heartbeats import STALE_SECONDS, Beat, beat
from refit.registry.tables import ServerRow, utcnow
from refit.services import open_services
from refit.train.run import run_training
from serving import move_production

NAME = "breast-cancer"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
"""The time the servers' rows below are read at (they are built when the tests are collected)."""


def row(
    version: int | None, refused: int | None = None, error: str | None = None, age: float = 0
) -> ServerRow:
    now = NOW - timedelta(seconds=age)
    return ServerRow(
        instance=f"h:{version}:{refused}:{age}",
        name=NAME,
        host="h",
        pid=1,
        started_at=now,
        seen_at=now,
        version=version,
        refused_version=refused,
        refused_error=error,
    )


@pytest.mark.parametrize(
    ("production", "servers", "said"),
    [
        (
            None,
            [],
            f"production is not set; no server has reported in the last {STALE_SECONDS:.0f} s",
        ),
        (4, [row(4), row(4)], "production is v4, serving v4 (2 servers)"),
        (
            4,
            [row(3, 4, "artifact corrupt: ..."), row(3, 4, "artifact corrupt: ...")],
            "production is v4, serving v3 (2 servers) because v4 failed to load: "
            "artifact corrupt: ...",
        ),
        (
            4,
            [row(4), row(3), row(4)],
            "production is v4, serving v4 (2 servers), v3 (1 server); "
            "v4 is not loaded everywhere yet",
        ),
        (
            4,
            [row(None, 4, "artifact missing: ...")],
            "production is v4, serving nothing yet (1 server) because v4 failed to load: "
            "artifact missing: ...",
        ),
        (
            4,
            [row(4, 4, "v4's ONNX artifact failed to load: ...")],
            "production is v4, serving v4 (1 server), natively: v4's ONNX artifact failed to "
            "load: ...",
        ),
        (
            4,
            [row(4), row(2, age=STALE_SECONDS + 5)],
            f"production is v4, serving v4 (1 server) (1 server stale: not seen for over "
            f"{STALE_SECONDS:.0f} s)",
        ),
    ],
)
def test_the_serving_line(production: int | None, servers: list[ServerRow], said: str) -> None:
    assert serving_line(production, servers, NOW) == said


def test_status_shows_what_servers_serve_and_why_it_is_not_production(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = create_project(tmp_path / "p", NAME)
    with open_services(load_project(root)) as services:
        assert run_ingest(services.project, services.registry, services.store).status == "accepted"
        assert run_training(services).promoted
        registry = services.registry
        version = registry.get_version(NAME, 1)
        # v2: the same row with an artifact that is not there, put in production by hand
        columns = {c.key: getattr(version, c.key) for c in type(version).__table__.columns}
        for generated in ("id", "version", "run_id", "created_at"):
            columns.pop(generated)
        run = registry.start_run("r2", NAME, version.snapshot_id, "test")
        registry.register_version(run.id, type(version)(**columns))
        move_production(registry, NAME, 2)
        for instance in ("a", "b"):
            beat(registry, instance, NAME, Beat(1, 2, "artifact corrupt: it is"))
        beat(registry, "old", NAME, Beat(1))
        with registry.write() as s:
            old = utcnow() - timedelta(seconds=STALE_SECONDS + 10)
            s.execute(update(ServerRow).where(ServerRow.instance == "old").values(seen_at=old))

    capsys.readouterr()
    assert run_app(app, ["status", "-p", str(root)]) == 0
    text = capsys.readouterr().out
    assert (
        "serving: production is v2, serving v1 (2 servers) because v2 failed to load: "
        "artifact corrupt: it is (1 server stale" in text
    )
    assert run_app(app, ["status", "-p", str(root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["serving"].startswith("production is v2, serving v1 (2 servers)")
    servers = {s["instance"]: s for s in data["servers"]}
    assert set(servers) == {"a", "b", "old"}
    assert (servers["a"]["version"], servers["a"]["refused_version"]) == (1, 2)
    assert (servers["a"]["stale"], servers["old"]["stale"]) == (False, True)
