"""The tuning step: it finds the setting known to win, on the training rows only, records every
trial with the version, starts from production's best, stops at its budget, and refuses a
search that cannot run before any work."""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from refit.cli import app
from refit.cli._output import run_app
from refit.data.ingest import run_ingest
from refit.errors import SpecError, TrainingError
from refit.examples import create_project
from refit.parquet import read_snapshot
from refit.project import load_project
from refit.services import open_services
from refit.spec import SPEC_FILE, DataSpec, ModelSpec, Sampler, TuneSpec
from refit.train.checks import check_model
from refit.train.run import run_training
from refit.train.split import split
from refit.train.tuning import Progress, Trial, default_tune, trial_line, tune

KNN = "sklearn.neighbors.KNeighborsClassifier"
WINNER = 15
"""The k that wins on `alternating_rows`: 1 follows the noise, 61 spans several stripes."""
CHOICES = [1, 3, WINNER, 31, 61, 121]

DATA = DataSpec.model_validate(
    {"source": {"kind": "csv", "path": "rows.csv"}, "target": "y", "features": {"x": "float"}}
)


def alternating_rows(rows: int = 240, seed: int = 0) -> pd.DataFrame:
    """Stripes of width 1 on [0, 8) alternating between two classes, 20% of labels flipped:
    scored by 3-fold accuracy, k=15 wins by 0.05 over every other k of `CHOICES`."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0, 8, rows))
    odd = np.floor(x).astype(int) % 2 == 1
    flipped = np.where(rng.random(rows) < 0.2, ~odd, odd)
    return pd.DataFrame({"x": x, "y": np.where(flipped, "odd", "even")})


def knn(search: dict[str, Any], **model: Any) -> ModelSpec:
    return ModelSpec.model_validate(
        {"task": "classification", "estimator": KNN, "metric": "accuracy", **model, "tune": search}
    )


def searched(search: dict[str, Any], tmp_path: Path, **kwargs: Any) -> Any:
    return tune(alternating_rows(), DATA, knn(search), tmp_path, **kwargs)


def params_of(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [t["params"] for t in trials]


# --- finding the best ----------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["grid", "random"])
def test_a_grid_and_a_random_search_find_the_k_known_to_win(tmp_path: Path, sampler: str) -> None:
    search = {"params": {"n_neighbors": CHOICES}, "sampler": sampler, "trials": 6, "jobs": 1}
    heard: list[Progress] = []

    tuned = searched(search, tmp_path, on_trial=heard.append)

    assert tuned.best.params == {"n_neighbors": WINNER}
    assert tuned.model_spec.params["n_neighbors"] == WINNER
    record = tuned.record
    assert record["sampler"] == sampler and record["metric"] == "accuracy"
    assert record["folds"] == 3 and record["warm_start"] is False
    assert sorted(p["n_neighbors"] for p in params_of(record["trials"])) == sorted(CHOICES)
    best = record["trials"][record["best"]]
    assert best["params"] == {"n_neighbors": WINNER} and best["state"] == "complete"
    assert all(t["score"] < best["score"] for t in record["trials"] if t is not best)
    assert [t["number"] for t in record["trials"]] == [1, 2, 3, 4, 5, 6]
    assert [p.done for p in heard] == [1, 2, 3, 4, 5, 6] and {p.total for p in heard} == {6}
    assert heard[-1].best is not None and heard[-1].best.params == {"n_neighbors": WINNER}


def test_tpe_searches_with_optuna_and_finds_the_winner(tmp_path: Path) -> None:
    search = {"params": {"n_neighbors": CHOICES}, "sampler": "tpe", "trials": 16, "jobs": 1}

    tuned = searched(search, tmp_path)
    again = searched(search, tmp_path)

    assert tuned.record["sampler"] == "tpe"
    assert tuned.best.params == {"n_neighbors": WINNER}
    assert len(tuned.record["trials"]) == 16
    assert params_of(again.record["trials"]) == params_of(tuned.record["trials"])


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_one_seed_gives_the_same_trials_with_one_job_or_two(tmp_path: Path, sampler: str) -> None:
    space = {"n_neighbors": {"int": [1, 80]}, "weights": ["uniform", "distance"]}
    search = {"params": space, "sampler": sampler, "trials": 10, "seed": 7}

    one = searched({**search, "jobs": 1}, tmp_path)
    two = searched({**search, "jobs": 2}, tmp_path)

    assert params_of(two.record["trials"]) == params_of(one.record["trials"])
    assert [t["score"] for t in two.record["trials"]] == [t["score"] for t in one.record["trials"]]
    assert two.best.params == one.best.params
    other_seed = searched({**search, "jobs": 1, "seed": 8}, tmp_path)
    assert params_of(other_seed.record["trials"]) != params_of(one.record["trials"])


def test_a_grid_walks_int_and_float_ranges(tmp_path: Path) -> None:
    space = {"n_neighbors": {"int": [5, 25], "step": 10}, "p": {"float": [1.0, 2.0], "points": 3}}

    tuned = searched({"params": space, "sampler": "grid", "trials": None, "jobs": 1}, tmp_path)

    assert params_of(tuned.record["trials"]) == [
        {"n_neighbors": k, "p": p} for k in (5, 15, 25) for p in (1.0, 1.5, 2.0)
    ]


# --- warm start ------------------------------------------------------------------------------


def test_the_warm_start_tries_productions_best_first(tmp_path: Path) -> None:
    search = {"params": {"n_neighbors": {"int": [1, 80]}}, "trials": 4, "jobs": 1}

    tuned = searched(search, tmp_path, production_params={"n_neighbors": 31, "p": 2})

    assert tuned.record["warm_start"] is True and tuned.record["warm_start_note"] is None
    assert params_of(tuned.record["trials"])[0] == {"n_neighbors": 31}
    assert len(tuned.record["trials"]) == 4


@pytest.mark.parametrize(
    ("search", "production", "why"),
    [
        ({"n_neighbors": CHOICES}, {"n_neighbors": 7}, "production's n_neighbors=7 is not one of"),
        ({"n_neighbors": {"int": [1, 20]}}, {"n_neighbors": 31}, "lies outside [1, 20]"),
        ({"n_neighbors": CHOICES}, {"p": 2}, "production's parameters do not set n_neighbors"),
        ({"n_neighbors": CHOICES}, None, "no version in production"),
    ],
)
def test_no_warm_start_when_the_space_does_not_hold_productions_best(
    tmp_path: Path, search: dict[str, Any], production: dict[str, Any] | None, why: str
) -> None:
    tuned = searched(
        {"params": search, "trials": 3, "jobs": 1}, tmp_path, production_params=production
    )

    assert tuned.record["warm_start"] is False
    assert why in tuned.record["warm_start_note"]
    if production is not None and "n_neighbors" in production:
        assert production not in params_of(tuned.record["trials"])[:1]


# --- budget and failures ------------------------------------------------------------------


@pytest.fixture
def project_module(tmp_path: Path) -> Iterator[Any]:
    """Writes a module into a project root (default `tmp_path`) and returns its name."""
    names: list[str] = []

    def write(source: str, root: Path = tmp_path, name: str = "") -> str:
        name = name or f"user_tune_{uuid.uuid4().hex[:8]}"
        (root / f"{name}.py").write_text(textwrap.dedent(source), "utf-8")
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


def test_the_timeout_stops_the_search(tmp_path: Path, project_module: Any) -> None:
    module = project_module(
        """
        import time
        from sklearn.neighbors import KNeighborsClassifier

        def fit(X, y, params):
            time.sleep(0.2)
            return KNeighborsClassifier(params["k"]).fit(X, y)
        """
    )
    search = {"params": {"k": {"int": [1, 60]}}, "trials": 1000, "timeout": "1s", "jobs": 1}
    model = ModelSpec.model_validate(
        {"task": "classification", "function": f"{module}:fit", "metric": "accuracy"}
        | {"tune": {**search, "folds": None}}
    )

    tuned = tune(alternating_rows(), DATA, model, tmp_path)

    assert 1 <= len(tuned.record["trials"]) < 20
    assert tuned.model_spec.params == {"k": tuned.best.params["k"]}


def test_a_failed_trial_is_recorded_and_the_search_goes_on(tmp_path: Path) -> None:
    choices = [WINNER, 1000]  # more neighbours than rows: predict fails
    tuned = searched({"params": {"n_neighbors": choices}, "sampler": "grid", "jobs": 1}, tmp_path)

    failed = tuned.record["trials"][1]
    assert failed["params"] == {"n_neighbors": 1000} and failed["score"] is None
    assert failed["state"].startswith("failed: TrainingError: the model's predict failed")
    assert tuned.best.params == {"n_neighbors": WINNER}


def test_every_trial_failing_is_a_training_error_naming_the_first(tmp_path: Path) -> None:
    search = {"params": {"n_neighbors": [500, 1000]}, "sampler": "grid", "jobs": 1}

    with pytest.raises(TrainingError, match=r"every trial failed; the first: failed: .*predict"):
        searched(search, tmp_path)


# --- bad searches ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"k": [1, 3]}, "model.tune.params: KNeighborsClassifier does not accept 'k'"),
        ({"n_neighbors": {"float": [0.0, 1.0], "step": 1e-7}}, "takes 10,000,001 values"),
        ({"n_neighbors": {"int": [1, 10_000_000]}}, "takes 10,000,000 values"),
        ({"p": {"log": [0.1, 10], "step": 0.5}}, "a log range takes no step"),
    ],
)
def test_a_bad_space_is_refused_before_any_work(
    tmp_path: Path, space: dict[str, Any], message: str
) -> None:
    spec = knn({"params": space, "sampler": "grid"})

    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        check_model(_spec(spec), tmp_path)


def test_a_log_range_needs_a_low_above_zero() -> None:
    with pytest.raises(ValueError, match="a log range needs a low above 0, got 0"):
        knn({"params": {"p": {"log": [0, 10]}}})


def test_tpe_without_optuna_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # what `import optuna` meets when absent
    spec = knn({"params": {"n_neighbors": CHOICES}, "sampler": "tpe"})

    with pytest.raises(SpecError, match=r"sampler tpe needs optuna: pip install 'refit\[tune\]'"):
        check_model(_spec(spec), tmp_path)


def _spec(model: ModelSpec) -> Any:
    from refit.spec import Spec

    return Spec.model_validate(
        {"name": "p", "data": DATA.model_dump(mode="json"), "model": model.model_dump(mode="json")}
    )


# --- the default search of a clustering --------------------------------------------------


@pytest.mark.parametrize(
    ("estimator", "name"),
    [
        ("sklearn.cluster.KMeans", "n_clusters"),
        ("sklearn.cluster.MiniBatchKMeans", "n_clusters"),
        ("sklearn.cluster.Birch", "n_clusters"),
        ("sklearn.cluster.AgglomerativeClustering", "n_clusters"),
        ("sklearn.mixture.GaussianMixture", "n_components"),
    ],
)
def test_a_clustering_without_tune_searches_k_from_2_to_10(estimator: str, name: str) -> None:
    model = ModelSpec.model_validate({"task": "clustering", "estimator": estimator})

    search = default_tune(model)

    assert isinstance(search, TuneSpec)
    assert search.sampler is Sampler.GRID and search.folds is None and search.trials is None
    assert list(search.params) == [name]
    assert search.params[name].kind == "int"
    assert (search.params[name].low, search.params[name].high) == (2, 10)


@pytest.mark.parametrize(
    "model",
    [
        {"task": "clustering", "estimator": "sklearn.cluster.KMeans", "params": {"n_clusters": 4}},
        {"task": "clustering", "estimator": "sklearn.cluster.DBSCAN"},
        {"task": "classification", "estimator": KNN},
        {
            "task": "clustering",
            "estimator": "sklearn.cluster.KMeans",
            "tune": {"params": {"n_clusters": [3, 4]}},
        },
    ],
)
def test_no_default_search_when_k_is_set_or_not_taken(model: dict[str, Any]) -> None:
    assert default_tune(ModelSpec.model_validate(model)) is None


# --- the trial line ------------------------------------------------------------------------


def test_a_trial_is_one_line() -> None:
    trial = Trial(3, {"n_neighbors": 7}, 0.94123, 0.2104, "complete")
    failed = Trial(4, {"n_neighbors": 0}, None, 0.01, "failed: ValueError: no")

    assert (
        trial_line(Progress(trial, 3, 20, trial, "roc_auc"))
        == "trial 3/20 n_neighbors=7 roc_auc=0.9412 (0.21 s)"
    )
    assert (
        trial_line(Progress(failed, 4, None, trial, "roc_auc"))
        == "trial 4 n_neighbors=0 failed: ValueError: no (0.01 s)"
    )


# --- in a training run ----------------------------------------------------------------------


def tuned_project(root: Path, example: str, model: dict[str, Any]) -> Path:
    create_project(root, example)
    spec = yaml.safe_load((root / SPEC_FILE).read_text())
    spec["model"].update(model)
    (root / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
    with open_services(load_project(root)) as services:
        assert run_ingest(services.project, services.registry, services.store).status == "accepted"
    return root


def test_tuning_never_sees_the_holdout(tmp_path: Path, project_module: Any) -> None:
    log = tmp_path / "rows.jsonl"
    module = f"user_tune_{uuid.uuid4().hex[:8]}"
    model = {
        "estimator": None,
        "function": f"{module}:fit",
        "params": {"log": str(log)},
        "tune": {"params": {"k": [3, 9]}, "sampler": "grid", "jobs": 1},
    }
    root = tuned_project(tmp_path / "p", "breast-cancer", model)
    project_module(
        """
        import json
        from sklearn.neighbors import KNeighborsClassifier

        class Recorded:
            def __init__(self, model, log):
                self.model, self.log = model, log
                self.classes_ = model.classes_

            def _record(self, X, what):
                with open(self.log, "a") as f:
                    f.write(json.dumps([what, X["mean_radius"].tolist()]) + "\\n")

            def predict(self, X):
                self._record(X, "predict")
                return self.model.predict(X)

            def predict_proba(self, X):
                self._record(X, "predict")
                return self.model.predict_proba(X)

        def fit(X, y, params):
            with open(params["log"], "a") as f:
                f.write(json.dumps(["fit", X["mean_radius"].tolist(), params["k"]]) + "\\n")
            return Recorded(KNeighborsClassifier(params["k"]).fit(X, y), params["log"])
        """,
        root,
        module,
    )
    steps: list[str] = []

    def step(text: str) -> None:
        steps.append(text)
        with open(log, "a") as f:
            f.write(json.dumps(["step", text]) + "\n")

    with open_services(load_project(root)) as services:
        result = run_training(services, on_step=step)
        spec = services.project.spec
        snapshot = services.registry.get_snapshot(result.version.snapshot_id, spec.name)
        parts = split(read_snapshot(services.store, snapshot), spec.data, spec.model)

    events = [json.loads(line) for line in log.read_text().splitlines()]
    refit_at = next(i for i, e in enumerate(events) if e[0] == "step" and "fitting on" in e[1])
    tuning = [e for e in events[:refit_at] if e[0] in ("fit", "predict")]
    train, held = set(parts.train["mean_radius"]), set(parts.holdout["mean_radius"])
    assert held - train, "the holdout must hold rows the training part does not"
    seen = [set(e[1]) for e in tuning]
    assert len(tuning) == 2 * 3 * 2  # 2 settings, 3 folds, fitted then scored
    assert all(rows <= train and not rows & (held - train) for rows in seen)
    assert {e[2] for e in tuning if e[0] == "fit"} == {3, 9}
    assert result.version.tuning is not None
    assert result.version.params["k"] in (3, 9) and result.version.params["log"] == str(log)
    assert any(line.startswith("trial 2/2 k=9 ") for line in steps)


def test_trials_are_recorded_with_the_version_and_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    search = {"params": {"n_neighbors": {"int": [1, 40]}}, "trials": 12, "jobs": 1, "folds": 2}
    root = tuned_project(
        tmp_path / "p", "breast-cancer", {"estimator": KNN, "params": {}, "tune": search}
    )
    p = str(root)

    assert run_app(app, ["train", "-p", p]) == 0
    trained = capsys.readouterr()
    assert "trial 1/12 n_neighbors=" in trained.err and "trial 12/12 " in trained.err
    assert run_app(app, ["train", "-p", p, "--json"]) == 0  # v2, warm-started from v1
    capsys.readouterr()
    assert run_app(app, ["models", "show", "2", "-p", p]) == 0
    shown = capsys.readouterr().out
    assert run_app(app, ["models", "show", "2", "-p", p, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)

    with open_services(load_project(root)) as services:
        v1, v2 = (services.registry.get_version("breast-cancer", v) for v in (1, 2))
    assert v1.tuning is not None and v2.tuning is not None
    best1 = v1.tuning["trials"][v1.tuning["best"]]
    assert v1.params["n_neighbors"] == best1["params"]["n_neighbors"]
    assert v2.tuning["warm_start"] is True
    assert v2.tuning["trials"][0]["params"] == best1["params"]
    assert data["tuning"] == v2.tuning and len(data["tuning"]["trials"]) == 12

    lines = shown.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("tuning    random, 12 trials"))
    listed = lines[at + 1 : at + 11]
    best2 = v2.tuning["trials"][v2.tuning["best"]]
    assert listed[0].startswith(f"  * #{best2['number']} ")
    assert (
        f"n_neighbors={best2['params']['n_neighbors']}  roc_auc {best2['score']:.4f}" in listed[0]
    )
    scores = [float(line.split("roc_auc ")[1].split()[0]) for line in listed]
    assert scores == sorted(scores, reverse=True)
    assert not any(line.startswith("  * ") for line in listed[1:])
    assert lines[at + 11].strip() == "... 2 more (--json lists every trial)"


def test_a_version_without_tuning_shows_no_trials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tuned_project(tmp_path / "p", "breast-cancer", {})
    assert run_app(app, ["train", "-p", str(root), "--json"]) == 0
    capsys.readouterr()
    assert run_app(app, ["models", "show", "1", "-p", str(root)]) == 0
    assert "tuning" not in capsys.readouterr().out


def test_a_tuned_nearest_neighbours_regressor_converts_to_onnx(tmp_path: Path) -> None:
    search = {"params": {"n_neighbors": [2, 8, 30]}, "sampler": "grid", "jobs": 1}
    model = {"estimator": "sklearn.neighbors.KNeighborsRegressor", "params": {}, "tune": search}
    root = tuned_project(tmp_path / "p", "diabetes", model)

    with open_services(load_project(root)) as services:
        version = run_training(services).version

    assert version.tuning is not None and len(version.tuning["trials"]) == 3
    assert version.params["n_neighbors"] in (2, 8, 30)
    assert version.onnx is not None and version.onnx["status"] == "ok"
