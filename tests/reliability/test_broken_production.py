"""A broken production version is visible: promotion refuses a version whose artifact is
damaged; a version damaged after its promotion is refused by every server, which keeps
answering with the old one and says so in `/v1/models`, `/metrics` and `refit status`; and a
server started in that state answers 503 saying which version failed to load, why, and when
it tries again. Readiness stays 200 while a worker has a verified model: a broken promotion
must not take every replica out of service."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import joblib
import pytest
from prometheus_client.parser import text_string_to_metric_families

from refit.project import load_project
from refit.registry import ModelVersionRow
from refit.services import Services, open_services
from serving import (
    NAME,
    Server,
    example_records,
    make_project,
    move_production,
    serving,
    wait_until,
)

pytestmark = pytest.mark.slow


def own_copy(services: Services) -> int:
    """Register v1's model again under a new number, in an artifact file of its own (served
    natively: no ONNX file), so that damaging it leaves v1 whole."""
    registry, store = services.registry, services.store
    first = registry.get_version(NAME, 1)
    buffer = io.BytesIO()
    joblib.dump(
        joblib.load(io.BytesIO(store.get(first.artifact_uri, first.artifact_sha256))),
        buffer,
        compress=1,
    )
    ref = store.put(buffer.getvalue(), kind="models", suffix=".joblib")
    skip = {"id", "version", "run_id", "created_at"}
    columns = {
        c.key: getattr(first, c.key) for c in ModelVersionRow.__table__.columns if c.key not in skip
    }
    columns.update(
        artifact_uri=ref.uri, artifact_sha256=ref.sha256, artifact_size=ref.size, onnx=None
    )
    run_id = uuid.uuid4().hex
    registry.start_run(run_id, NAME, first.snapshot_id, "test")
    return registry.register_version(run_id, ModelVersionRow(**columns)).version


def damage(services: Services, version: int) -> Path:
    """Change the bytes of a version's artifact in the store; the file's path."""
    uri = services.registry.get_version(NAME, version).artifact_uri
    path = services.project.root / ".refit" / "artifacts" / uri
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    return path


def refit(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "refit", *args, "-p", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def gauges(server: Server) -> dict[str, float]:
    text = server.http.get("/metrics").text
    wanted = {
        "refit_model_version",
        "refit_model_production_version",
        "refit_model_refused_version",
    }
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in wanted and sample.labels == {"model": NAME}
    }


def described(server: Server) -> dict[str, Any]:
    body: dict[str, Any] = server.http.get("/v1/models").json()["models"][0]
    return body


def test_a_damaged_version_is_refused_by_promotion_and_production_stays(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    with open_services(load_project(root)) as services:
        broken = own_copy(services)
        path = damage(services, broken)
    promoted = refit(root, "models", "promote", str(broken))
    assert promoted.returncode == 6, promoted.stdout + promoted.stderr
    said = " ".join(promoted.stderr.split())
    assert f"{NAME} v{broken} cannot take production: its artifact models/" in said
    assert "is corrupt" in said and "production was not moved" in said
    listed = json.loads(refit(root, "models", "list", "--json").stdout)
    assert {v["version"]: v["aliases"] for v in listed} == {broken: [], 1: ["production"]}

    path.unlink()  # missing altogether
    missing = refit(root, "models", "promote", str(broken))
    assert missing.returncode == 6
    assert "is missing" in " ".join(missing.stderr.split())


def test_every_server_keeps_the_old_version_and_shows_why_production_is_not_served(
    tmp_path: Path,
) -> None:
    root = make_project(tmp_path / "p")
    record = example_records(1)[0]
    with open_services(load_project(root)) as services:
        broken = own_copy(services)
    with serving(root, workers=2) as server:
        server.converge(1, workers=2)
        with open_services(load_project(root)) as services:
            damage(services, broken)
            move_production(services.registry, NAME, broken)
        moved = time.monotonic()

        def refused_everywhere() -> bool:
            shown = [described(server) for _ in range(6)]
            return all(s["reason"] is not None and "failed to load" in s["reason"] for s in shown)

        refused_after = wait_until(
            "every worker refuses the damaged version", refused_everywhere, within=15
        )
        shown = described(server)
        assert (shown["production"], shown["serving"], shown["ready"]) == (broken, 1, True)
        reason = shown["reason"]
        assert reason.startswith(f"v{broken} failed to load: artifact corrupt: artifact models/")
        assert shown["refused"]["version"] == broken and shown["refused"]["attempts"] >= 1
        answers = [server.http.post("/predict", json=record) for _ in range(200)]
        assert {(a.status_code, a.json()["version"]) for a in answers} == {(200, 1)}
        ready = server.http.get("/health/ready")
        assert (ready.status_code, ready.json()["version"]) == (200, 1)
        assert gauges(server) == {
            "refit_model_version": 1,
            "refit_model_production_version": broken,
            "refit_model_refused_version": broken,
        }

        def status() -> str:
            out = refit(root, "status").stdout
            return " ".join(out.split())

        expected = (
            f"production is v{broken}, serving v1 (2 servers) because v{broken} failed to load"
        )
        wait_until(
            "refit status names the refusal", lambda: expected in status(), within=20, every=0.5
        )
        status_after = time.monotonic() - moved
        assert "is corrupt" in status()

        # A server started now has nothing to serve: it says what it is waiting for.
        with serving(root, workers=1) as fresh:
            waiting = fresh.http.post("/predict", json=record)
            assert waiting.status_code == 503
            message = waiting.json()["error"]["message"]
            assert message.startswith(
                f"{NAME} is not ready: v{broken} failed to load: artifact corrupt: artifact models/"
            ), message
            assert ", retrying in " in message and message.endswith("s")
            assert fresh.http.get("/health/ready").status_code == 503
            assert described(fresh)["reason"].startswith(
                f"v{broken} failed to load: artifact corrupt"
            )

            # Rolled back: both servers answer with v1 at their next look.
            rolled = refit(root, "models", "rollback")
            assert rolled.returncode == 0, rolled.stderr
            fresh.converge(1, workers=1)
            assert described(fresh)["reason"] is None
        wait_until("the refusal is over", lambda: described(server)["reason"] is None, within=10)
        assert gauges(server)["refit_model_production_version"] == 1
    print(
        f"\nboth workers refused the damaged v{broken} {refused_after:.2f} s after it took "
        f"production, {len(answers)} requests then all answered by v1, refit status named the "
        f"refusal {status_after:.2f} s after; a server started then said why"
    )
