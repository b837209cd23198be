"""The scheduler, driven one job at a time through `run_if_due`, on a real example project.

Every job that runs starts `python -m refit ingest|train` as a child process (seconds each,
mostly imports), so these tests start as few as they can: twelve in the whole file.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from refit.examples import create_project
from refit.project import Project, load_project
from refit.registry import Registry, open_registry
from refit.registry.jobs import acquire_lease, job_states, lease_holder, record_job
from refit.registry.tables import JobStateRow, utcnow
from refit.run.scheduler import JobResult, Scheduler, describe
from refit.services import Services, open_services
from refit.spec import SPEC_FILE

DEADLINE = 60.0
"""Generous: a child process takes a few seconds on a quiet machine, more on a busy one."""


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """The breast-cancer example, ingesting every minute and training every second."""
    create_project(tmp_path / "p", "breast-cancer")
    return load_project(
        tmp_path / "p", {"REFIT_SCHEDULE__INGEST": "1m", "REFIT_SCHEDULE__TRAIN": "1s"}
    )


@pytest.fixture
def services(project: Project) -> Iterator[Services]:
    with open_services(project) as services:
        yield services


class Events:
    """What the scheduler reports through `on_event`."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, job: str, line: str) -> None:
        self.seen.append((job, line))


def scheduler(
    services: Services, holder: str, registry: Registry | None = None, **options: float
) -> Scheduler:
    return Scheduler(
        services.project,
        registry or services.registry,
        holder=holder,
        on_event=Events(),
        **options,
    )


def events(scheduler: Scheduler) -> list[tuple[str, str]]:
    assert isinstance(scheduler.on_event, Events)
    return scheduler.on_event.seen


def state(services: Services, job: str) -> JobStateRow | None:
    return job_states(services.registry, services.project.spec.name).get(job)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < end, f"timed out waiting until {what}"
        time.sleep(0.05)


def ran(result: JobResult | None) -> JobResult:
    assert result is not None, "the job did not run"
    return result


# --- the jobs themselves ---------------------------------------------------------------------


def test_ingest_then_train_once_per_snapshot(services: Services) -> None:
    jobs = scheduler(services, "s1")
    name = services.project.spec.name
    registry = services.registry

    # Training is due, but there is nothing to train on yet: no child, no version.
    first = ran(jobs.run_if_due("train"))
    assert (first.status, first.message) == ("skipped", "no snapshot yet")

    ingest = ran(jobs.run_if_due("ingest"))
    assert ingest.status == "succeeded"
    assert ingest.message.startswith("snapshot ")
    assert "341 rows" in ingest.message
    snapshot = registry.latest_snapshot(name)
    assert snapshot is not None and snapshot.id[:12] in ingest.message
    ingested = state(services, "ingest")
    assert ingested is not None
    assert (ingested.last_status, ingested.last_message) == ("succeeded", ingest.message)
    assert ingested.holder == "s1"
    assert ingested.last_finished_at is not None
    assert ingested.last_finished_at >= ingested.last_started_at
    assert jobs.run_if_due("ingest") is None  # every minute: not again yet

    wait_until(lambda: jobs.is_due("train"), "training is due")
    trained = ran(jobs.run_if_due("train"))
    assert trained.status == "succeeded"
    assert trained.message.startswith(f"trained {name} v1 on snapshot {snapshot.id[:12]}: roc_auc")
    assert "promoted to production" in trained.message
    (version,) = registry.list_versions(name)
    assert version.snapshot_id == snapshot.id
    assert [run.trigger for run in registry.list_runs(name)] == ["schedule"]

    # Its time comes again, but that snapshot already has a version: no second one.
    wait_until(lambda: jobs.is_due("train"), "training is due again")
    again = ran(jobs.run_if_due("train"))
    assert again.status == "skipped"
    assert again.message == f"snapshot {snapshot.id[:12]} already has a version"
    assert len(registry.list_versions(name)) == 1
    skipped = state(services, "train")
    assert skipped is not None and skipped.last_status == "skipped"
    assert events(jobs) == [("ingest", ingest.message), ("train", trained.message)]

    # Forced, it trains even so (and even before its time).
    forced = ran(jobs.run_if_due("train", force=True))
    assert forced.status == "succeeded"
    assert forced.message.startswith(f"trained {name} v2 on snapshot {snapshot.id[:12]}")
    assert [v.version for v in registry.list_versions(name)] == [2, 1]


