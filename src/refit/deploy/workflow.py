"""A project's GitHub Actions workflow: the file `refit init` writes into a new project.

It tests the project (its own tests, then a training run on its committed data), retrains on
demand against the project's registry, builds and pushes the project's image, and deploys it
with Helm, from the files `refit deploy compose` and `refit deploy helm` write into the
folders named here.

    (root / WORKFLOW_FILE).write_text(render_workflow("churn", PurePosixPath("data/incoming")))
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import PurePath, PurePosixPath

from refit import __version__

WORKFLOW_FILE = PurePosixPath(".github/workflows/refit.yml")
"""Where the workflow is in a project."""

COMPOSE_DIR = "deploy/compose"
"""The folder the workflow builds the project's image from: `refit deploy compose`'s OUT."""

CHART_DIR = "deploy/helm/refit"
"""The folder of the chart the workflow deploys: `refit deploy helm`'s OUT."""

_PLACEHOLDER = re.compile(r"@@(\w+)@@")  # not {{...}}: GitHub's expressions are ${{ ... }}


def render_workflow(name: str, incoming: PurePath) -> str:
    """The workflow of the project called `name`, whose test job trains on the files in the
    folder `incoming` (relative to the project)."""
    values = {
        "name": name,
        "version": __version__,
        "compose": COMPOSE_DIR,
        "dockerfile": f"{COMPOSE_DIR}/Dockerfile",
        "chart": CHART_DIR,
        "incoming": incoming.as_posix(),
    }
    template = resources.files("refit.deploy") / "templates" / "github" / "refit.yml"
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template.read_text("utf-8"))
