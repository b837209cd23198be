"""`refit monitor`, `refit drift` and the monitor's line in `refit status`, in process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from logged import log_feedback, log_predictions, predict
from refit.cli import app
from refit.cli._output import run_app
from refit.data.ingest import run_ingest
from refit.examples import create_project, drop_batch
from refit.parquet import read_snapshot
from refit.project import load_project
from refit.registry.jobs import acquire_lease, job_lease
from refit.registry.monitoring import open_request
from refit.services import Services, open_services
from refit.train.run import run_training

NAME = "breast-cancer"


def refit(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> tuple[str, str]:
    capsys.readouterr()
    got = run_app(app, list(args))
    captured = capsys.readouterr()
    assert got == code, f"refit {' '.join(args)} exited {got}: {captured.err}"
    return captured.out, captured.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = create_project(tmp_path_factory.mktemp("cli") / "p", NAME)
    with open_services(load_project(root)) as services:
        assert run_ingest(services.project, services.registry, services.store).snapshot
        run_training(services)
    return root


@pytest.fixture
def root(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "p"))


def log_shifted(root: Path, n: int = 400) -> Services:
    """Log `n` predictions of v1 with mean_texture shifted far from its training data."""
    services = open_services(load_project(root))
    version = services.registry.get_version(NAME, 1)
    snapshot = services.registry.get_snapshot(version.snapshot_id, NAME)
    rows = read_snapshot(services.store, snapshot).sample(n, replace=True, random_state=0)
    rows = rows.reset_index(drop=True)
    rows["mean_texture"] = rows["mean_texture"] * 1.8
    ids = log_predictions(services, version, rows)
    labels, _ = predict(services, version, rows)
    log_feedback(services, ids[:50], labels[:50])
    return services


def retrain_on_drift(root: Path) -> None:
    spec = (root / "refit.yaml").read_text()
    (root / "refit.yaml").write_text(spec + "monitor:\n  retrain_on_drift: true\n")


def test_refit_drift_before_any_report_says_so_and_exits_0(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = refit(capsys, "drift", "-p", str(root))
    assert out.startswith(f"{NAME}: no monitor report yet: `refit monitor` makes one")
    assert json.loads(refit(capsys, "drift", "-p", str(root), "--json")[0]) is None


def test_refit_monitor_with_nothing_logged_says_why(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = refit(capsys, "monitor", "-p", str(root))
    assert "nothing logged in the window (1h)" in out
    assert "the servers have logged no predictions yet" in out


def test_monitor_then_drift_show_the_flagged_feature_first(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    retrain_on_drift(root)
    log_shifted(root).close()
    data: dict[str, Any] = json.loads(refit(capsys, "monitor", "-p", str(root), "--json")[0])
    assert data["status"] == "judged" and "mean_texture" in data["report"]["drifted"]
    assert data["request"]["trigger"] == "drift"
    assert data["line"].endswith(f"; asked for training by drift (report {data['report']['id']})")

    out, _ = refit(capsys, "drift", "-p", str(root))
    lines = out.splitlines()
    assert lines[0].startswith(f"report {data['report']['id']} of ")
    # The feedback agrees with every prediction.
    assert "drift in" in lines[0] and "live roc_auc 1.0000 on 50 labelled rows" in lines[0]
    assert lines[1].startswith("asked for training: drift in")
    table = lines[lines.index("drift of v1 (the version that served the newest rows)") + 2 :]
    first = table[0].split()
    assert first[2] == "DRIFT" and ("mean_texture" in first or first[0] == "prediction")
    assert any(line.split()[:3] == ["mean_texture", "numeric", "DRIFT"] for line in table)
    assert any(line.startswith("  mean_texture: ") for line in table)  # its reasons
    assert "quality" in lines and any(line.split()[0] == "v1" for line in lines)

    report = json.loads(refit(capsys, "drift", "-p", str(root), "--json")[0])
    assert report["id"] == data["report"]["id"] and report["drifted"] == data["report"]["drifted"]

    status, _ = refit(capsys, "status", "-p", str(root))
    assert f"monitor: report {report['id']} of " in status
    assert "drift: " + ", ".join(report["drifted"]) in status


def test_monitor_train_runs_the_asked_for_training_on_a_new_snapshot(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    retrain_on_drift(root)
    log_shifted(root).close()
    out, _ = refit(capsys, "monitor", "-p", str(root), "--train")
    assert "train: asked for, waiting for a new snapshot" in out  # v1's snapshot is trained

    drop_batch(root, NAME, 2, 2)
    refit(capsys, "ingest", "-p", str(root))
    data = json.loads(refit(capsys, "monitor", "-p", str(root), "--train", "--json")[0])
    assert data["trained"]["status"] == "succeeded", data["trained"]
    assert "caused by drift in" in data["trained"]["message"]
    with open_services(load_project(root)) as services:
        run = services.registry.list_runs(NAME, limit=1)[0]
        assert run.trigger == "drift" and run.cause == data["request"]["cause"]
        assert open_request(services.registry, NAME) is None


def test_a_monitor_run_elsewhere_holds_the_lease_exit_4(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_services(load_project(root)) as services:
        assert acquire_lease(services.registry, job_lease(NAME, "monitor"), "other:1:x", 60)
    _, err = refit(capsys, "monitor", "-p", str(root), code=4)
    assert "is running elsewhere now" in err
