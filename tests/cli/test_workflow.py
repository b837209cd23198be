"""The batch half of the loop through the `refit` command: init, ingest, train, models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from refit.cli import app
from refit.cli._output import run_app
from refit.errors import AlreadyExistsError
from refit.examples import example_rows
from refit.project import load_project
from refit.services import open_services
from servers import S3Location


def refit(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> str:
    """Run `refit ARGS` in process; return its stdout, checking the exit code."""
    capsys.readouterr()
    got = run_app(app, list(args))
    captured = capsys.readouterr()
    assert got == code, f"refit {' '.join(args)} exited {got}: {captured.err}"
    return captured.out


def refit_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    return json.loads(refit(capsys, *args, "--json"))


def add_batch(project: Path, name: str, start: int, stop: int) -> None:
    rows = example_rows("breast-cancer").iloc[start:stop]
    rows.to_csv(project / "data" / "incoming" / name, index=False)


def run_loop_twice(capsys: pytest.CaptureFixture[str], project: Path) -> list[dict[str, Any]]:
    p = str(project)
    first = refit_json(capsys, "ingest", "-p", p)
    assert first["status"] == "accepted"
    trained = refit_json(capsys, "train", "-p", p)
    assert trained["version"]["version"] == 1
    assert trained["decision"]["promoted"] is True
    assert trained["version"]["aliases"] == ["production"]

    add_batch(project, "batch-0002.csv", 341, 569)
    second = refit_json(capsys, "ingest", "-p", p)
    assert second["status"] == "accepted"
    assert second["snapshot"]["parent_id"] == first["snapshot"]["id"]
    assert second["snapshot"]["row_count"] == 569
    retrained = refit_json(capsys, "train", "-p", p)
    assert retrained["version"]["version"] == 2
    decision = retrained["decision"]
    assert decision["previous_version"] == 1
    assert decision["candidate_value"] is not None and decision["champion_value"] is not None
    assert decision["reason"]

    versions: list[dict[str, Any]] = refit_json(capsys, "models", "list", "-p", p)
    assert [v["version"] for v in versions] == [2, 1]
    assert [v["snapshot_id"] for v in versions] == [
        second["snapshot"]["id"],
        first["snapshot"]["id"],
    ]
    assert all("roc_auc" in v["metrics"] and "accuracy" in v["metrics"] for v in versions)
    decisions = refit_json(capsys, "models", "decisions", "-p", p)
    assert [d["candidate_version"] for d in decisions] == [2, 1]
    return versions


def test_the_loop_on_embedded_defaults(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    project = tmp_path / "demo"
    refit(capsys, "init", str(project), "--example", "breast-cancer")
    run_loop_twice(capsys, project)
    assert (project / ".refit" / "refit.db").is_file()
    assert any((project / ".refit" / "artifacts" / "models").rglob("*.joblib"))
    # Nothing new: no snapshot, no error.
    assert refit_json(capsys, "ingest", "-p", str(project))["status"] == "empty"


def test_the_loop_on_postgres_and_s3(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres_url: str,
    s3_storage: S3Location,
) -> None:
    project = tmp_path / "demo"
    refit(capsys, "init", str(project), "--example", "breast-cancer")
    monkeypatch.setenv("REFIT_STORAGE__METADATA_URL", postgres_url)
    monkeypatch.setenv("REFIT_STORAGE__ARTIFACTS_URL", s3_storage.url)
    monkeypatch.setenv("REFIT_STORAGE__S3__ENDPOINT_URL", s3_storage.endpoint_url)
    monkeypatch.setenv("REFIT_STORAGE__S3__ACCESS_KEY_ID", s3_storage.key)
    monkeypatch.setenv("REFIT_STORAGE__S3__SECRET_ACCESS_KEY", s3_storage.secret)
    monkeypatch.setenv("REFIT_STORAGE__S3__REGION", s3_storage.region)
    versions = run_loop_twice(capsys, project)
    assert all(v["artifact_uri"].startswith("models/") for v in versions)
    assert not (project / ".refit").exists(), "nothing may be written to the embedded defaults"


def test_manual_promote_and_rollback(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    project = tmp_path / "demo"
    p = str(project)
    refit(capsys, "init", p, "--example", "breast-cancer")
    run_loop_twice(capsys, project)
    before = refit_json(capsys, "models", "show", "1", "-p", p)["aliases"]
    assert before == ["production"] or refit_json(capsys, "models", "show", "2", "-p", p)[
        "aliases"
    ] == ["production"]
    production = 1 if before == ["production"] else 2
    other = 3 - production
    promoted = refit_json(capsys, "models", "promote", str(other), "-p", p)
    assert (promoted["action"], promoted["candidate_version"]) == ("promote", other)
    assert refit_json(capsys, "models", "show", str(other), "-p", p)["aliases"] == ["production"]
    rolled = refit_json(capsys, "models", "rollback", "-p", p)
    assert (rolled["action"], rolled["candidate_version"]) == ("rollback", production)
    again = refit(capsys, "models", "promote", str(production), "-p", p)
    assert (
        again.strip() == f"breast-cancer v{production} already holds production: nothing to change"
    )
    unchanged = refit_json(capsys, "models", "promote", str(production), "-p", p)
    assert (unchanged["version"], unchanged["changed"]) == (production, False)
    assert [d["action"] for d in refit_json(capsys, "models", "decisions", "-p", p)][:2] == [
        "rollback",
        "promote",
    ], "nothing was recorded for a promotion that changed nothing"
    refit(capsys, "models", "promote", "9", "-p", p, code=3)


def test_register_a_model_trained_elsewhere(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    project = tmp_path / "demo"
    p = str(project)
    refit(capsys, "init", p, "--example", "breast-cancer")
    refit(capsys, "ingest", "-p", p)
    trained = refit_json(capsys, "train", "-p", p)["version"]
    # The ONNX file refit made of v1 stands for a model exported by another tool.
    onnx_file = project / "exported.onnx"
    onnx_file.write_bytes((project / ".refit" / "artifacts" / trained["onnx"]["uri"]).read_bytes())
    registered = refit_json(
        capsys, "models", "register", str(onnx_file), "--classes", "benign,malignant", "-p", p
    )
    version = registered["version"]
    assert (version["version"], version["flavor"], version["format"]) == (2, "onnx", "onnx")
    assert version["params"] == {"file": "exported.onnx"}
    assert version["metrics"]["roc_auc"] == pytest.approx(trained["metrics"]["roc_auc"], abs=1e-6)
    assert registered["decision"]["previous_version"] == 1
    shown = refit(capsys, "models", "show", "2", "-p", p)
    assert "onnx      the model is ONNX" in shown
    capsys.readouterr()
    assert run_app(app, ["models", "register", str(onnx_file), "--classes", "a,b", "-p", p]) == 6
    assert "--classes a,b should name each of the data's classes once" in capsys.readouterr().err


def test_errors_are_one_paragraph_and_an_exit_code(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run_app(app, ["ingest", "-p", str(tmp_path)]) == 2
    assert "No refit.yaml" in capsys.readouterr().err
    (tmp_path / "refit.yaml").write_text("name: x\ndata: {target: 1}\nmodel: {task: magic}\n")
    assert run_app(app, ["train", "-p", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "data.source: required field is missing" in err
    assert "model.task: got 'magic'" in err
    assert "Traceback" not in err


def test_train_before_any_snapshot_says_what_to_do(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    project = tmp_path / "demo"
    refit(capsys, "init", str(project), "--example", "diabetes")
    assert run_app(app, ["train", "-p", str(project)]) == 3
    assert "run `refit ingest` first" in capsys.readouterr().err


def test_snapshots_list_and_show(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    project = tmp_path / "demo"
    p = str(project)
    refit(capsys, "init", p, "--example", "diabetes")
    snap = refit_json(capsys, "ingest", "-p", p)["snapshot"]
    listed = refit_json(capsys, "snapshots", "list", "-p", p)
    assert [s["id"] for s in listed] == [snap["id"]]
    shown = refit_json(capsys, "snapshots", "show", snap["id"][:8], "-p", p)
    assert shown["stats"]["bmi"]["count"] == snap["row_count"]
    assert "frequencies" in shown["stats"]["sex"]
    table = refit(capsys, "snapshots", "show", snap["id"][:8], "-p", p)
    assert "bmi" in table and "progression" in table


def test_init_refuses_a_used_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    refit(capsys, "init", str(tmp_path / "a"), "--example", "diabetes")
    assert run_app(app, ["init", str(tmp_path / "a")]) == AlreadyExistsError.exit_code == 9
    assert "already holds a refit project" in capsys.readouterr().err
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    assert run_app(app, ["init", str(tmp_path / "c"), "--example", "diabetes"]) == 9
    assert "is not empty; give a new or empty folder" in capsys.readouterr().err
    assert list((tmp_path / "c").iterdir()) == [tmp_path / "c" / "notes.txt"]


def test_init_with_an_unknown_example_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run_app(app, ["init", str(tmp_path / "b"), "--example", "nope"]) == 2
    err = capsys.readouterr().err
    assert "Usage: refit init" in err
    assert "Invalid value for '--example': no example 'nope'; the examples are: " in err
    assert "breast-cancer, diabetes" in err
    assert not (tmp_path / "b").exists()


def test_blank_project_is_a_valid_spec(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from refit.project import load_project

    refit(capsys, "init", str(tmp_path / "mine"))
    assert load_project(tmp_path / "mine").spec.name == "mine"


@pytest.mark.slow
def test_the_refit_command_runs_as_a_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFIT_")}
    refit_bin = Path(sys.executable).with_name("refit")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(refit_bin), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert run("init", "demo", "--example", "breast-cancer").returncode == 0
    assert run("ingest", "-p", "demo").returncode == 0
    trained = run("train", "-p", "demo")
    assert trained.returncode == 0, trained.stderr
    assert "breast-cancer v1" in trained.stdout and "promoted to production" in trained.stdout
    module = subprocess.run(
        [sys.executable, "-m", "refit", "models", "list", "-p", "demo", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(module.stdout)[0]["aliases"] == ["production"]


def test_status_shows_production_runs_decisions_and_next_times(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    project = tmp_path / "demo"
    p = str(project)
    refit(capsys, "init", p, "--example", "breast-cancer")
    refit(capsys, "status", "-p", p, code=8)  # no registry until something writes one
    open_services(load_project(project)).close()  # an empty one
    before = refit_json(capsys, "status", "-p", p)
    assert before["production"] is None and before["runs"] == [] and before["decisions"] == []
    assert [j["job"] for j in before["jobs"]] == ["ingest", "train"]
    assert all(j["last_started_at"] is None and j["next_at"] for j in before["jobs"])
    run_loop_twice(capsys, project)
    after = refit_json(capsys, "status", "-p", p)
    production = after["production"]["version"]
    assert production in (1, 2)
    assert [r["version"] for r in after["runs"]] == [2, 1]
    assert [d["candidate_version"] for d in after["decisions"]] == [2, 1]
    assert after["latest_snapshot"] == after["runs"][0]["snapshot_id"]
    table = refit(capsys, "status", "-p", p)
    assert f"breast-cancer@production: v{production}" in table
    assert "last training runs" in table and "jobs" in table
