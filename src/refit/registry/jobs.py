"""Scheduling state in the registry: leases (who runs a job now), each job's last run, and the
training runs left running by a process that is gone.

A lease is a row with an expiry. Taking it is one write transaction that succeeds only when the
lease is free, expired, or already ours; the holder renews it while the job runs. A scheduler
killed mid-job stops renewing, so its lease lapses and another scheduler takes over.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from refit.errors import LeaseHeldError
from refit.registry.registry import Registry
from refit.registry.tables import JobStateRow, LeaseRow, TrainingRunRow, utcnow


def job_lease(project: str, job: str) -> str:
    """The name of the lease under which `job` (ingest, train) of `project` runs."""
    return f"{project}:{job}"


def new_holder() -> str:
    """A holder id that names where it runs: `host:pid:random`."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def acquire_lease(
    registry: Registry, name: str, holder: str, ttl: float, replacing: str | None = None
) -> bool:
    """Take (or renew) the lease `name` for `ttl` seconds; False when someone else holds it
    (but `replacing`, a holder known to be dead, whose lease is taken over)."""
    now = utcnow()
    try:
        with registry.write() as s:
            lease = s.get(LeaseRow, name, with_for_update=True)
            if lease is None:
                expires = now + timedelta(seconds=ttl)
                s.add(LeaseRow(name=name, holder=holder, expires_at=expires, acquired_at=now))
                s.flush()
                return True
            if lease.holder not in (holder, replacing) and lease.expires_at > now:
                return False
            if lease.holder != holder:
                lease.holder, lease.acquired_at = holder, now
            lease.expires_at = now + timedelta(seconds=ttl)
            return True
    except IntegrityError:
        return False  # another holder inserted the lease first (PostgreSQL)


def release_lease(registry: Registry, name: str, holder: str) -> None:
    with registry.write() as s:
        s.execute(delete(LeaseRow).where(LeaseRow.name == name, LeaseRow.holder == holder))


def lease_holder(registry: Registry, name: str) -> str | None:
    """Who holds an unexpired lease, if anyone."""
    with registry.read() as s:
        lease = s.get(LeaseRow, name)
        return lease.holder if lease is not None and lease.expires_at > utcnow() else None


@contextmanager
def holding(registry: Registry, name: str, ttl: float, under: str | None = None) -> Iterator[str]:
    """Run the block under the lease `name`, renewed every third of `ttl` and released at the
    end; yields the holder. LeaseHeldError when another holder has it, so two runs of one job
    (a CronJob and a run by hand, two schedulers' clusters) never overlap.

    `under` is the holder of a lease taken by the caller (a scheduler running the job as its
    child): the block runs only if that holder has it, and it stays theirs to renew and release.
    """
    if under is not None:
        if lease_holder(registry, name) != under:
            raise LeaseHeldError(f"the lease {name} is not held by {under}: not running")
        yield under
        return
    holder = new_holder()
    if not acquire_lease(registry, name, holder, ttl):
        current = lease_holder(registry, name)
        # A run of this host killed before it could release (SIGKILL, OOM): no need to wait
        # for its lease to lapse.
        dead = current is not None and _dead_here(current)
        if not (dead and acquire_lease(registry, name, holder, ttl, replacing=current)):
            raise LeaseHeldError(
                f"{name} is running elsewhere now (lease held by {current}); try again when it ends"
            )
    done = threading.Event()

    def renew() -> None:
        while not done.wait(ttl / 3):
            try:
                acquire_lease(registry, name, holder, ttl)
            except Exception:  # the registry may be back before the lease lapses
                continue

    renewer = threading.Thread(target=renew, name=f"renew {name}", daemon=True)
    renewer.start()
    try:
        yield holder
    finally:
        done.set()
        renewer.join()
        release_lease(registry, name, holder)


def _dead_here(holder: str) -> bool:
    """Whether `holder` (`host:pid:random`) is a process of this host that is gone."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    return host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid))


def job_states(registry: Registry, project: str) -> dict[str, JobStateRow]:
    with registry.read() as s:
        rows = s.scalars(select(JobStateRow).where(JobStateRow.project == project))
        return {row.job: row for row in rows}


def record_job(registry: Registry, state: JobStateRow) -> None:
    with registry.write() as s:
        s.merge(state)


def trained_snapshots(registry: Registry, name: str) -> dict[str, set[str]]:
    """Snapshot ids by the outcome of the runs made on them (succeeded, failed, ...)."""
    with registry.read() as s:
        rows = s.execute(
            select(TrainingRunRow.snapshot_id, TrainingRunRow.status).where(
                TrainingRunRow.name == name
            )
        )
        outcome: dict[str, set[str]] = {}
        for snapshot_id, status in rows:
            outcome.setdefault(status, set()).add(snapshot_id)
        return outcome


# --- training runs whose process is gone --------------------------------------------------


def interrupt_dead_runs(registry: Registry, name: str) -> int:
    """Mark runs of this host whose process is gone as interrupted; returns how many."""
    host = socket.gethostname()
    with registry.write() as s:
        runs = s.scalars(
            select(TrainingRunRow).where(
                TrainingRunRow.name == name,
                TrainingRunRow.status == "running",
                TrainingRunRow.host == host,
            )
        )
        dead = [run for run in runs if not process_alive(run.pid)]
        for run in dead:
            run.status, run.finished_at = "interrupted", utcnow()
            run.error = "the training process ended before the run finished"
        return len(dead)


def interrupt_orphaned_runs(registry: Registry, name: str, *triggers: str) -> int:
    """Mark every running run of one of `triggers` as interrupted; returns how many.

    For a scheduler that has just taken the train lease: runs of these triggers are started only
    under that lease, whose holder renews it while the run lasts, so one still marked running
    lost its scheduler (killed, or cut off) before it ended, on whatever host it ran.
    """
    with registry.write() as s:
        runs = list(
            s.scalars(
                select(TrainingRunRow).where(
                    TrainingRunRow.name == name,
                    TrainingRunRow.status == "running",
                    TrainingRunRow.trigger.in_(triggers),
                )
            )
        )
        for run in runs:
            run.status, run.finished_at = "interrupted", utcnow()
            run.error = "its scheduler stopped holding the train lease before the run finished"
        return len(runs)


def process_alive(pid: int) -> bool:
    """Whether a process of this host with id `pid` is running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
