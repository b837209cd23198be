"""What refit's containers run on every deployment level (Compose, the Kubernetes manifests,
the Helm chart): the scheduled jobs, their commands and their schedules, and where the
scheduler serves its metrics, written once for all of them.

Where a scheduler runs (Compose, the chart's `schedule.cronJobs=false`), it runs every job of
`JOBS` on `refit.yaml`'s schedules and serves `/metrics`; where it does not (CronJobs), each job
is a CronJob of its own, and the monitor's runs the training it asks for itself (`--train`).
"""

from __future__ import annotations

from collections.abc import Iterable

from refit.errors import SpecError
from refit.project import Project
from refit.schedule import cron_expression
from refit.spec import SPEC_FILE

JOBS = ("ingest", "train", "monitor")
"""The scheduled jobs, in the order they are rendered: each `refit.yaml`'s `schedule.JOB`."""

JOB_ARGS = {
    "ingest": ("ingest",),
    "train": ("train",),
    # A CronJob has no scheduler to run the training drift or quality asked for: the monitor's
    # run does it (when a new snapshot waits), under the train lease.
    "monitor": ("monitor", "--json", "--train"),
}
"""The `refit` command of one run of each job, as a CronJob runs it."""

METRICS_HOST = "0.0.0.0"
"""Where a scheduler in a container serves `/metrics`: every address of the container, for a
Prometheus on its network (elsewhere it binds `serve.host`, loopback by default)."""

SCHEDULER_ARGS = ("scheduler", "--host", METRICS_HOST)
"""`refit scheduler` in a container whose metrics are on (`schedule.metrics_port` set)."""

METRICS_OFF = "off"
"""`schedule.metrics_port` as an environment variable says "no metrics"."""

METRICS_PATH = "/metrics"


def job_schedules(project: Project) -> dict[str, str]:
    """The jobs `refit.yaml` schedules (job -> its schedule as written); a job whose
    schedule is null is left out."""
    schedule = project.spec.schedule
    return {job: text for job in JOBS if (text := getattr(schedule, job)) is not None}


def cron_schedules(project: Project) -> dict[str, str]:
    """The scheduled jobs' CronJob schedules (job -> cron expression), by the one rule of
    `refit.schedule.cron_expression`; a schedule no cron expression keeps is a SpecError."""
    crons: dict[str, str] = {}
    for job, text in job_schedules(project).items():
        try:
            crons[job] = cron_expression(text)
        except ValueError as exc:
            raise SpecError(
                f"{project.root / SPEC_FILE}: schedule.{job}: got {text!r}: {exc}"
            ) from None
    return crons


def metrics_port(project: Project) -> int | None:
    """The port of the scheduler's `/metrics` in a container, None when `refit.yaml` turns
    them off; a SpecError for port 0, which no Prometheus could be pointed at."""
    port = project.spec.schedule.metrics_port
    if port == 0:
        raise SpecError(
            f"{project.root / SPEC_FILE}: schedule.metrics_port: got 0: Prometheus finds the "
            "scheduler's /metrics on a port fixed in the deployment files: expected a port "
            "from 1 to 65535, or null for no metrics"
        )
    return port


def listed(jobs: Iterable[str]) -> str:
    """Jobs as a sentence says them: `ingest`, `ingest and train`, `ingest, train and monitor`;
    `no job` for none."""
    names = list(jobs)
    return " and ".join(filter(None, (", ".join(names[:-1]), *names[-1:]))) or "no job"
