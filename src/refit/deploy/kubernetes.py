"""A project on Kubernetes, as Kustomize files: what `refit deploy kubernetes` writes.

`base/` holds the server (a Deployment behind a Service), the scheduled jobs (a CronJob for
each of ingest, train and monitor that `refit.yaml` schedules), `refit metrics` serving the
registry's Prometheus figures (a one-pod Deployment and a Service `NAME-metrics`, unless
`schedule.metrics_port` is off), the spec as a ConfigMap
mounted as the project's `refit.yaml`, the stores' settings in a second ConfigMap, and a
ServiceAccount with no rights. `overlays/dev` runs one small server; `overlays/prod` three at
least, with an autoscaler, a disruption budget and an Ingress. The credentials are a Secret
the user creates (`secret.example.yaml` shows it with placeholders only).

Every pod runs refit's image (or the project's, with `image`) as the image's non-root user,
with a read-only root filesystem and an `emptyDir` at each place refit writes at run time;
the server's probes and its shutdown take their numbers from `refit.deploy.pod`.

    files = render_kubernetes(load_project("churn"))
    write_files(Path("churn/deploy/kubernetes"), files, keep=frozenset({SETTINGS_FILE}))
"""

from __future__ import annotations

import json
import re
import textwrap
from importlib import resources
from typing import Any

import yaml

from refit.apikeys import KEY_HASHES_ENV
from refit.deploy.compose import DEFAULT_BUCKET, render_template
from refit.deploy.images import pod_image
from refit.deploy.pod import (
    DRAIN_SECONDS,
    GRACE_SECONDS,
    LIVE_PATH,
    PRESTOP_SECONDS,
    READY_PATH,
    WORKER_STARTUP_SECONDS,
)
from refit.deploy.roles import (
    EXPORTER_ARGS,
    JOB_ARGS,
    METRICS_PATH,
    cron_schedules,
    job_schedules,
    listed,
    metrics_port,
)
from refit.errors import SpecError
from refit.project import Project
from refit.registry.signing import SIGNING_KEY_ENV
from refit.schedule import parse_schedule
from refit.spec import SPEC_FILE, SqlSource

SETTINGS_FILE = "base/settings.env"
"""Where the stores are: the user's own once written (edited for their cluster), never replaced."""

SPEC_PATH = f"/project/{SPEC_FILE}"
"""Where the ConfigMap's `refit.yaml` is mounted: the image's project folder."""

USER_ID = 10001
"""The image's user and group (the Dockerfile's `USER 10001:10001`)."""

WRITABLE = {"tmp": "/tmp", "cache": "/home/refit/.cache"}
"""The only places refit writes inside a container (its root filesystem is read-only), each an
`emptyDir`: `/tmp` for the server's metrics folder and temporary files, the image user's
`~/.cache` for ONNX Runtime's own state."""

PORT = 8000
"""The port the image's server listens on (the Dockerfile's `REFIT_SERVE__PORT`)."""

SERVE_CPU = 1
"""A server pod's CPU limit, in cores: one worker with one math-library thread. Pods, not
workers, are what the autoscaler adds."""

JOB_CPU = {"ingest": 1, "train": 2, "monitor": 2}
"""A job pod's CPU limit, in cores, and so its math-library threads. The monitor's is the
training's: with `--train` it trains in its own pod."""

JOB_REQUESTS = {"ingest": ("250m", "512Mi"), "train": ("500m", "1Gi"), "monitor": ("500m", "1Gi")}
"""A job pod's CPU and memory requests."""

JOB_MEMORY = {"ingest": "1Gi", "train": "2Gi", "monitor": "2Gi"}
"""A job pod's memory limit."""

METRICS_CPU = 1
"""The `refit metrics` pod's CPU limit, in cores: room to import refit at start; a scrape is a
few SQL aggregates."""

METRICS_REQUESTS = ("50m", "192Mi")
"""The `refit metrics` pod's CPU and memory requests (the process holds ~160 MB)."""

