"""Changing the spec's features, end to end through `refit ingest` and `refit train`.

The source files are deleted once ingested: a rebuilt snapshot can only come from the rows
ingest kept of each batch, not from reading the files again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from refit.cli import app
from refit.cli._output import run_app
from refit.spec import SPEC_FILE

FEATURES: dict[str, Any] = {"a": "float", "b": "float", "kind": "category", "score": "int"}


def refit(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> str:
    """Run `refit ARGS` in process; return its stdout (and stderr when it fails)."""
    capsys.readouterr()
    got = run_app(app, list(args))
    captured = capsys.readouterr()
    assert got == code, f"refit {' '.join(args)} exited {got}: {captured.err}"
    return captured.out if code == 0 else captured.err


def refit_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    return json.loads(refit(capsys, *args, "--json"))


def rows(seed: int, n: int = 120) -> pd.DataFrame:
    random = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "a": random.normal(size=n).round(4),
            "b": random.normal(size=n).round(4),
            "kind": random.choice(["x", "y", "z"], size=n),
            "score": random.integers(0, 10, size=n),
            "note": random.choice(["kept", "as", "read"], size=n),
        }
    )
    signal = frame["a"] + (frame["kind"] == "x") + frame["score"] / 10
    frame["label"] = np.where(signal > 0.5, "yes", "no")
    return frame


def write_spec(root: Path, features: dict[str, Any], **data: Any) -> None:
    spec = {
        "name": "shop",
        "data": {
            "source": {"kind": "csv", "path": "incoming"},
            "target": "label",
            "features": features,
            **data,
        },
        "model": {"task": "classification", "estimator": "sklearn.linear_model.LogisticRegression"},
    }
    (root / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False), "utf-8")


def signature_inputs(version: dict[str, Any]) -> list[str]:
    return [field["name"] for field in version["signature"]["inputs"]]


@pytest.fixture
def trained(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    """A project with two batches ingested (their files since deleted) and v1 trained on
    features a, b, kind and score."""
    root = tmp_path / "shop"
    (root / "incoming").mkdir(parents=True)
    write_spec(root, FEATURES)
    for number in (1, 2):
        path = root / "incoming" / f"batch-{number}.csv"
        rows(number).to_csv(path, index=False)
        assert refit_json(capsys, "ingest", "-p", str(root))["status"] == "accepted"
        path.unlink()
    assert refit_json(capsys, "train", "-p", str(root))["version"]["version"] == 1
    return root


@pytest.mark.parametrize(
    ("features", "change", "dtype"),
    [
        ({**FEATURES, "note": "category"}, "added: note", "str"),
        ({k: v for k, v in FEATURES.items() if k != "b"}, "removed: b", None),
        ({**FEATURES, "score": "category"}, "retyped: score (Int64 -> str)", "str"),
        ({**FEATURES, "score": "float"}, "retyped: score (Int64 -> float64)", "float64"),
    ],
    ids=["added", "removed", "retyped to category", "retyped to float"],
)
def test_changed_features_rebuild_the_snapshot_from_the_rows_read_and_train_on_it(
    capsys: pytest.CaptureFixture[str],
    trained: Path,
    features: dict[str, Any],
    change: str,
    dtype: str | None,
) -> None:
    p = str(trained)
    before = refit_json(capsys, "snapshots", "list", "-p", p)[0]
    write_spec(trained, features)

    if not change.startswith("removed"):  # extra columns do not keep a snapshot from training
        # Training first: the newest snapshot cannot serve the new spec, and it says what will.
        error = refit(capsys, "train", "-p", p, code=5)
        assert f"snapshot {before['id'][:12]} does not have the spec's columns ({change})" in error
        assert "run `refit ingest`: it rebuilds the snapshot from the rows read so far" in error

    ingested = refit_json(capsys, "ingest", "-p", p)
    assert ingested["status"] == "rebuilt", ingested["message"]
    snapshot = ingested["snapshot"]
    assert ingested["message"] == (
        f"the spec's columns changed since snapshot {before['id'][:12]} ({change}): "
        f"snapshot {snapshot['id'][:12]} rebuilt with 240 rows from the rows of 2 batches "
        "read before and kept in the artifact store (1 new file: incoming/batch-1.csv; "
        "1 new file: incoming/batch-2.csv)"
    )
    assert snapshot["row_count"] == 240 and snapshot["parent_id"] == before["id"]
    assert list(snapshot["columns"]) == [*features, "label"]
    if dtype is not None:
        assert snapshot["columns"]["score" if "score" in change else "note"] == dtype

    retrained = refit_json(capsys, "train", "-p", p)["version"]
    assert retrained["version"] == 2 and retrained["snapshot_id"] == snapshot["id"]
    assert signature_inputs(retrained) == list(features)
    # Nothing new came since: the next ingest has no work, and training again is possible.
    assert refit_json(capsys, "ingest", "-p", p)["status"] == "empty"


def test_rebuild_on_request_gives_the_same_snapshot_when_nothing_changed(
    capsys: pytest.CaptureFixture[str], trained: Path
) -> None:
    p = str(trained)
    latest = refit_json(capsys, "snapshots", "list", "-p", p)[0]["id"]
    result = refit_json(capsys, "ingest", "--rebuild", "-p", p)
    assert result["status"] == "unchanged"
    assert result["message"].startswith(
        "refit ingest --rebuild: rebuilt from the rows of 2 batches"
    )
    assert result["message"].endswith(f"the same rows as the latest snapshot {latest[:12]}")
    assert refit_json(capsys, "snapshots", "list", "-p", p)[0]["id"] == latest


def test_rebuild_on_request_applies_changed_rules_to_the_rows_read(
    capsys: pytest.CaptureFixture[str], trained: Path
) -> None:
    p = str(trained)
    write_spec(trained, {**FEATURES, "score": {"type": "int", "max": 8}}, max_reject_rate=0.5)
    assert refit_json(capsys, "ingest", "-p", p)["status"] == "empty"  # same columns: no rebuild
    result = refit_json(capsys, "ingest", "--rebuild", "-p", p)
    above = int(sum((rows(n)["score"] > 8).sum() for n in (1, 2)))
    assert result["status"] == "rebuilt", result["message"]
    assert result["message"].startswith("refit ingest --rebuild: snapshot ")
    assert result["message"].endswith(f", {above} rows rejected")
    assert result["snapshot"]["row_count"] == 240 - above
    assert result["batch"]["rows_rejected"] == above > 0


def test_a_feature_that_no_batch_holds_is_refused_and_keeps_the_snapshot(
    capsys: pytest.CaptureFixture[str], trained: Path
) -> None:
    p = str(trained)
    latest = refit_json(capsys, "snapshots", "list", "-p", p)[0]["id"]
    write_spec(trained, {**FEATURES, "tenure": "float"})

    out = refit(capsys, "ingest", "-p", p, code=5)
    assert (
        "(added: tenure): cannot rebuild the snapshot: no valid rows in the rows of 2 batches"
        in out
    )
    assert "2 batches refused under the current spec: 1 new file: incoming/batch-1.csv: " in out
    assert "the batch has no column 'tenure'" in out
    assert refit_json(capsys, "snapshots", "list", "-p", p)[0]["id"] == latest
