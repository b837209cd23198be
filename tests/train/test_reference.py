"""Each version keeps its holdout reference: what it answered there, for the monitor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from refit.data.ingest import run_ingest
from refit.examples import create_project
from refit.parquet import read_snapshot
from refit.prediction_logs import label_text
from refit.project import load_project
from refit.services import open_services
from refit.spec import Task
from refit.train.pipeline import target_array
from refit.train.reference import holdout_reference
from refit.train.run import run_training
from refit.train.split import split


@pytest.mark.parametrize("example", ["breast-cancer", "diabetes"])
def test_a_trained_version_stores_its_holdout_answers(tmp_path: Path, example: str) -> None:
    root = create_project(tmp_path / "p", example)
    with open_services(load_project(root)) as services:
        assert run_ingest(services.project, services.registry, services.store).snapshot
        result = run_training(services)
        row = services.registry.get_version(services.project.spec.name, result.version.version)
        spec = services.project.spec
        snapshot = services.registry.get_snapshot(row.snapshot_id, spec.name)
        parts = split(read_snapshot(services.store, snapshot), spec.data, spec.model)
    reference = row.reference
    assert reference is not None
    holdout = target_array(parts.holdout, spec.data)
    assert len(reference["labels"]) == len(reference["predictions"]) == len(holdout)
    assert [label_text(v) for v in reference["labels"]] == [label_text(v) for v in holdout]
    if example == "diabetes":
        assert "scores" not in reference and "classes" not in reference
        mae = np.mean(np.abs(np.subtract(reference["labels"], reference["predictions"])))
        assert mae == pytest.approx(row.metrics["mae"], rel=1e-6)
        return
    assert reference["classes"] == ["benign", "malignant"]
    scores = np.asarray(reference["scores"])
    assert scores.shape == (len(holdout), 2)
    assert np.allclose(scores.sum(axis=1), 1, atol=1e-5)
    best = np.asarray(reference["classes"], dtype=object)[scores.argmax(axis=1)]
    assert list(best) == reference["predictions"]
    accuracy = np.mean(np.asarray(reference["labels"]) == np.asarray(reference["predictions"]))
    assert accuracy == pytest.approx(row.metrics["accuracy"])


def test_a_large_holdout_is_sampled_evenly_to_the_row_limit() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1_000, 3))
    y = np.where(X[:, 0] > 0, 1, 0)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    model = LogisticRegression().fit(frame, y)
    reference = holdout_reference(model, frame, y, Task.CLASSIFICATION, rows=100)
    assert len(reference["labels"]) == len(reference["scores"]) == 100
    assert reference["labels"][0] == y[0] and reference["labels"][-1] == y[-1]
    assert reference["classes"] == [0, 1]
    assert all(isinstance(v, int) for v in reference["labels"] + reference["predictions"])