METRICS_MEMORY = "384Mi"
"""The `refit metrics` pod's memory limit."""

ACTIVE_DEADLINE_SECONDS = {"ingest": 1800, "train": 3600, "monitor": 3600}
"""How long one run may take before Kubernetes ends it."""

STARTING_DEADLINE_SECONDS = 60
"""How late a run may start (a controller that was down); later, it waits for the next."""

PROD_REPLICAS = 3

API_KEYS_SECRET_KEY = "api-key-hashes"
"""The key of the credentials Secret holding the servers' API key hash lines."""

SIGNING_SECRET_KEY = "signing-key"
"""The key of the credentials Secret holding `REFIT_SIGNING_KEY`, optional: without it, versions
are neither signed nor checked."""


def credentials_secret(name: str) -> str:
    """The name of the Secret with a project's credentials, which the user creates."""
    return f"{name}-credentials"


_LABEL = re.compile(r"[a-z]([a-z0-9-]*[a-z0-9])?")  # a DNS label, as a Service's name must be
_NAME_LIMIT = 52 - len("-ingest")  # a CronJob's name is at most 52 characters
_DUPLICATE = {
    "ingest": "it takes the ingest lease in the registry, so a second run exits 4 doing nothing",
    "train": "it takes the train lease in the registry, so a second run exits 4 doing nothing",
    "monitor": "a second report of the same logs, and a training it starts runs once, under the "
    "train lease",
}
_TEMPLATES = "kubernetes"


