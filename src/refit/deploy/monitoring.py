"""refit's alert rules and Grafana dashboards, and the Compose stack's Prometheus and Grafana.

One source in the package, `templates/monitoring/`, gives every copy: `refit deploy
monitoring` writes the rules, their promtool tests and the dashboards into a folder (the
bundled `deploy/monitoring/`), with `--compose` also a Compose file that runs the project's
stack with Prometheus and Grafana beside it; the Helm chart carries the rules and dashboards
as files of its own for its optional ConfigMaps.

Two alerts (a target down) name the servers' scrape job `SERVE_JOB` and the scheduler's
`SCHEDULER_JOB`, as the Compose stack's Prometheus calls them; every other rule, and every
dashboard, selects refit's metrics by name alone.

    out = Path("churn/deploy/monitoring")
    files = render_monitoring(load_project("churn"), out, stack=Path("churn/deploy/compose"))
    write_files(out, files, keep=frozenset({ENV_FILE}))
"""

from __future__ import annotations

import json
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from refit.deploy.compose import ENV_FILE, relative_path, render_template
from refit.deploy.kubernetes import PORT
from refit.deploy.roles import METRICS_PATH, metrics_port
from refit.project import Project
from refit.spec import METRICS

SERVE_JOB = "refit-serve"
"""The scrape job of the servers, as the rules name it."""
SCHEDULER_JOB = "refit-scheduler"
"""The scrape job of the scheduler (or `refit metrics`), as the rules name it."""

RULES = "refit.rules.yml"
RULE_TESTS = "refit.rules.test.yml"
PROMETHEUS_CONFIG = "prometheus.yml"
DASHBOARDS = "dashboards"
"""The folder of the Grafana dashboards (JSON), among the rendered files."""

# Routes left out of the error rate and latency: probes and the scrape itself.
PROBE_ROUTES = f"/health/.*|{METRICS_PATH}|/ping|.*/ready"

_RULE_TEMPLATES = (RULES, RULE_TESTS)
_COMPOSE = (
    "compose.yaml",
    PROMETHEUS_CONFIG,
    "grafana/datasource.yml",
    "grafana/dashboards.yml",
)

_SCHEDULER_SCRAPE = """\
  - job_name: {{scheduler_job}}
    metrics_path: {{metrics_path}}
    static_configs:
      - targets: ["scheduler:{{port}}"]
"""


def render_rules() -> dict[str, str]:
    """The alert rules, their promtool unit tests and the dashboards (name -> text)."""
    values = {
        "serve_job": SERVE_JOB,
        "scheduler_job": SCHEDULER_JOB,
        "probe_routes": PROBE_ROUTES,
        "higher_metrics": "|".join(name for name, (_, higher) in METRICS.items() if higher),
        "lower_metrics": "|".join(name for name, (_, higher) in METRICS.items() if not higher),
    }
    files = {name: render_template(_read(_folder() / name), values) for name in _RULE_TEMPLATES}
    # Copied as they are: `{{instance}}` in a legend is Grafana's own placeholder.
    for entry in (_folder() / DASHBOARDS).iterdir():
        if entry.name.endswith(".json"):
            files[f"{DASHBOARDS}/{entry.name}"] = _read(entry)
    return dict(sorted(files.items()))


def render_monitoring(project: Project, out: Path, *, stack: Path | None = None) -> dict[str, str]:
    """The monitoring folder's files (name relative to `out` -> text): the rules, their tests
    and the dashboards, for any Prometheus and Grafana.

    With `stack`, the folder `refit deploy compose` wrote the project's stack into, also a
    Compose file that includes that stack and adds a `prometheus` service (its config
    scrapes the stack's servers, and its scheduler when `schedule.metrics_port` is on) and a
    `grafana` service provisioned with it and the dashboards, with their `.env`.
    """
    files = render_rules()
    if stack is None:
        return files
    port = metrics_port(project)
    values = {
        "name": project.spec.name,
        "stack": relative_path(stack.resolve(), out.resolve()),
        "serve_job": SERVE_JOB,
        "scheduler_job": SCHEDULER_JOB,
        "metrics_path": METRICS_PATH,
        "serve_port": str(PORT),
        "port": str(port),
    }
    values["stack_file"] = json.dumps(f"{values['stack']}/compose.yaml")  # JSON is YAML
    values["stack_env"] = json.dumps(f"{values['stack']}/{ENV_FILE}")
    values["scheduler_scrape"] = "" if port is None else render_template(_SCHEDULER_SCRAPE, values)
    for name in _COMPOSE:
        files[name] = render_template(_read(_folder() / name), values)
    files[ENV_FILE] = render_template(_read(_folder() / "env"), values)
    return dict(sorted(files.items()))


def _folder() -> Traversable:
    return resources.files("refit.deploy") / "templates" / "monitoring"


def _read(entry: Traversable) -> str:
    return entry.read_text("utf-8")