def test_a_change_of_features_is_recovered_by_the_next_ingest_and_train(
    services: Services,
) -> None:
    jobs = scheduler(services, "s1")
    name, root = services.project.spec.name, services.project.root
    assert ran(jobs.run_if_due("ingest")).status == "succeeded"
    assert ran(jobs.run_if_due("train")).status == "succeeded"
    before = services.registry.latest_snapshot(name)
    assert before is not None

    # The jobs run as child processes, which read refit.yaml as it is now.
    spec = yaml.safe_load((root / SPEC_FILE).read_text())
    spec["data"]["features"]["mean_radius"] = "category"
    (root / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))

    rebuilt = ran(jobs.run_if_due("ingest", force=True))
    assert rebuilt.status == "succeeded", rebuilt.message
    assert rebuilt.message.startswith(
        f"the spec's columns changed since snapshot {before.id[:12]} "
        "(retyped: mean_radius (float64 -> str)): snapshot "
    )
    latest = services.registry.latest_snapshot(name)
    assert latest is not None and latest.columns["mean_radius"] == "str"
    wait_until(lambda: jobs.is_due("train"), "training is due")
    trained = ran(jobs.run_if_due("train"))
    assert trained.status == "succeeded", trained.message
    assert trained.message.startswith(f"trained {name} v2 on snapshot {latest.id[:12]}")


# --- several schedulers, one registry -------------------------------------------------------


def test_a_model_trained_elsewhere_is_never_trained(tmp_path: Path) -> None:
    root = create_project(tmp_path / "p", "breast-cancer")
    spec = yaml.safe_load((root / SPEC_FILE).read_text())
    spec["model"] = {"task": "classification", "trained_elsewhere": True}
    (root / SPEC_FILE).write_text(yaml.safe_dump(spec))
    with open_services(load_project(root, {"REFIT_SCHEDULE__TRAIN": "1s"})) as services:
        jobs = scheduler(services, "s1")
        assert ran(jobs.run_if_due("ingest")).status == "succeeded"
        skipped = ran(jobs.run_if_due("train"))
        assert (skipped.status, skipped.message) == (
            "skipped",
            "the model is trained elsewhere (refit models register)",
        )
        assert services.registry.list_versions(services.project.spec.name) == []


def test_two_schedulers_run_a_due_job_once(services: Services, project: Project) -> None:
    other_registry = open_registry(project.metadata_url)  # as another process would
    try:
        racers = [scheduler(services, "s1"), scheduler(services, "s2", other_registry)]
        results: dict[str, JobResult | None] = {}
        errors: list[BaseException] = []
        barrier = threading.Barrier(2)

        def race(jobs: Scheduler) -> None:
            barrier.wait()
            try:
                results[jobs.holder] = jobs.run_if_due("ingest")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=race, args=(jobs,)) for jobs in racers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        other_registry.close()
    assert errors == []
    winners = [holder for holder, result in results.items() if result is not None]
    assert len(winners) == 1, results
    assert ran(results[winners[0]]).status == "succeeded"
    assert len(services.registry.list_batches(project.spec.name)) == 1
    ingested = state(services, "ingest")
    assert ingested is not None and ingested.holder == winners[0]
    assert sum(len(events(jobs)) for jobs in racers) == 1


def test_a_killed_schedulers_lease_blocks_until_it_lapses(services: Services) -> None:
    name = services.project.spec.name
    lease = f"{name}:ingest"
    # A scheduler took the lease and was killed: it never releases or renews it.
    assert acquire_lease(services.registry, lease, "killed", 2.0)
    jobs = scheduler(services, "next", lease_ttl=1.5)  # short: the job must renew it
    assert jobs.run_if_due("ingest") is None
    assert state(services, "ingest") is None

    wait_until(lambda: lease_holder(services.registry, lease) is None, "the lease lapsed")
    outcome: list[JobResult | None] = []
    runner = threading.Thread(target=lambda: outcome.append(jobs.run_if_due("ingest")))
    runner.start()
    try:
        wait_until(lambda: state(services, "ingest") is not None, "the job started")
        # All the while the job runs, far longer than the lease's 1.5 s, the lease stays its.
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            holder = lease_holder(services.registry, lease)
            current = state(services, "ingest")
            if current is None or current.last_status != "running":
                break
            assert holder == "next", "the lease lapsed while its job was running"
            time.sleep(0.1)
    finally:
        runner.join(DEADLINE)
    assert ran(outcome[0]).status == "succeeded"
    ingested = state(services, "ingest")
    assert ingested is not None and ingested.holder == "next"
    assert lease_holder(services.registry, lease) is None  # released when the job ended


