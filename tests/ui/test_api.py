"""The dashboard's JSON endpoints in process, over a registry filled by refit itself (ingest,
two trainings, logged predictions, a monitor report): what each endpoint says, its bounds,
its errors, and who may read it."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bulk import add_snapshots
from logged import log_predictions
from refit.apikeys import Scope, key_line, new_key, parse_key_line
from refit.data.ingest import run_ingest
from refit.examples import create_project, drop_batch, example_rows
from refit.intervals import difference_text
from refit.monitor.run import run_monitor
from refit.project import load_project
from refit.registry import PRODUCTION
from refit.registry.tables import DecisionRow, ModelVersionRow, TrainingRunRow, utcnow
from refit.serve.app import create_app
from refit.serve.auth import ROUTE_ACCESS, Access
from refit.serve.state import ServerState
from refit.services import Services, open_services
from refit.train.run import run_training
from refit.ui import views

pytestmark = pytest.mark.anyio

NAME = "breast-cancer"
SHIFTED = "mean_radius"


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v1 and v2 trained on two snapshots, 300 predictions of production logged with one
    feature shifted, and the monitor's report on them."""
    root = create_project(tmp_path_factory.mktemp("ui") / "p", NAME)
    with open_services(load_project(root)) as services:
        assert run_ingest(services.project, services.registry, services.store).snapshot
        run_training(services)
        drop_batch(root, NAME, 2, 3)
        assert run_ingest(services.project, services.registry, services.store).snapshot
        run_training(services)
        production = services.registry.alias_version(NAME, PRODUCTION)
        assert production is not None
        version = services.registry.get_version(NAME, production)
        rows = example_rows(NAME).head(300).copy()
        rows[SHIFTED] = rows[SHIFTED] * 3
        log_predictions(services, version, rows)
        assert run_monitor(services).report.drifted
    return root


@pytest.fixture
def services(filled: Path, tmp_path: Path) -> Iterator[Services]:
    root = tmp_path / "p"
    shutil.copytree(filled, root)
    with open_services(load_project(root)) as opened:
        yield opened


@pytest.fixture
async def state(services: Services) -> ServerState:
    served = ServerState.open(services, heartbeat=False)
    assert await served.follower.check()
    return served


