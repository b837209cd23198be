"""The dashboard's routes on a server's FastAPI app: the page at `/ui` and its assets under
`/ui/static/` (files of `refit.ui`), and the JSON endpoints it reads under `/ui/api/` (the views
of `refit.ui.views`), usable by scripts too.

    add_dashboard(app, state, schedules={project.spec.name: project.spec.schedule})

The endpoints that read a registry are plain `def` routes: FastAPI runs them in its thread
pool, never on the event loop, and each read is bounded (see `refit.ui.views`). They are
ordinary routes behind refit's hot prediction routes, so a slow registry delays no prediction.
Once keys are configured, the JSON endpoints need a key of scope `predict`, as predictions do
(the page asks for one and sends it as `X-API-Key`); the page and its assets hold no data and
are open.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

from refit import __version__
from refit.serve._routes import protocol_route
from refit.serve.codecs import JSONBody, refit
from refit.serve.predictor import LoadedModel
from refit.serve.schemas import json_response, refit_errors
from refit.serve.state import ServerState
from refit.spec import Schedule
from refit.ui import views
from refit.ui.traffic import traffic

PAGE, STATIC, API = "/ui", "/ui/static", "/ui/api"
CACHE_ASSETS = "public, max-age=86400, immutable"
"""The assets' cache: the page names them with refit's version, so a new release reloads."""

Schedules = Mapping[str, Schedule]
"""Per model name: its project's `schedule`."""


class _Assets(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["Cache-Control"] = CACHE_ASSETS
        return response


def add_dashboard(app: FastAPI, state: ServerState, schedules: Schedules | None = None) -> None:
    """Serve the dashboard of `state`'s models on `app` (see the module)."""
    schedules = schedules or {}
    page = (files("refit.ui") / "static" / "index.html").read_text("utf-8")
    page = page.replace("{{version}}", __version__)
    app.mount(STATIC, _Assets(packages=[("refit.ui", "static")]), name="ui-static")
    router = APIRouter(route_class=protocol_route(refit.error), tags=["dashboard"])

    def body(description: str, *errors: int) -> dict[int | str, dict[str, Any]]:
        return {200: json_response({"type": "object"}, description), **refit_errors(*errors)}

    @router.get(PAGE, include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    @router.get(
        f"{API}/models",
        summary="The served models",
        responses=body("Each model's name, the version served here and production's", 405),
    )
    async def models() -> Response:
        return JSONBody(
            {
                "models": [
                    {
                        "name": m.name,
                        "serving": _serving(m.follower.current),
                        "production": m.follower.production,
                    }
                    for m in state.models.values()
                ]
            }
        )

    @router.get(
        f"{API}/models/{{name}}/summary",
        summary="The version in production and its lineage",
        responses=body("Its snapshot, metrics, params, run, promotion, and the servers", 404, 405),
    )
    def summary(name: str) -> Response:
        served = state.served(name)
        registry = served.follower.registry
        return JSONBody(views.summary(registry, name, _serving(served.follower.current)))

    @router.get(
        f"{API}/models/{{name}}/versions",
        summary="The timeline of versions and gate decisions",
        responses=body(
            "Versions with their gate metric, production's periods, decisions", 404, 405
        ),
    )
    def versions(name: str) -> Response:
        registry = state.served(name).follower.registry
        return JSONBody(views.versions(registry, name, views.VERSIONS))

    @router.get(
        f"{API}/models/{{name}}/snapshots",
        summary="Snapshots, ingest batches and the schedule",
        responses=body("Newest snapshots and batches, each job's last and next run", 404, 405),
    )
    def snapshots(name: str) -> Response:
        registry = state.served(name).follower.registry
        return JSONBody(views.snapshots(registry, name, schedules.get(name), views.SNAPSHOTS))

    @router.get(
        f"{API}/models/{{name}}/drift",
        summary="Drift per feature over the last reports",
        responses=body(
            "Scores per report, and the latest report's histograms, flagged first", 404, 405
        ),
    )
    def drift(name: str) -> Response:
        registry = state.served(name).follower.registry
        return JSONBody(views.drift(registry, name, views.REPORTS))

    @router.get(
        f"{API}/models/{{name}}/quality",
        summary="Live quality per version, with its estimate",
        responses=body(
            "Per report and version: live metrics from feedback and the estimate", 404, 405
        ),
    )
    def quality(name: str) -> Response:
        registry = state.served(name).follower.registry
        return JSONBody(views.quality(registry, name, views.REPORTS))

    @router.get(
        f"{API}/traffic",
        summary="This server's metrics as JSON",
        responses=body("The values of /metrics: requests, latency and batch-size buckets", 405),
    )
    def server_traffic() -> Response:
        return JSONBody(traffic(state.metrics.render()))

    app.include_router(router)


def _serving(model: LoadedModel | None) -> int | None:
    return None if model is None else model.version
