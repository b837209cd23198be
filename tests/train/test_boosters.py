"""XGBoost's and LightGBM's estimators in refit's pipeline: trained, checked against the task,
converted to ONNX by onnxmltools' converters and held to the same parity check, or served
natively with the reason; and the install hint when the package is missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

from refit.cli import app
from refit.cli._output import run_app
from refit.errors import SpecError
from refit.flavors.onnx import OnnxModel
from refit.spec import DataSpec, ModelSpec, Task
from refit.train.onnx_export import export_onnx
from refit.train.pipeline import build_pipeline, feature_frame, resolve_estimator
from wine import wine_project

BOOSTERS = {
    "xgboost.XGBClassifier": {"n_estimators": 15, "max_depth": 3, "random_state": 0},
    "xgboost.XGBRegressor": {"n_estimators": 15, "max_depth": 3, "random_state": 0},
    "lightgbm.LGBMClassifier": {"n_estimators": 15, "min_child_samples": 5, "verbose": -1},
    "lightgbm.LGBMRegressor": {"n_estimators": 15, "min_child_samples": 5, "verbose": -1},
}
CLASSIFIERS = [name for name in BOOSTERS if name.endswith("Classifier")]
REGRESSORS = [name for name in BOOSTERS if name.endswith("Regressor")]


def rows(count: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray[Any, Any], DataSpec]:
    """Four nullable float features, one in ten of their cells missing, and a score that two
    of them decide (with noise); the spec types them."""
    r = np.random.default_rng(seed)
    frame = pd.DataFrame({name: r.normal(size=count) for name in ("a", "b", "c", "d")})
    score = frame["a"] + 0.5 * frame["b"] + r.normal(scale=0.3, size=count)
    for name in frame.columns:
        frame.loc[r.random(count) < 0.1, name] = np.nan
    data = DataSpec.model_validate(
        {
            "source": {"kind": "csv", "path": "x.csv"},
            "target": "y",
            "features": {name: "float" for name in frame.columns},
        }
    )
    return frame, score.to_numpy(), data


TARGETS = {
    "binary text": lambda score: np.where(score > 0, "yes", "no").astype(object),
    "binary bool": lambda score: score > 0,
    "three whole numbers, not 0 to 2": lambda score: np.digitize(score, [-0.5, 0.5]) * 2 + 3,
    "three texts": lambda score: np.array(["low", "mid", "high"], dtype=object)[
        np.digitize(score, [-0.5, 0.5])
    ],
}


def fitted(estimator: str, target: np.ndarray[Any, Any], **params: Any) -> tuple[Any, Any]:
    frame, _, data = rows()
    task = "classification" if estimator in CLASSIFIERS else "regression"
    spec = ModelSpec.model_validate(
        {"task": task, "estimator": estimator, "params": BOOSTERS[estimator] | params}
    )
    model = build_pipeline(data, spec).fit(feature_frame(frame[:300], data), target[:300])
    return model, frame[300:]


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("estimator", CLASSIFIERS)
def test_a_boosted_classifier_learns_the_targets_labels_and_converts_with_parity(
    estimator: str, target: str
) -> None:
    _, score, _ = rows()
    y = TARGETS[target](score)
    model, holdout = fitted(estimator, y)
    assert [name for name, _ in model.named_steps["features"].transformers_[0][1].steps] == [
        "impute"  # trees: no scaling
    ]
    classes = np.unique(y)
    assert model.classes_.tolist() == classes.tolist()
    predicted = model.predict(holdout)
    assert predicted.dtype == y.dtype and set(predicted.tolist()) <= set(classes.tolist())

    export = export_onnx(model, holdout, Task.CLASSIFICATION, list(holdout.columns))
    assert export.status == "ok", export.status
    assert export.data is not None and export.checked_rows == 100 + 100 + 4  # gaps, probes
    labels, proba = OnnxModel(export.data, list(holdout.columns), classes.tolist()).run_frame(
        holdout
    )
    assert labels.tolist() == predicted.tolist()
    assert np.abs(proba - model.predict_proba(holdout)).max() < 1e-5


@pytest.mark.parametrize("estimator", REGRESSORS)
def test_a_boosted_regressor_converts_with_parity_on_missing_values(estimator: str) -> None:
    _, score, _ = rows()
    model, holdout = fitted(estimator, score * 10)
    export = export_onnx(model, holdout, Task.REGRESSION, list(holdout.columns))
    assert export.status == "ok", export.status
    assert export.data is not None
    holes = holdout.isna().any(axis=1).to_numpy()
    assert holes.sum() > 10  # the rows checked include missing values
    values, _ = OnnxModel(export.data, list(holdout.columns)).run_frame(holdout)
    assert np.allclose(values, model.predict(holdout), rtol=1e-4)


def test_a_booster_onnxmltools_cannot_convert_is_served_natively_with_the_reason() -> None:
    _, score, _ = rows()
    model, holdout = fitted("xgboost.XGBRegressor", score, booster="gblinear", max_depth=None)
    export = export_onnx(model, holdout, Task.REGRESSION, list(holdout.columns))
    assert export.data is None
    assert export.status == (
        "unsupported: NotImplementedError: onnxmltools converts XGBoost's tree booster "
        "(booster='gbtree'), not booster='gblinear'"
    )


def test_a_conversion_that_leaves_out_part_of_the_model_fails_parity() -> None:
    # onnxmltools converts the trees of a LightGBM model with linear leaves, not the leaves'
    # linear models: the graph answers differently, and the check finds it.
    _, score, _ = rows()
    model, holdout = fitted("lightgbm.LGBMRegressor", score, linear_tree=True)
    export = export_onnx(model, holdout, Task.REGRESSION, list(holdout.columns))
    assert export.data is None
    assert export.status.startswith("parity failed: values differ by up to "), export.status


def test_a_fitted_xgboost_classifier_survives_its_artifact(tmp_path: Path) -> None:
    _, score, _ = rows()
    y = TARGETS["three texts"](score)
    model, holdout = fitted("xgboost.XGBClassifier", y)
    joblib.dump(model, tmp_path / "model.joblib")
    loaded = joblib.load(tmp_path / "model.joblib")
    assert loaded.predict(holdout).tolist() == model.predict(holdout).tolist()
    assert loaded.classes_.tolist() == ["high", "low", "mid"]
    # Fitted again on other labels, it forgets the first ones.
    again = loaded.fit(holdout, np.arange(100) % 3 + 7)
    assert again.classes_.tolist() == [7, 8, 9]
    assert set(again.predict(holdout).tolist()) <= {7, 8, 9}


@pytest.mark.parametrize(
    ("estimator", "task", "kind"),
    [
        ("xgboost.XGBRegressor", Task.CLASSIFICATION, "regressor"),
        ("lightgbm.LGBMClassifier", Task.REGRESSION, "classifier"),
    ],
)
def test_a_booster_of_the_other_task_is_a_spec_error(estimator: str, task: Task, kind: str) -> None:
    with pytest.raises(SpecError) as raised:
        resolve_estimator(estimator, {}, task)
    assert str(raised.value) == (
        f"model.estimator: got {estimator!r}: a {kind}, but model.task is {task.value}"
    )


@pytest.mark.parametrize(
    ("estimator", "package"),
    [("xgboost.XGBClassifier", "xgboost"), ("lightgbm.LGBMRegressor", "lightgbm")],
)
def test_a_missing_booster_package_names_the_extra_that_installs_it(
    estimator: str, package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, package, None)  # `import package` fails: not installed
    with pytest.raises(SpecError) as raised:
        resolve_estimator(estimator, {})
    assert str(raised.value) == (
        f"model.estimator {estimator} needs {package}: pip install 'refit[{package}]'"
    )


def test_refit_train_without_xgboost_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = {"task": "classification", "estimator": "xgboost.XGBClassifier", "metric": "accuracy"}
    project = wine_project(tmp_path / "wine", **model)
    for name in [m for m in sys.modules if m == "xgboost" or m.startswith("xgboost.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "xgboost", None)
    code = run_app(app, ["train", "-p", str(project)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert (
        "model.estimator xgboost.XGBClassifier needs xgboost: pip install 'refit[xgboost]'" in err
    )
    assert "Traceback" not in err


def test_what_lightgbm_prints_while_fitting_leaves_the_json_answer_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = {"task": "classification", "estimator": "lightgbm.LGBMClassifier", "metric": "f1"}
    project = wine_project(tmp_path / "wine", **model, params={"n_estimators": 10, "verbose": 1})
    code = run_app(app, ["train", "-p", str(project), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "[LightGBM] [Info]" in captured.err  # its log, where a person reads it
    assert json.loads(captured.out)["version"]["version"] == 1
