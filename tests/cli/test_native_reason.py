"""What `refit train`, `refit models register` and `refit models show` say about how a version
is served: why natively, in full, and which features may not be null."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from refit.cli import app
from refit.cli._output import run_app
from wine import TARGET, wine_project, wine_rows

NEAREST_CENTROID = {
    "task": "classification",
    "estimator": "sklearn.neighbors.NearestCentroid",  # no ONNX converter: served natively
    "metric": "accuracy",
}


def refit(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    code = run_app(app, list(args))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_train_and_show_say_in_full_why_a_version_is_served_natively(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    p = str(wine_project(tmp_path / "wine", **NEAREST_CENTROID))
    trained = json.loads(refit(capsys, "train", "-p", p, "--json"))
    status = trained["version"]["onnx"]["status"]
    assert status.startswith("unsupported: MissingShapeCalculator: Unable to find a shape")
    assert len(status) > 500 and status.rstrip().endswith(".")  # the whole reason, not cut

    shown = refit(capsys, "models", "show", "1", "-p", p)
    assert f"onnx      not used, served natively: {status}\n" in shown
    printed = refit(capsys, "train", "-p", p)
    assert f"  served natively, not by ONNX Runtime: {status}\n" in printed


def test_register_says_which_features_may_not_be_null_and_how_to_fix_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    p = str(wine_project(tmp_path / "wine"))
    rows = wine_rows()
    features = [c for c in rows.columns if c != TARGET]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    joblib.dump(model.fit(rows[features], rows[TARGET]), tmp_path / "pipe.joblib")

    printed = refit(capsys, "models", "register", str(tmp_path / "pipe.joblib"), "-p", p)
    assert "  note: 13 feature(s) made not nullable, so a null there is refused with 422" in printed
    assert "'od280/od315_of_diluted_wines'" in printed and "SimpleImputer" in printed
    assert "served natively" not in printed  # its ONNX graph passed the parity check
    shown = refit(capsys, "models", "show", "1", "-p", p)
    assert "onnx      ok\n" in shown
    assert f"not null  13: {', '.join(features)}\n" in shown
