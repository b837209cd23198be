"""The scheduler: runs `refit ingest`, `refit train` and `refit monitor` as child processes
when they are due.

Each job runs as its own process, exactly as a Kubernetes CronJob would, so a crash or memory
growth in a run never touches the scheduler. Several schedulers may point at one registry: a
job runs only under its lease, and the job's state (when it last started) lives in the
registry, so a job is never run twice for one tick and a scheduler that comes back after a
pause runs a missed job once. Training runs only when the newest snapshot has no version yet;
it is due at its schedule, or as soon as the monitor asks for it (drift, a drop in live
quality) and the newest snapshot has not been trained on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from refit.project import Project
from refit.registry import Registry
from refit.registry.jobs import (
    acquire_lease,
    interrupt_orphaned_runs,
    job_lease,
    job_states,
    new_holder,
    record_job,
    release_lease,
    trained_snapshots,
)
from refit.registry.monitoring import TRIGGERS, open_request
from refit.registry.tables import JobStateRow, TrainRequestRow, utcnow
from refit.schedule import Schedule, parse_schedule

JOBS = ("ingest", "train", "monitor")
TRIGGER = "schedule"
"""The trigger recorded with the training runs a scheduler starts."""
Event = Callable[[str, str], None]
"""Receives (job, one line saying what happened)."""


@dataclass(frozen=True)
class JobResult:
    job: str
    status: str
    """succeeded, failed, skipped or interrupted."""
    message: str


class Scheduler:
    """Runs the project's scheduled jobs until `stop()`."""

    def __init__(
        self,
        project: Project,
        registry: Registry,
        *,
        holder: str | None = None,
        lease_ttl: float = 30.0,
        tick: float = 0.5,
        on_event: Event | None = None,
        job_timeout: float = 3600.0,
    ) -> None:
        self.project = project
        self.registry = registry
        self.name = project.spec.name
        self.trained_elsewhere = project.spec.model.trained_elsewhere
        self.holder = holder or new_holder()
        self.lease_ttl = lease_ttl
        self.tick = tick
        self.job_timeout = job_timeout
        self.on_event = on_event or (lambda job, line: print(f"[{job}] {line}", flush=True))
        self.schedules: dict[str, Schedule] = {}
        for job in JOBS:
            text = getattr(project.spec.schedule, job)
            if text is not None:
                self.schedules[job] = parse_schedule(text)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._children: dict[str, subprocess.Popen[str]] = {}
        self._lock = threading.Lock()
        self._waiting: int | None = None
        """The training request last said to wait for a new snapshot."""

    # --- running --------------------------------------------------------------------------

    def start(self) -> None:
        for job in self.schedules:
            thread = threading.Thread(target=self._loop, args=(job,), name=f"refit-{job}")
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 60.0) -> None:
        """Start no new job; ask running ones to stop (a training run finishes or is recorded
        as interrupted) and wait for them."""
        self._stop.set()
        with self._lock:
            for child in self._children.values():
                child.send_signal(signal.SIGTERM)
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self, job: str) -> None:
        while not self._stop.is_set():
            try:
                self.run_if_due(job)
            except Exception as exc:  # the registry may be briefly unreachable: try again
                self.on_event(job, f"scheduler error: {type(exc).__name__}: {exc}")
            self._stop.wait(self.tick)

    # --- one job, once ----------------------------------------------------------------------

    def is_due(self, job: str) -> bool:
        state = job_states(self.registry, self.name).get(job)
        last = state.last_started_at if state is not None else None
        if job in self.schedules and self.schedules[job].is_due(last, utcnow()):
            return True
        return job == "train" and self.asked_for() is not None

    def asked_for(self) -> TrainRequestRow | None:
        """The open training request of the monitor, when the newest snapshot has had no run
        yet (a model trained elsewhere is never trained); says once when it has to wait."""
        if self.trained_elsewhere:
            return None
        request = open_request(self.registry, self.name)
        latest = None if request is None else self.registry.latest_snapshot(self.name)
        if request is None or latest is None:
            return None
        runs = trained_snapshots(self.registry, self.name)
        if not any(latest.id in ids for ids in runs.values()):
            return request
        if self._waiting != request.id:
            self._waiting = request.id
            self.on_event(
                "train",
                f"training asked for by {request.trigger} (report {request.report_id}): "
                "waiting for a new snapshot",
            )
        return None

    def train_if_asked(self) -> JobResult | None:
        """Run the train job now if the monitor asked for it and there is a new snapshot
        (`refit monitor --train`, where no scheduler runs: a Kubernetes CronJob)."""
        if self.asked_for() is None:
            return None
        return self.run_if_due("train")

    def run_if_due(self, job: str, force: bool = False) -> JobResult | None:
        """Run `job` if its time has come (or `force`) and no other scheduler runs it."""
        if not force and not self.is_due(job):
            return None
        lease = job_lease(self.name, job)
        if not acquire_lease(self.registry, lease, self.holder, self.lease_ttl):
            return None
        try:
            # Under the lease, look again: another scheduler may have run it meanwhile.
            if not force and not self.is_due(job):
                return None
            started = utcnow()
            self._record(job, started, None, "running", None)
            if job == "train" and not force and (reason := self._nothing_to_train()):
                result = JobResult(job, "skipped", reason)
            else:
                result = self._run_child(job, lease)
            self._record(job, started, utcnow(), result.status, result.message)
            if result.status != "skipped":
                self.on_event(job, result.message)
            return result
        finally:
            release_lease(self.registry, lease, self.holder)

    def _nothing_to_train(self) -> str | None:
        if self.trained_elsewhere:
            return "the model is trained elsewhere (refit models register)"
        latest = self.registry.latest_snapshot(self.name)
        if latest is None:
            return "no snapshot yet"
        # Under the train lease, a scheduled run still marked running is one whose scheduler
        # died: its snapshot is trained again now rather than skipped as "being trained".
        if orphans := interrupt_orphaned_runs(self.registry, self.name, TRIGGER, *TRIGGERS):
            self.on_event("train", f"{orphans} run(s) left by a stopped scheduler: interrupted")
        runs = trained_snapshots(self.registry, self.name)
        if latest.id in runs.get("succeeded", set()):
            return f"snapshot {latest.id[:12]} already has a version"
        if latest.id in runs.get("running", set()):
            return f"snapshot {latest.id[:12]} is being trained now"
        if latest.id in runs.get("failed", set()):
            return f"training on snapshot {latest.id[:12]} failed; run `refit train` to retry"
        return None

    def _record(self, job: str, started: Any, finished: Any, status: str, msg: str | None) -> None:
        record_job(
            self.registry,
            JobStateRow(
                project=self.name,
                job=job,
                last_started_at=started,
                last_finished_at=finished,
                last_status=status,
                last_message=msg,
                holder=self.holder,
            ),
        )

    def _run_child(self, job: str, lease: str) -> JobResult:
        args = [sys.executable, "-m", "refit", job, "-p", str(self.project.root), "--json"]
        args += ["--under-lease", self.holder]
        if job == "train":
            args += ["--trigger", TRIGGER]
        with self._lock:  # stop() signals the children it sees: start none after it
            if self._stop.is_set():
                return JobResult(job, "interrupted", "stopped before it started")
            child = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env()
            )
            self._children[job] = child
        renewing = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(lease, renewing), daemon=True)
        renewer.start()
        output = _Output(child, lambda line: self.on_event(job, line))
        try:
            child.wait(timeout=self.job_timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            return JobResult(job, "failed", f"killed after {self.job_timeout:.0f}s")
        finally:
            out, err = output.read()
            renewing.set()
            renewer.join()  # or a renewal in flight could take the lease back after its release
            with self._lock:
                self._children.pop(job, None)
        return describe(job, child.returncode, out, err)

    def _renew(self, lease: str, done: threading.Event) -> None:
        while not done.wait(self.lease_ttl / 3):
            try:
                acquire_lease(self.registry, lease, self.holder, self.lease_ttl)
            except Exception as exc:  # the registry may be back before the lease lapses
                self.on_event("scheduler", f"cannot renew the lease {lease}: {exc}")


class _Output:
    """A child's stdout and stderr, read as they come; the tuning step's trial lines on stderr
    (`trial 3/20 ...`) are passed on at once, so `refit up` shows a search as it runs."""

    def __init__(self, child: subprocess.Popen[str], on_trial: Callable[[str], None]) -> None:
        self.on_trial = on_trial
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [
            threading.Thread(target=self._read, args=(child.stdout, self.out, False), daemon=True),
            threading.Thread(target=self._read, args=(child.stderr, self.err, True), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream: Any, lines: list[str], trials: bool) -> None:
        for line in stream:
            lines.append(line)
            if trials and line.lstrip().startswith(TRIAL_PREFIX):
                self.on_trial(line.strip())
        stream.close()

    def read(self) -> tuple[str, str]:
        for reader in self.readers:
            reader.join()
        return "".join(self.out), "".join(self.err)


TRIAL_PREFIX = "trial "
"""How the lines of a tuning step's trials begin (`refit.train.tuning.trial_line`)."""


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def describe(job: str, code: int, out: str, err: str) -> JobResult:
    """One line for a finished job, from its `--json` output or its error."""
    if code in (-signal.SIGTERM, -signal.SIGINT, 130):
        return JobResult(job, "interrupted", "stopped before it finished")
    if code != 0 and not out.strip():
        last = err.strip().splitlines()[-1] if err.strip() else f"exit code {code}"
        return JobResult(job, "failed", last.removeprefix("error: "))
    try:
        data = json.loads(out)
    except json.JSONDecodeError:
        return JobResult(job, "failed" if code else "succeeded", out.strip()[-300:])
    if job == "ingest":
        status = "succeeded" if data["status"] != "refused" else "failed"
        return JobResult(job, "skipped" if data["status"] == "empty" else status, data["message"])
    if job == "monitor":
        quiet = data["status"] == "nothing_logged"
        return JobResult(job, "skipped" if quiet else "succeeded", data["line"])
    version, decision = data["version"], data["decision"]
    metric = version["metric"]
    line = (
        f"trained {version['name']} v{version['version']} on snapshot "
        f"{version['snapshot_id'][:12]}: {metric} {version['metrics'][metric]:.4f}; "
        + ("promoted to production" if decision["promoted"] else "not promoted")
        + f": {decision['reason']}"
    )
    if data.get("cause"):
        line += f"; caused by {data['cause']}"
    return JobResult(job, "succeeded", line)
