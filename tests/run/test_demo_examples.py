"""`refit demo --example NAME` and `refit feed --example NAME`: every bundled example runs the
demo, its own rows fed and asked for; the breast-cancer example stays the default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from refit.cli import app
from refit.cli._output import USAGE, run_app
from refit.data.ingest import run_ingest
from refit.examples import EXAMPLES, example_rows, find_example
from refit.project import load_project
from refit.registry import PRODUCTION
from refit.run.demo import Feed, create_demo_project
from refit.services import open_services
from servers import free_port


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_every_example_makes_a_demo_whose_feed_and_requests_fit_its_schema(
    tmp_path: Path, example: str
) -> None:
    root = create_demo_project(tmp_path / "demo", example=example, monitor="4s")
    spec = load_project(root).spec
    chosen = find_example(example)
    assert spec.name == chosen.spec["name"]
    gate: dict[str, object] = chosen.demo_gate or chosen.spec["gate"]  # type: ignore[assignment]
    assert {key: getattr(spec.gate, key) for key in gate} == gate
    feed = Feed.into_project(root, example=example, rows=30)
    for _ in range(2):
        feed.drop()
    with open_services(load_project(root)) as services:
        ingested = run_ingest(services.project, services.registry, services.store)
    assert ingested.status == "accepted", ingested.message
    assert ingested.batch is not None and ingested.batch.rows_rejected == 0
    asked = pd.DataFrame(feed.requests(5))
    assert sorted(asked.columns) == sorted(spec.data.features)


def test_an_example_without_drift_is_fed_its_own_rows(tmp_path: Path) -> None:
    assert find_example("diabetes").drift is None
    feed = Feed(tmp_path / "incoming", example="diabetes")
    batch = feed.batch(7)
    rows = example_rows("diabetes")
    assert list(batch.columns) == list(rows.columns) and len(batch) == 80
    assert (
        batch.merge(rows.drop_duplicates(), how="left", indicator=True)["_merge"].eq("both").all()
    ), "every row fed is a row of the dataset, as it is"


def test_the_default_demo_stays_the_drifting_breast_cancer_example(tmp_path: Path) -> None:
    feed = Feed(tmp_path / "incoming")
    assert "diagnosis" in feed.batch(1).columns
    spec = load_project(create_demo_project(tmp_path / "demo")).spec
    assert spec.name == "breast-cancer" and spec.gate.min == 0.85


def test_an_unknown_example_is_a_usage_error_naming_the_examples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "demo"
    assert run_app(app, ["demo", str(folder), "--example", "iris"]) == USAGE
    printed = capsys.readouterr().err
    assert "Invalid value for '--example': no example 'iris'; the examples are: " in printed
    assert ", ".join(EXAMPLES) in printed
    assert not folder.exists()
    assert run_app(app, ["feed", str(folder), "--example", "iris"]) == USAGE
    assert not folder.exists()


def test_a_demo_folder_runs_its_own_example_and_refuses_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = create_demo_project(tmp_path / "demo", example="diabetes")
    assert run_app(app, ["demo", str(folder), "--example", "breast-cancer"]) == USAGE
    printed = capsys.readouterr().err
    assert "Invalid value for '--example': the folder holds the diabetes demo already; " in printed
    assert "give a new folder for breast-cancer" in printed


def test_feed_drops_the_rows_of_the_example_it_is_given(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "refit", "feed", str(tmp_path / "in"), "--interval", "0.05"]
    args += ["--batches", "1", "--rows", "12", "--example", "diabetes"]
    done = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    batch = pd.read_csv(tmp_path / "in" / "feed-0001.csv")
    assert list(batch.columns) == list(example_rows("diabetes").columns) and len(batch) == 12


@pytest.mark.slow
def test_the_demo_of_another_example_turns_the_loop_and_serves_it(tmp_path: Path) -> None:
    project = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFIT_")}
    env.update(OMP_NUM_THREADS="1", REFIT_SERVE__POLL_INTERVAL="0.5")
    env.update(REFIT_SCHEDULE__METRICS_PORT=str(free_port()))
    args = [sys.executable, "-m", "refit", "demo", str(project), "--example", "diabetes"]
    args += ["--cycles", "2", "--workers", "1", "--port", str(free_port())]
    args += ["--feed-interval", "1.5", "--ingest", "2s", "--train", "3s", "--monitor", "3s"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "refit demo: diabetes in " in output
    assert "trained diabetes v1 on snapshot " in output
    assert "POST /predict with request.json -> " in output
    assert any(" monitor " in line for line in output.splitlines()), output
    assert "refit demo: 2 training cycles done, serving production v" in output
    with open_services(load_project(project)) as services:
        registry = services.registry
        production = registry.alias_version("diabetes", PRODUCTION)
        feeds = [p.name for p in (project / "data" / "incoming").glob("feed-*.csv")]
    assert production is not None and f"serving production v{production}" in output
    assert feeds, "the feed dropped batches of diabetes rows"
