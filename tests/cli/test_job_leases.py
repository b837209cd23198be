"""`refit ingest` and `refit train` run under the project's job leases, as the scheduler's
jobs do: a run by hand (or a CronJob) while another holds the lease does nothing and exits 4."""

from __future__ import annotations

from pathlib import Path

import pytest

from refit.cli import app
from refit.cli._output import run_app
from refit.examples import create_project
from refit.project import load_project
from refit.registry.jobs import acquire_lease, job_lease, lease_holder
from refit.services import open_services


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return create_project(tmp_path / "p", "breast-cancer")


@pytest.mark.parametrize("job", ["ingest", "train"])
def test_a_job_whose_lease_another_holds_does_nothing_and_exits_4(
    project: Path, job: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_services(load_project(project)) as services:
        name = services.project.spec.name
        assert acquire_lease(services.registry, job_lease(name, job), "elsewhere:1:abc", 60)
        assert run_app(app, [job, "-p", str(project)]) == 4
        said = capsys.readouterr().err
        assert "running elsewhere now (lease held by elsewhere:1:abc)" in said
        assert "not promoted" not in said
        assert services.registry.list_snapshots(name) == []
        assert services.registry.list_runs(name) == []


def test_a_job_releases_its_lease_and_runs_under_a_schedulers(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_services(load_project(project)) as services:
        name = services.project.spec.name
        lease = job_lease(name, "ingest")
        assert run_app(app, ["ingest", "-p", str(project)]) == 0
        assert lease_holder(services.registry, lease) is None  # released at the end
        assert len(services.registry.list_snapshots(name)) == 1

        # A scheduler's child runs under the lease its parent holds, and leaves it held.
        assert acquire_lease(services.registry, lease, "scheduler:2:def", 60)
        args = ["ingest", "-p", str(project), "--under-lease", "scheduler:2:def"]
        assert run_app(app, args) == 0
        assert lease_holder(services.registry, lease) == "scheduler:2:def"
        # ... and refuses to run under a lease its parent does not hold.
        args[-1] = "gone:3:xyz"
        assert run_app(app, args) == 4
