"""The server's composition root: what each uvicorn worker process runs to build its app.

`refit serve` validates the project, then starts uvicorn with `app_from_environment` as the
app factory; every worker opens its own registry and artifact store and follows production on
its own. The project folders reach the workers as `REFIT_PROJECT` (joined by `os.pathsep`), and
option overrides as the usual `REFIT_SERVE__*` spec overrides.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any

from uvicorn.config import LOGGING_CONFIG

from refit.project import load_project
from refit.serve.app import ServerApp, create_app
from refit.serve.auth import Access
from refit.serve.state import ServerState
from refit.services import open_services
from refit.spec import LogFormat

PROJECT_ENV = "REFIT_PROJECT"
_LOGGING = "refit.serve._logging"

log = logging.getLogger("refit.serve")


def app_from_environment() -> ServerApp:
    """Build a worker's app for the projects named by `REFIT_PROJECT` (default: here): one
    folder, or several joined by `os.pathsep`, the first giving the default model and the
    server's settings."""
    roots = os.environ.get(PROJECT_ENV, ".").split(os.pathsep)
    projects = [load_project(root) for root in roots]
    project = projects[0]
    access = Access.from_spec(project.spec.serve, os.environ)
    serve = project.spec.serve
    if serve.log_format == "json":
        logging.captureWarnings(True)  # a warning is a JSON line too, not text on stderr
    for each in projects:
        log.info(
            "worker %d serves %s@production from the registry %s and the artifact store %s",
            os.getpid(),
            each.spec.name,
            each.metadata_url,
            each.artifacts_url,
        )
    # `refit serve` checked that every registry is there.
    services = [open_services(each, create=False) for each in projects]
    state = ServerState.open(
        services[0],
        more=services[1:],
        poll_interval=serve.poll_interval,
        max_body_bytes=serve.max_body_bytes,
        max_batch_rows=serve.max_batch_rows,
        max_batch_size=serve.max_batch_size,
        max_batch_delay=serve.max_batch_delay_ms / 1000,
        max_queue_rows=serve.max_queue_rows,
    )

    def shutdown() -> None:
        state.metrics.close()
        for each in services:
            each.close()

    schedules = {each.spec.name: each.spec.schedule for each in projects}
    return create_app(state, on_shutdown=shutdown, access=access, schedules=schedules)


def log_config(log_format: LogFormat = "text", access_log: bool = True) -> dict[str, Any]:
    """The `logging.config.dictConfig` of a server process: uvicorn's text lines (and its
    access log), or JSON lines on stderr with refit's access log; secrets redacted in both."""
    if log_format == "text":
        config = copy.deepcopy(LOGGING_CONFIG)
        config["formatters"]["default"]["()"] = f"{_LOGGING}.TextFormatter"
        config["loggers"]["refit"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
        quiet = {"handlers": [], "propagate": False}
        config["loggers"]["refit.access"] = quiet  # uvicorn's access log is the text one
        if not access_log:
            config["loggers"]["uvicorn.access"] = quiet
        return config
    handler = ["json"]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{_LOGGING}.JsonFormatter"}},
        "filters": {"request": {"()": f"{_LOGGING}.RequestContext"}},
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["request"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": handler, "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": [], "propagate": False},  # refit's replaces it
            "refit": {"handlers": handler, "level": "INFO", "propagate": False},
            "refit.access": {
                "handlers": handler if access_log else [],
                "level": "INFO",
                "propagate": False,
            },
        },
        "root": {"handlers": handler, "level": "WARNING"},
    }