def test_missed_ticks_run_once_then_wait_for_the_next(services: Services) -> None:
    name = services.project.spec.name
    an_hour_ago = utcnow() - timedelta(hours=1)
    record_job(
        services.registry,
        JobStateRow(
            project=name,
            job="ingest",
            last_started_at=an_hour_ago,
            last_finished_at=an_hour_ago + timedelta(seconds=5),
            last_status="succeeded",
            last_message="an hour ago",
            holder="old",
        ),
    )
    jobs = scheduler(services, "back")
    assert jobs.is_due("ingest")  # sixty ticks were missed while nothing ran...
    before = utcnow()
    assert ran(jobs.run_if_due("ingest")).status == "succeeded"  # ...they make one run
    assert not jobs.is_due("ingest")
    assert jobs.run_if_due("ingest") is None
    ingested = state(services, "ingest")
    assert ingested is not None and ingested.last_started_at >= before
    # The next run is due a minute after this one started, not an hour ago plus a minute.
    assert jobs.schedules["ingest"].next_after(ingested.last_started_at) > utcnow()
    assert len(services.registry.list_batches(name)) == 1


def test_stop_interrupts_the_running_job_and_ends_the_loops(services: Services) -> None:
    jobs = scheduler(services, "s1", tick=0.05)
    before = set(threading.enumerate())
    jobs.start()
    try:
        wait_until(
            lambda: (s := state(services, "ingest")) is not None and s.last_status == "running",
            "ingest started",
        )
        wait_until(lambda: state(services, "train") is not None, "train looked for a snapshot")
    finally:
        jobs.stop(timeout=DEADLINE)
    loops = [t.name for t in threading.enumerate() if t not in before]
    assert not loops, f"the scheduler's threads did not end: {loops}"
    ingested = state(services, "ingest")
    assert ingested is not None and ingested.last_status == "interrupted"
    assert services.registry.list_batches(services.project.spec.name) == []
    assert ("ingest", ingested.last_message) in events(jobs)
    # Training had nothing to train on: it said so without a child process.
    trained = state(services, "train")
    assert trained is not None and trained.last_message == "no snapshot yet"


# --- one line for a finished job --------------------------------------------------------------


def ingest_output(status: str, message: str) -> str:
    return json.dumps({"status": status, "message": message, "batch": None, "snapshot": None})


def train_output(promoted: bool, reason: str) -> str:
    return json.dumps(
        {
            "run_id": "r1",
            "version": {
                "name": "demo",
                "version": 3,
                "snapshot_id": "ab" * 32,
                "metric": "roc_auc",
                "metrics": {"roc_auc": 0.98765, "accuracy": 0.9},
            },
            "decision": {"promoted": promoted, "reason": reason},
        }
    )


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [("accepted", 0, "succeeded"), ("empty", 0, "skipped"), ("refused", 5, "failed")],
)
def test_describe_ingest(status: str, code: int, expected: str) -> None:
    result = describe("ingest", code, ingest_output(status, f"it was {status}"), "")
    assert result == JobResult("ingest", expected, f"it was {status}")


def test_describe_a_promoted_version() -> None:
    result = describe("train", 0, train_output(True, "first version above the floor"), "")
    assert result == JobResult(
        "train",
        "succeeded",
        "trained demo v3 on snapshot abababababab: roc_auc 0.9877; "
        "promoted to production: first version above the floor",
    )


def test_describe_a_version_the_gate_refused() -> None:
    result = describe("train", 0, train_output(False, "0.9877 does not beat v2's 0.99"), "")
    assert result.status == "succeeded"  # the run worked; the gate said no
    assert result.message.endswith("roc_auc 0.9877; not promoted: 0.9877 does not beat v2's 0.99")


@pytest.mark.parametrize(
    ("code", "err", "message"),
    [
        (7, "  fitting\nerror: training failed: ValueError: x\n", "training failed: ValueError: x"),
        (3, "error: no snapshot yet", "no snapshot yet"),
        (1, "", "exit code 1"),
        (-9, "", "exit code -9"),  # killed, by the kernel's OOM killer say
    ],
)
def test_describe_failures(code: int, err: str, message: str) -> None:
    assert describe("train", code, "", err) == JobResult("train", "failed", message)


def test_describe_output_that_is_not_json() -> None:
    assert describe("ingest", 0, "all good\n", "") == JobResult("ingest", "succeeded", "all good")
    assert describe("ingest", 6, "Traceback ...\n", "").status == "failed"


@pytest.mark.parametrize("code", [-15, -2, 130])
def test_describe_signals_as_interrupted(code: int) -> None:
    result = describe("train", code, "", "interrupted")
    assert result == JobResult("train", "interrupted", "stopped before it finished")
