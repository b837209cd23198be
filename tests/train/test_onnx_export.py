"""ONNX export at registration: converted, checked for parity on the holdout, or refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import refit.train.onnx_export as onnx_export
from refit.flavors.onnx import OnnxModel, convert
from refit.predictions import columns_of
from refit.spec import DataSpec, ModelSpec, Task
from refit.train.onnx_export import export_onnx
from refit.train.pipeline import build_pipeline, feature_frame


def cancer() -> tuple[pd.DataFrame, pd.Series]:
    bunch = load_breast_cancer(as_frame=True)
    X = bunch.data.rename(columns=lambda c: c.replace(" ", "_"))
    return X, bunch.target.map({0: "malignant", 1: "benign"})


def test_a_gradient_boosted_pipeline_converts_and_agrees() -> None:
    X, y = cancer()
    model = make_pipeline(HistGradientBoostingClassifier(max_iter=20, random_state=0))
    model.fit(X, y)
    export = export_onnx(model, X.head(100), Task.CLASSIFICATION, list(X.columns))
    assert export.status == "ok", export.status
    assert export.data is not None and export.checked_rows == 230  # as given, with gaps, probes
    assert export.max_difference is not None and export.max_difference <= 1e-5
    labels, proba = OnnxModel(export.data, list(X.columns)).run_frame(X.tail(50))
    assert list(labels) == list(model.predict(X.tail(50)))
    assert np.allclose(proba, model.predict_proba(X.tail(50)), atol=1e-5)


def test_a_regressor_converts_and_agrees_within_float32_precision() -> None:
    bunch = load_diabetes(as_frame=True)
    model = make_pipeline(StandardScaler(), Ridge()).fit(bunch.data, bunch.target)
    export = export_onnx(model, bunch.data.head(80), Task.REGRESSION, [])
    assert export.status == "ok", export.status
    assert export.max_difference is not None and export.max_difference < 1e-4


def test_a_conversion_that_disagrees_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = cancer()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    # Another model's graph behind the same inputs: a converter bug, as far as refit can tell.
    other = make_pipeline(StandardScaler(), LogisticRegression(C=1e-4)).fit(X, y[::-1].values)
    monkeypatch.setattr(onnx_export, "convert", lambda _model, sample: convert(other, sample))
    export = export_onnx(model, X.head(100), Task.CLASSIFICATION, [])
    assert export.status.startswith("parity failed:"), export.status
    assert export.data is None


def mixed(rows: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, DataSpec]:
    """Rows of every feature type, as refit types them after validation, with missing values
    in training and categories the training rows never saw in the last 150 rows."""
    r = np.random.default_rng(seed)
    size = rows
    frame = pd.DataFrame(
        {
            "amount": r.normal(size=size) * 3,
            "age": pd.array(r.integers(18, 90, size), dtype="Int64"),
            "active": pd.array(r.random(size) < 0.5, dtype="boolean"),
            "plan": r.choice(["basic", "pro", "team"], size).astype(object),
            "country": r.choice(["fr", "de", "it", "es"], size).astype(object),
        }
    )
    frame.loc[r.random(size) < 0.15, "amount"] = np.nan
    frame.loc[r.random(size) < 0.1, "active"] = pd.NA
    frame.loc[r.random(size) < 0.1, "country"] = np.nan
    late = np.arange(size) >= size - 150
    frame.loc[late & (r.random(size) < 0.2), "plan"] = "enterprise"  # never seen in training
    logit = (
        np.nan_to_num(frame["amount"].to_numpy(float)) / 3
        + (frame["age"].to_numpy(float) - 50) / 20
        + frame["active"].fillna(False).to_numpy(bool)
        - (frame["plan"] == "basic").to_numpy()
        + (frame["country"] == "fr").to_numpy()
    )
    y = np.where(logit + r.normal(size=size) > 0, "yes", "no").astype(object)
    data = DataSpec.model_validate(
        {
            "source": {"kind": "csv", "path": "x.csv"},
            "target": "y",
            "features": {
                "amount": "float",
                "age": {"type": "int", "nullable": False},
                "active": "bool",
                "plan": {"type": "category", "nullable": False},
                "country": "category",
            },
        }
    )
    return frame, y, data


@pytest.mark.parametrize(
    ("estimator", "task"),
    [
        ("sklearn.ensemble.HistGradientBoostingClassifier", Task.CLASSIFICATION),
        ("sklearn.linear_model.LogisticRegression", Task.CLASSIFICATION),
        ("sklearn.linear_model.Ridge", Task.REGRESSION),
    ],
)
def test_every_feature_type_converts_with_missing_values_and_unseen_categories(
    estimator: str, task: Task
) -> None:
    frame, y, data = mixed()
    target: np.ndarray = y if task is Task.CLASSIFICATION else (y == "yes") * 10.0
    spec = ModelSpec.model_validate({"task": task.value, "estimator": estimator})
    model = build_pipeline(data, spec).fit(feature_frame(frame[:450], data), target[:450])
    holdout = frame[450:]
    export = export_onnx(model, holdout, task, [n for n, f in data.features.items() if f.nullable])
    assert export.status == "ok", export.status
    assert export.checked_rows == 150 + 150 + 3  # as given, with gaps, a probe per nullable
    assert export.data is not None
    # Served rows: Python values, None for missing, categories as text.
    onnx = OnnxModel(export.data, list(frame.columns), list(getattr(model, "classes_", [])) or None)
    assert onnx.texts
    columns = columns_of(holdout, list(frame.columns))
    assert None in columns[4] and "enterprise" in columns[3]
    labels, proba = onnx.run_columns(columns)
    expected = model.predict(feature_frame(holdout, data))
    if task is Task.CLASSIFICATION:
        assert labels.tolist() == expected.tolist()
        assert np.abs(proba - model.predict_proba(feature_frame(holdout, data))).max() < 1e-5
    else:
        assert np.allclose(labels, expected, rtol=1e-4)


def test_a_bool_target_gets_bool_labels() -> None:
    X, y = cancer()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    model.fit(X, (y == "malignant").to_numpy())
    export = export_onnx(model, X.head(60), Task.CLASSIFICATION, [])
    assert export.status == "ok", export.status
    assert export.data is not None
    labels, _ = OnnxModel(export.data, list(X.columns), [False, True]).run_frame(X.head(60))
    assert labels.dtype == bool and labels.tolist() == model.predict(X.head(60)).tolist()


def test_a_graph_that_loads_but_fails_to_run_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = cancer()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)

    def fails(self: OnnxModel, frame: pd.DataFrame) -> None:
        raise RuntimeError("One path in the graph requests feature 2 but input has 2 features")

    monkeypatch.setattr(OnnxModel, "run_frame", fails)
    export = export_onnx(model, X.head(50), Task.CLASSIFICATION, [])
    assert export.status.startswith(
        "unsupported: ONNX Runtime failed on the holdout rows: One path"
    )
    assert export.data is None
