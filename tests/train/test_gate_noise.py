"""Retraining on fresh samples of one distribution: the gate tells noise from improvement.

Each run trains on a new batch of 200 rows drawn from the breast-cancer data with 2% of the
labels flipped (`snapshot: {mode: latest}`: only that batch), so no version is truly better
than another: a gate that compares point values promotes about every other one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from refit.data.ingest import run_ingest
from refit.examples import INCOMING, create_project, example_rows
from refit.project import load_project
from refit.services import open_services
from refit.spec import SPEC_FILE
from refit.train.run import TrainResult, run_training

NAME = "breast-cancer"
RETRAINS = 20


def fresh_batch(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    batch = rows.iloc[rng.choice(len(rows), 200, replace=False)].reset_index(drop=True)
    flip = rng.random(200) < 0.02
    other = {"malignant": "benign", "benign": "malignant"}
    batch.loc[flip, "diagnosis"] = batch.loc[flip, "diagnosis"].map(other)
    return batch


def retrain(root: Path, batch: pd.DataFrame, number: int) -> TrainResult:
    batch.to_csv(root / INCOMING / f"batch-{number:04d}.csv", index=False)
    with open_services(load_project(root)) as services:
        ingested = run_ingest(services.project, services.registry, services.store)
        assert ingested.status == "accepted", ingested.message
        return run_training(services)


def test_twenty_retrains_on_the_same_distribution_promote_at_most_one_after_the_first(
    tmp_path: Path,
) -> None:
    root = create_project(tmp_path / "p", NAME)
    for old in (root / INCOMING).iterdir():
        old.unlink()
    spec = yaml.safe_load((root / SPEC_FILE).read_text("utf-8"))
    spec["data"]["snapshot"] = {"mode": "latest"}
    (root / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False), "utf-8")
    rows = example_rows(NAME)

    results = [retrain(root, fresh_batch(rows, seed), seed) for seed in range(RETRAINS + 1)]

    assert results[0].promoted, results[0].decision.reason
    later = [r.decision for r in results[1:]]
    promoted = [d for d in later if d.promoted]
    assert len(promoted) <= 1, [d.reason for d in promoted]
    # The point values alone would have promoted many of them: the noise is real.
    higher = sum(
        d.candidate_value is not None
        and d.champion_value is not None
        and d.candidate_value > d.champion_value
        for d in later
    )
    assert higher >= 4, higher
    compared = [d for d in later if d.evidence is not None]
    assert len(compared) >= RETRAINS - 5  # the rest fell below the floor
    assert all(30 <= d.evidence["rows"] <= 50 for d in compared if d.evidence)
    # The first decision compared with an interval says once what 40 rows can detect.
    notes = [r.detection_note for r in results[1:] if r.detection_note]
    assert len(notes) == 1 and " rows detect a difference in roc_auc of " in notes[0]


# --- a real margin, with enough rows and with too few -----------------------------------------


def margin_project(root: Path, rows: int) -> Path:
    """Rows where a linear model beats a one-split tree by about 0.07 in accuracy."""
    rng = np.random.default_rng(21)
    X = rng.normal(size=(rows, 4))
    y = (X @ np.array([1.0, 0.4, 0.3, 0.0]) + rng.normal(0, 0.3, rows)) > 0
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"]).assign(label=y)
    (root / "data").mkdir(parents=True)
    frame.to_csv(root / "data" / "rows.csv", index=False)
    spec = {
        "name": "margin",
        "data": {
            "source": {"kind": "csv", "path": "data/rows.csv"},
            "target": "label",
            "features": {name: "float" for name in "abcd"},
        },
        "model": {
            "task": "classification",
            "estimator": "sklearn.tree.DecisionTreeClassifier",
            "params": {"max_depth": 1},
            "metric": "accuracy",
        },
        "gate": {"min_improvement": 0.02},
    }
    (root / SPEC_FILE).write_text(yaml.safe_dump(spec), "utf-8")
    return root


def challenge(root: Path, monkeypatch: pytest.MonkeyPatch) -> TrainResult:
    with open_services(load_project(root)) as services:
        run_ingest(services.project, services.registry, services.store)
        assert run_training(services).promoted  # the tree: the first version
    monkeypatch.setenv("REFIT_MODEL__ESTIMATOR", "sklearn.linear_model.LogisticRegression")
    monkeypatch.setenv("REFIT_MODEL__PARAMS", "{}")
    with open_services(load_project(root)) as services:
        return run_training(services)  # the same snapshot: the same holdout rows


def test_a_real_margin_is_promoted_where_the_holdout_detects_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = challenge(margin_project(tmp_path / "p", 5000), monkeypatch)
    evidence = result.decision.evidence
    assert result.promoted, result.decision.reason
    assert evidence is not None and evidence["test"] == "mcnemar" and evidence["low"] > 0.02
    assert "clearly better by more than 0.02" in result.decision.reason
    assert result.detection_note is None


def test_the_same_margin_on_too_few_rows_is_not_promoted_and_says_what_they_would_need(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = challenge(margin_project(tmp_path / "p", 150), monkeypatch)
    evidence = result.decision.evidence
    assert not result.promoted, result.decision.reason
    assert evidence is not None and evidence["rows"] < 40
    assert evidence["difference"] > 0.02 and evidence["low"] <= 0.02
    assert "not clearly better by more than 0.02: kept production v1" in result.decision.reason
    note = result.detection_note
    assert note is not None and " rows detect a difference in accuracy of " in note
    needed = evidence["detectable"]["needed_rows"]
    assert needed > 40 and f"needs about {needed:,} holdout rows" in note