def render_kubernetes(project: Project, *, image: str | None = None) -> dict[str, str]:
    """The Kustomize files (name relative to the output folder -> text) of `project`.

    The data source must be one every pod reaches (`s3://` files or SQL), the project's name
    one Kubernetes can name resources after, and each schedule one a CronJob can keep; a
    project whose model is a function of its own modules needs its own `image`, since
    refit's image holds only the mounted `refit.yaml`.
    """
    spec = project.spec
    where = project.root / SPEC_FILE
    _check_name(project)
    bucket = _bucket(project)
    image = pod_image(project, image)
    crons = cron_schedules(project)
    schedules = {job: (text, crons[job]) for job, text in job_schedules(project).items()}
    port = metrics_port(project)

    labels = _yaml(
        {
            "labels": [
                {
                    "pairs": {
                        "app.kubernetes.io/name": "refit",
                        "app.kubernetes.io/instance": spec.name,
                    },
                    "includeSelectors": True,
                }
            ]
        }
    )
    values = {
        "name": spec.name,
        "image": image,
        "bucket": bucket,
        "labels": labels,
        "port": str(PORT),
        "drain_seconds": str(DRAIN_SECONDS),
        "grace_seconds": str(GRACE_SECONDS),
        "prestop_seconds": str(PRESTOP_SECONDS),
        "startup_seconds": str(WORKER_STARTUP_SECONDS),
        "startup_failures": str(-(-WORKER_STARTUP_SECONDS // 5)),
        "live_path": LIVE_PATH,
        "ready_path": READY_PATH,
        "serve_workers": str(SERVE_CPU),
        "serve_threads": "1",
        "serve_cpu": str(SERVE_CPU),
        "serve_cpu_request": "500m",
        "serve_memory_request": "512Mi",
        "serve_memory": "1Gi",
        "prod_replicas": str(PROD_REPLICAS),
        "job_list": listed(schedules),
        "job_resources": "".join(f"  - {job}.yaml\n" for job in schedules),
        "dev_job_patches": "".join(_dev_job_patch(spec.name, job) for job in schedules),
        "metrics_note": ""
        if port is None
        else f",\n# the registry's metrics served by {spec.name}-metrics",
        "metrics_resources": "" if port is None else "  - metrics.yaml\n  - metrics-service.yaml\n",
        "dev_metrics_patch": "" if port is None else _dev_metrics_patch(spec.name),
        "metrics_port": str(port),
        "metrics_path": METRICS_PATH,
        "metrics_args": json.dumps([*EXPORTER_ARGS, "--port", str(port)]),
        "metrics_cpu": str(METRICS_CPU),
        "metrics_cpu_request": METRICS_REQUESTS[0],
        "metrics_memory_request": METRICS_REQUESTS[1],
        "metrics_memory": METRICS_MEMORY,
        "secret": credentials_secret(spec.name),
        "api_keys_secret_key": API_KEYS_SECRET_KEY,
        "serve_environment": _yaml(
            [_from_secret(spec.name, KEY_HASHES_ENV, API_KEYS_SECRET_KEY)], 12
        ),
        **_pod_parts("", 6, 10, spec.name),
    }
    files = {
        "base/kustomization.yaml": _fill("kustomization.yaml", values),
        "base/namespace.yaml": _fill("namespace.yaml", values),
        "base/serviceaccount.yaml": _fill("serviceaccount.yaml", values),
        "base/serve.yaml": _fill("serve.yaml", values),
        "base/service.yaml": _fill("service.yaml", values),
        SETTINGS_FILE: _fill("settings.env", values),
        "base/refit.yaml": where.read_text("utf-8"),
        "overlays/dev/kustomization.yaml": _fill("dev.yaml", values),
        "overlays/prod/kustomization.yaml": _fill("prod.yaml", values),
        "overlays/prod/hpa.yaml": _fill("hpa.yaml", values),
        "overlays/prod/pdb.yaml": _fill("pdb.yaml", values),
        "overlays/prod/ingress.yaml": _fill("ingress.yaml", values),
        "secret.example.yaml": _fill("secret.example.yaml", values),
    }
    if port is not None:
        files["base/metrics.yaml"] = _fill("metrics.yaml", values)
        files["base/metrics-service.yaml"] = _fill("metrics-service.yaml", values)
    for job, (text, cron) in schedules.items():
        when = text
        if cron == "* * * * *" and (parse_schedule(text).every or 60) < 60:
            when += " (every minute: a CronJob runs no more often)"
        job_values = {
            **values,
            "job": job,
            "args": json.dumps(list(JOB_ARGS[job])),
            "when": when,
            "cron": cron,
            "duplicate": _DUPLICATE[job],
            "job_cpu": str(JOB_CPU[job]),
            "job_cpu_request": JOB_REQUESTS[job][0],
            "job_memory_request": JOB_REQUESTS[job][1],
            "job_memory": JOB_MEMORY[job],
            "starting_deadline": str(STARTING_DEADLINE_SECONDS),
            "active_deadline": str(ACTIVE_DEADLINE_SECONDS[job]),
            **_pod_parts("job_", 10, 14, spec.name),
        }
        files[f"base/{job}.yaml"] = _fill("cronjob.yaml", job_values)
    return dict(sorted(files.items()))


def _bucket(project: Project) -> str:
    """The bucket of the artifacts: the data source's, or refit's default for a SQL source."""
    source = project.spec.data.source
    if isinstance(source, SqlSource):
        return DEFAULT_BUCKET
    if not source.path.startswith("s3://"):
        raise SpecError(
            f"{project.root / SPEC_FILE}: data.source.path: got {source.path!r}: on Kubernetes "
            "every pod reads the data from object storage or a database, never from its own "
            "disk; expected s3://BUCKET/PREFIX/ or a sql source"
        )
    return source.path.removeprefix("s3://").split("/", 1)[0]


def _check_name(project: Project) -> None:
    name = project.spec.name
    if not _LABEL.fullmatch(name) or len(name) > _NAME_LIMIT:
        raise SpecError(
            f"{project.root / SPEC_FILE}: name: got {name!r}: Kubernetes names the "
            f"project's resources after it: expected at most {_NAME_LIMIT} lowercase "
            "letters, digits and '-', starting with a letter and ending with a letter or digit"
        )


def _pod_parts(prefix: str, pod: int, container: int, name: str) -> dict[str, str]:
    """The pieces every pod shares, indented for where they go in its template."""
    from_secret = {
        "REFIT_STORAGE__METADATA_URL": "metadata-url",
        "REFIT_STORAGE__S3__ACCESS_KEY_ID": "s3-access-key-id",
        "REFIT_STORAGE__S3__SECRET_ACCESS_KEY": "s3-secret-access-key",
        # The same store for what reads the data source with the usual AWS_* variables.
        "AWS_ACCESS_KEY_ID": "s3-access-key-id",
        "AWS_SECRET_ACCESS_KEY": "s3-secret-access-key",
    }
    environment = [_from_secret(name, env, key) for env, key in from_secret.items()]
    environment.append(_from_secret(name, SIGNING_KEY_ENV, SIGNING_SECRET_KEY, optional=True))
    pod_security = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "fsGroup": USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    }
    container_security = {
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        }
    }
    mounts = [
        {"name": "spec", "mountPath": SPEC_PATH, "subPath": SPEC_FILE, "readOnly": True},
        *({"name": volume, "mountPath": path} for volume, path in WRITABLE.items()),
    ]
    volumes = [
        {"name": "spec", "configMap": {"name": f"{name}-spec"}},
        *({"name": volume, "emptyDir": {"sizeLimit": "256Mi"}} for volume in WRITABLE),
    ]
    parts = {
        "environment": _yaml(environment, container + 2)
        + _yaml({"envFrom": [{"configMapRef": {"name": f"{name}-settings"}}]}, container),
        "pod_security": _yaml(pod_security, pod),
        "container_security": _yaml(container_security, container),
        "mounts": _yaml({"volumeMounts": mounts}, container),
        "volumes": _yaml({"volumes": volumes}, pod).rstrip("\n"),
    }
    return {f"{prefix}{key}": value for key, value in parts.items()}


