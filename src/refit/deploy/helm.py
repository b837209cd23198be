"""A project as a Helm chart: the files `refit deploy helm` writes.

The chart runs the loop on Kubernetes with roles that share nothing but two stores, given to
every pod by `REFIT_STORAGE__*` variables: PostgreSQL (the registry, its URL in a Secret) and
S3-compatible object storage (artifacts, and the data source's files). The server is a
Deployment behind a Service, with an autoscaler, a disruption budget and an optional Ingress;
ingest, train and the monitor are CronJobs, with `refit metrics` serving the registry's Prometheus
figures in a one-pod Deployment, or `refit scheduler` is a one-pod Deployment that runs them and
serves those metrics itself. The project's
`refit.yaml` is a ConfigMap mounted into every pod, so refit's own image serves a project that
is only its spec, and a project image (built `FROM refit`) gets the spec it was rendered with.

    files = render_helm(load_project("churn"), image="registry.example.com/ml/churn:1.2")
    write_files(Path("churn/deploy/helm/refit"), files)
"""

from __future__ import annotations

import json
import re
from importlib import resources
from importlib.abc import Traversable

from refit import __version__
from refit.deploy import pod
from refit.deploy.compose import data_location
from refit.deploy.images import check_tagged_image, pod_image
from refit.deploy.kubernetes import METRICS_CPU, METRICS_MEMORY, METRICS_REQUESTS
from refit.deploy.monitoring import DASHBOARDS, RULES, render_rules
from refit.deploy.roles import (
    EXPORTER_ARGS,
    JOB_ARGS,
    JOBS,
    METRICS_OFF,
    METRICS_PATH,
    SCHEDULER_ARGS,
    cron_schedules,
    job_schedules,
    metrics_port,
)
from refit.project import Project
from refit.spec import BUCKET_NAME, SPEC_FILE

SPEC_IN_CHART = "files/refit.yaml"
"""Where the chart keeps the project's spec, the ConfigMap's content."""

MONITORING_IN_CHART = "files/monitoring"
"""Where the chart keeps refit's alert rules and dashboards (`monitoring.*` values)."""

_PLACEHOLDER = re.compile(r"@@(\w+)@@")  # not {{...}}: that is Helm's own template syntax


def split_image(image: str) -> tuple[str, str]:
    """A tagged image reference as the chart's `image.repository` and `image.tag`."""
    repository, _, tag = check_tagged_image(image).rpartition(":")
    return repository, tag


def render_helm(project: Project, *, image: str | None = None) -> dict[str, str]:
    """The chart's files (name relative to the chart's folder -> text).

    The data source must be one every pod reaches (`s3://bucket/prefix/` files or SQL), as
    in Compose; each schedule of `refit.yaml` becomes its CronJob's cron expression.
    """
    spec = project.spec
    bucket, _ = data_location(project, level="Kubernetes")
    repository, tag = split_image(pod_image(project, image))
    crons = cron_schedules(project)
    written = job_schedules(project)
    port = metrics_port(project)
    # Each job's args as a YAML flow list in a raw string of Helm's templates.
    args = " ".join(f'"{job}" `{json.dumps(list(JOB_ARGS[job]))}`' for job in JOBS)
    values = {
        "name": spec.name,
        "version": __version__,
        "repository": repository,
        "tag": tag,
        "bucket": bucket,
        "schedule_note": ", ".join(f"{job} {written.get(job, 'off')}" for job in JOBS[:2]),
        "monitor_note": written.get("monitor", "off"),
        **{job: crons.get(job, "") for job in JOBS},
        "monitor_enabled": json.dumps("monitor" in crons),
        "job_args": args,
        "metrics_port": json.dumps(port),
        "metrics_path": METRICS_PATH,
        "metrics_off": METRICS_OFF,
        "scheduler_args": json.dumps(list(SCHEDULER_ARGS)),
        "metrics_enabled": json.dumps(port is not None),
        "exporter_args": ", ".join(json.dumps(arg) for arg in EXPORTER_ARGS),
        "metrics_cpu": str(METRICS_CPU),
        "metrics_cpu_request": METRICS_REQUESTS[0],
        "metrics_memory_request": METRICS_REQUESTS[1],
        "metrics_memory": METRICS_MEMORY,
        "drain_seconds": str(pod.DRAIN_SECONDS),
        "prestop_seconds": str(pod.PRESTOP_SECONDS),
        "grace_seconds": str(pod.GRACE_SECONDS),
        "live_path": pod.LIVE_PATH,
        "ready_path": pod.READY_PATH,
        "startup_seconds": str(pod.WORKER_STARTUP_SECONDS),
        # The spec's rule for bucket names, as the schema's pattern of storage.artifactsUrl.
        "artifacts_pattern": json.dumps(f"^s3://{BUCKET_NAME.pattern.strip('^$')}(/.*)?$"),
    }
    files = {
        name: _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)
        for name, text in _chart_files(resources.files("refit.deploy") / "templates" / "helm")
    }
    files[SPEC_IN_CHART] = (project.root / SPEC_FILE).read_text("utf-8")
    # The rules and dashboards of `refit deploy monitoring`, for the optional ConfigMaps.
    for name, text in render_rules().items():
        if name == RULES or name.startswith(f"{DASHBOARDS}/"):
            files[f"{MONITORING_IN_CHART}/{name}"] = text
    return dict(sorted(files.items()))


def _chart_files(folder: Traversable, prefix: str = "") -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for entry in folder.iterdir():
        if entry.is_dir():
            found += _chart_files(entry, f"{prefix}{entry.name}/")
        elif entry.is_file():
            found.append((f"{prefix}{entry.name}", entry.read_text("utf-8")))
    return found
