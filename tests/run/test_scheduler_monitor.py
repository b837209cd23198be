"""The scheduler and the monitor: `refit monitor` as a job of its own, and training that is
due as soon as the monitor asks for it and there is a new snapshot to train on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from refit.data.ingest import run_ingest
from refit.examples import create_project, drop_batch
from refit.project import Project, load_project
from refit.registry.jobs import record_job
from refit.registry.monitoring import open_request, request_training
from refit.registry.tables import JobStateRow, utcnow
from refit.run.scheduler import JOBS, JobResult, Scheduler, describe
from refit.services import Services, open_services
from refit.train.run import run_training

NAME = "breast-cancer"


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """The breast-cancer example, ingested once, training every hour."""
    root = create_project(tmp_path / "p", NAME)
    project = load_project(root, {"REFIT_SCHEDULE__TRAIN": "1h"})
    with open_services(project) as services:
        assert run_ingest(project, services.registry, services.store).snapshot
    return project


@pytest.fixture
def services(project: Project) -> Iterator[Services]:
    with open_services(project) as services:
        yield services


def scheduler(services: Services) -> tuple[Scheduler, list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []
    jobs = Scheduler(
        services.project, services.registry, holder="s1", on_event=lambda *e: seen.append(e)
    )
    return jobs, seen


def trained_just_now(services: Services) -> None:
    """The train job's schedule ran a moment ago: not due again for an hour."""
    now = utcnow()
    record_job(
        services.registry,
        JobStateRow(
            project=NAME,
            job="train",
            last_started_at=now,
            last_finished_at=now,
            last_status="succeeded",
            last_message="",
            holder="s0",
        ),
    )


def test_the_monitor_is_a_job_of_the_scheduler() -> None:
    assert JOBS == ("ingest", "train", "monitor")


def test_a_request_makes_training_due_and_the_run_answers_it(services: Services) -> None:
    jobs, seen = scheduler(services)
    trained_just_now(services)
    assert not jobs.is_due("train")
    request = request_training(services.registry, NAME, "drift", "drift in mean_texture (report 1)")
    assert jobs.is_due("train")

    result = jobs.run_if_due("train")
    assert result is not None and result.status == "succeeded", result
    assert result.message.endswith("; caused by drift in mean_texture (report 1)")
    (run,) = services.registry.list_runs(NAME)
    assert (run.trigger, run.cause) == ("drift", "drift in mean_texture (report 1)")
    assert open_request(services.registry, NAME) is None
    assert seen == [("train", result.message)]
    assert request.id is not None


def test_a_request_with_nothing_new_to_train_on_waits_saying_so_once(
    services: Services, project: Project
) -> None:
    run_training(services)  # the newest snapshot has its version
    jobs, seen = scheduler(services)
    trained_just_now(services)
    request_training(services.registry, NAME, "quality", "live quality: ...")
    assert not jobs.is_due("train") and not jobs.is_due("train")
    assert seen == [
        ("train", "training asked for by quality (report None): waiting for a new snapshot")
    ]
    assert jobs.train_if_asked() is None

    drop_batch(project.root, NAME, 2, 2)
    assert run_ingest(project, services.registry, services.store).snapshot
    assert jobs.is_due("train")


def test_the_monitor_job_runs_refit_monitor_and_keeps_quiet_when_nothing_is_logged(
    services: Services,
) -> None:
    jobs, seen = scheduler(services)
    assert jobs.is_due("monitor")
    result = jobs.run_if_due("monitor")
    assert result is not None
    assert (result.status, result.message) == ("skipped", "nothing logged in the window (1h)")
    assert seen == []
    assert not jobs.is_due("monitor")  # every 5 minutes


def monitor_output(status: str, line: str) -> str:
    return json.dumps({"status": status, "line": line, "report": {}, "request": None})


@pytest.mark.parametrize(
    ("status", "expected"),
    [("judged", "succeeded"), ("too_few_rows", "succeeded"), ("nothing_logged", "skipped")],
)
def test_describe_a_monitor_run(status: str, expected: str) -> None:
    assert describe("monitor", 0, monitor_output(status, "one line"), "") == JobResult(
        "monitor", expected, "one line"
    )


def test_a_run_asked_for_by_the_monitor_left_by_a_stopped_scheduler_is_interrupted(
    services: Services,
) -> None:
    snapshot = services.registry.latest_snapshot(NAME)
    assert snapshot is not None
    services.registry.start_run("orphan", NAME, snapshot.id, "drift")  # its scheduler died
    jobs, seen = scheduler(services)
    result = jobs.run_if_due("train")
    assert result is not None and result.status == "succeeded", result
    runs = {run.id: run for run in services.registry.list_runs(NAME)}
    assert runs["orphan"].status == "interrupted"
    assert ("train", "1 run(s) left by a stopped scheduler: interrupted") in seen