def _from_secret(name: str, env: str, key: str, optional: bool = False) -> dict[str, Any]:
    """An environment variable of a container, from a key of the credentials Secret (unset
    when an `optional` key is not there)."""
    secret: dict[str, Any] = {"name": credentials_secret(name), "key": key}
    if optional:
        secret["optional"] = True
    return {"name": env, "valueFrom": {"secretKeyRef": secret}}


def _dev_job_patch(name: str, job: str) -> str:
    return (
        "  - target:\n"
        "      kind: CronJob\n"
        f"      name: {name}-{job}\n"
        "    patch: |-\n"
        "      - op: replace\n"
        "        path: /spec/jobTemplate/spec/template/spec/containers/0/imagePullPolicy\n"
        "        value: IfNotPresent\n"
        "      - op: replace\n"
        "        path: /spec/jobTemplate/spec/template/spec/containers/0/resources/requests\n"
        "        value: {cpu: 100m, memory: 256Mi}\n"
    )


def _dev_metrics_patch(name: str) -> str:
    return (
        "  - target:\n"
        "      kind: Deployment\n"
        f"      name: {name}-metrics\n"
        "    patch: |-\n"
        "      - op: replace\n"
        "        path: /spec/template/spec/containers/0/imagePullPolicy\n"
        "        value: IfNotPresent\n"
    )


class _Indented(yaml.SafeDumper):
    """Lists indented under their key, as the templates write them."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _yaml(value: Any, indent: int = 0) -> str:
    """`value` as block YAML, in the order given, indented by `indent` spaces."""
    text = yaml.dump(value, Dumper=_Indented, sort_keys=False, width=100)
    return textwrap.indent(text, " " * indent)


def _fill(name: str, values: dict[str, str]) -> str:
    text = (resources.files("refit.deploy") / "templates" / _TEMPLATES / name).read_text("utf-8")
    return render_template(text, values)
