"""The server's composition root: what each uvicorn worker process runs to build its app.

`refit serve` validates the project, then starts uvicorn with `app_from_environment` as the
app factory; every worker opens its own registry and artifact store and follows production on
its own. The project folder reaches the workers as `REFIT_PROJECT`, and option overrides as the
usual `REFIT_SERVE__*` spec overrides.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from fastapi import FastAPI
from uvicorn.config import LOGGING_CONFIG

from refit.project import load_project
from refit.serve.app import create_app
from refit.serve.auth import Access
from refit.serve.state import ServerState
from refit.services import open_services

PROJECT_ENV = "REFIT_PROJECT"


def app_from_environment() -> FastAPI:
    """Build a worker's app for the project named by `REFIT_PROJECT` (default: here)."""
    project = load_project(os.environ.get(PROJECT_ENV, "."))
    access = Access.from_spec(project.spec.serve, os.environ)
    services = open_services(project, create=False)  # `refit serve` checked it is there
    serve = project.spec.serve
    state = ServerState.open(
        services,
        poll_interval=serve.poll_interval,
        max_body_bytes=serve.max_body_bytes,
        max_batch_rows=serve.max_batch_rows,
        max_batch_size=serve.max_batch_size,
        max_batch_delay=serve.max_batch_delay_ms / 1000,
        max_queue_rows=serve.max_queue_rows,
    )

    def shutdown() -> None:
        state.metrics.close()
        services.close()

    return create_app(state, on_shutdown=shutdown, access=access)


def log_config() -> dict[str, Any]:
    """uvicorn's logging, with refit's own server messages shown the same way."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["refit"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config