@pytest.fixture
async def client(state: ServerState, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(state, schedules={NAME: services.project.spec.schedule})
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
        yield c


async def get(client: httpx.AsyncClient, path: str) -> dict[str, Any]:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


async def test_summary_gives_production_and_its_lineage(
    client: httpx.AsyncClient, services: Services
) -> None:
    registry = services.registry
    production = registry.alias_version(NAME, PRODUCTION)
    assert production is not None
    version = registry.get_version(NAME, production)
    snapshot = registry.get_snapshot(version.snapshot_id)
    body = await get(client, f"/ui/api/models/{NAME}/summary")
    assert body["production"] == body["serving"] == production
    assert body["version"]["version"] == production
    assert body["version"]["metric"] == "roc_auc"
    assert body["version"]["value"] == version.metrics["roc_auc"]
    assert body["version"]["params"] == version.params
    assert body["snapshot"]["id"] == snapshot.id
    assert body["snapshot"]["rows"] == snapshot.row_count
    assert body["snapshot"]["data_from"] <= body["snapshot"]["data_to"]
    assert body["run"]["id"] == version.run_id
    assert body["run"]["trigger"] == "manual"
    promotion = body["promotion"]
    assert promotion["promoted"] is True
    assert promotion["candidate_version"] == production
    assert promotion["reason"]


async def test_versions_give_the_timeline_with_every_decision(
    client: httpx.AsyncClient, services: Services
) -> None:
    body = await get(client, f"/ui/api/models/{NAME}/versions")
    assert [v["version"] for v in body["versions"]] == [1, 2]
    assert all(v["metric"] == "roc_auc" and v["value"] > 0.5 for v in body["versions"])
    decisions = services.registry.list_decisions(NAME)
    assert [d["id"] for d in body["decisions"]] == sorted(d.id for d in decisions)
    second = body["decisions"][-1]
    assert second["candidate_version"] == 2
    assert second["previous_version"] == 1
    assert second["champion_value"] is not None
    assert second["reason"]
    # The gate's paired comparison, and its words as the CLI shows them.
    evidence = second["evidence"]
    assert evidence["test"] == "delong" and evidence["low"] <= evidence["high"]
    assert second["difference"] == difference_text(evidence)
    assert second["difference"] in second["reason"]
    assert body["decisions"][0]["evidence"] is None and body["decisions"][0]["difference"] is None
    promoted = [d["candidate_version"] for d in body["decisions"] if d["promoted"]]
    assert [p["version"] for p in body["periods"]] == promoted
    assert body["periods"][-1]["to"] is None
    assert body["production"] == services.registry.alias_version(NAME, PRODUCTION)


async def test_snapshots_give_batches_and_the_next_runs(
    client: httpx.AsyncClient, services: Services
) -> None:
    body = await get(client, f"/ui/api/models/{NAME}/snapshots")
    batches = services.registry.list_batches(NAME)
    assert [b["id"] for b in body["batches"]] == [b.id for b in batches]
    assert [b["rows_rejected"] for b in body["batches"]] == [b.rows_rejected for b in batches]
    assert len(body["snapshots"]) == 2
    assert {s["rows"] for s in body["snapshots"]} == {
        s.row_count for s in services.registry.list_snapshots(NAME)
    }
    jobs = {j["job"]: j for j in body["jobs"]}
    assert jobs["ingest"]["schedule"] == services.project.spec.schedule.ingest
    assert jobs["ingest"]["next_at"] is not None


async def test_drift_puts_flagged_features_first_with_their_histograms(
    client: httpx.AsyncClient,
) -> None:
    body = await get(client, f"/ui/api/models/{NAME}/drift")
    latest = body["latest"]
    assert SHIFTED in latest["drifted"]
    flags = [f["drifted"] for f in latest["features"]]
    assert flags == sorted(flags, reverse=True)
    first = latest["features"][0]
    assert first["drifted"] is True
    histogram = first["histogram"]
    assert len(histogram["reference"]) == len(histogram["live"]) > 1
    assert abs(sum(histogram["live"]) - 1) < 1e-6
    assert len(body["reports"]) == 1
    assert body["reports"][0]["scores"][SHIFTED] > 0


async def test_quality_gives_each_version_its_estimate(
    client: httpx.AsyncClient, services: Services
) -> None:
    body = await get(client, f"/ui/api/models/{NAME}/quality")
    production = str(services.registry.alias_version(NAME, PRODUCTION))
    quality = body["reports"][-1]["versions"][production]
    assert quality["metric"] == "roc_auc"
    assert quality["labelled"] == 0
    assert 0 < quality["estimated"]["roc_auc"] <= 1


async def test_traffic_gives_the_values_of_metrics(client: httpx.AsyncClient) -> None:
    record = example_rows(NAME).drop(columns="diagnosis").iloc[0].to_dict()
    for _ in range(3):
        assert (await client.post("/predict", json=record)).status_code == 200
    body = await get(client, "/ui/api/traffic")
    predict = [r for r in body["requests"] if r["route"] == "/predict"]
    assert predict == [{"route": "/predict", "status": "200", "count": 3.0}]
    latency = next(h for h in body["latency"] if h["route"] == "/predict")
    assert latency["count"] == 3
    assert latency["buckets"][-1] == [None, 3.0]
    batches = next(h for h in body["batch_rows"] if h["model"] == NAME)
    assert batches["sum"] == 3
    model = next(m for m in body["models"] if m["model"] == NAME)
    assert model["version"] == model["production"] > 0
    text = (await client.get("/metrics")).text
    assert 'refit_requests_total{route="/predict",status="200"} 3.0' in text


async def test_the_registry_is_read_in_bounded_pages(
    client: httpx.AsyncClient, services: Services
) -> None:
    """200 more versions and 1,000 more snapshots: the newest 200 versions, 50 snapshots."""
    registry = services.registry
    v1 = registry.get_version(NAME, 1)
    add_snapshots(registry, NAME, 1000, before=utcnow())
    with registry.write() as s:
        for n in range(3, 203):
            s.add(
                TrainingRunRow(
                    id=f"run{n}",
                    name=NAME,
                    snapshot_id=v1.snapshot_id,
                    status="succeeded",
                    trigger="schedule",
                    host="h",
                    pid=1,
                    version=n,
                )
            )
            s.flush()  # the run first: the version refers to it
            fields = {c.key: getattr(v1, c.key) for c in ModelVersionRow.__table__.columns}
            s.add(ModelVersionRow(**{**fields, "id": None, "version": n, "run_id": f"run{n}"}))
            s.add(
                DecisionRow(
                    name=NAME,
                    action="gate",
                    alias=PRODUCTION,
                    promoted=False,
                    candidate_version=n,
                    previous_version=1,
                    metric="roc_auc",
                    candidate_value=0.9,
                    champion_value=0.95,
                    reason="worse",
                    actor="gate",
                )
            )
    versions = await get(client, f"/ui/api/models/{NAME}/versions")
    assert len(versions["versions"]) == 200
    assert versions["versions"][-1]["version"] == 202
    assert len(versions["decisions"]) >= 200
    snapshots = await get(client, f"/ui/api/models/{NAME}/snapshots")
    assert len(snapshots["snapshots"]) == 50
    assert snapshots["snapshots"][0]["id"] != snapshots["snapshots"][-1]["id"]


async def test_an_unknown_model_is_a_404_naming_the_served_ones(
    client: httpx.AsyncClient,
) -> None:
    for view in ("summary", "versions", "snapshots", "drift", "quality"):
        response = await client.get(f"/ui/api/models/nope/{view}")
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "not_found"
        assert repr(NAME) in error["message"]


async def test_the_page_and_its_assets_load_from_the_server_alone(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/ui")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    for asset in ("app.js", "app.css"):
        assert f"/ui/static/{asset}?v=" in page.text
        response = await client.get(f"/ui/static/{asset}")
        assert response.status_code == 200
        assert "max-age" in response.headers["cache-control"]
        # Nothing fetched from elsewhere: no CDN, no font service.
        for remote in ('src="http', 'href="http', "url(http", 'fetch("http', "@import"):
            assert remote not in response.text
    assert (await client.get("/ui/static/nothing.js")).status_code == 404


async def test_the_endpoints_are_documented(client: httpx.AsyncClient) -> None:
    paths = (await get(client, "/openapi.json"))["paths"]
    for view in ("summary", "versions", "snapshots", "drift", "quality"):
        assert "get" in paths[f"/ui/api/models/{{name}}/{view}"]
    assert "get" in paths["/ui/api/traffic"]
    assert "get" in paths["/ui/api/models"]


PREDICT, ADMIN = new_key(), new_key()
KEYS = (
    parse_key_line(key_line(Scope.PREDICT, "c", PREDICT)),
    parse_key_line(key_line(Scope.ADMIN, "o", ADMIN)),
)


@pytest.mark.parametrize(
    ("key", "status"), [(None, 401), (new_key(), 401), (PREDICT, 200), (ADMIN, 200)]
)
async def test_with_keys_the_data_needs_a_key_and_the_page_stays_open(
    state: ServerState, key: str | None, status: int
) -> None:
    app = create_app(state, access=Access(keys=KEYS))
    headers = {"X-API-Key": key} if key else {}
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
        assert (await c.get("/ui")).status_code == 200
        assert (await c.get("/ui/static/app.js")).status_code == 200
        for path in ("/ui/api/models", f"/ui/api/models/{NAME}/summary", "/ui/api/traffic"):
            assert (await c.get(path, headers=headers)).status_code == status, path


def test_only_the_page_and_its_assets_are_open() -> None:
    dashboard = {p: g for p, g in ROUTE_ACCESS.items() if p.startswith("/ui")}
    assert dashboard == {"/ui": "open", "/ui/static": "open"}


async def test_a_slow_registry_delays_no_prediction(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry's reads run in the thread pool: while one is stuck, predictions answer."""
    stuck, release = threading.Event(), threading.Event()
    read = views.list_servers

    def slow(registry: Any, name: str) -> Any:
        stuck.set()
        release.wait(10)
        return read(registry, name)

    monkeypatch.setattr(views, "list_servers", slow)
    summary = asyncio.create_task(client.get(f"/ui/api/models/{NAME}/summary"))
    try:
        assert await asyncio.to_thread(stuck.wait, 10)
        record = example_rows(NAME).drop(columns="diagnosis").iloc[0].to_dict()
        answered = await asyncio.wait_for(client.post("/predict", json=record), 10)
        assert answered.status_code == 200
        assert not summary.done()
    finally:
        release.set()
    assert (await summary).status_code == 200
