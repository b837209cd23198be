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
from refit.spec import Task
from refit.train.onnx_export import export_onnx


def cancer() -> tuple[pd.DataFrame, pd.Series]:
    bunch = load_breast_cancer(as_frame=True)
    X = bunch.data.rename(columns=lambda c: c.replace(" ", "_"))
    return X, bunch.target.map({0: "malignant", 1: "benign"})


def test_a_gradient_boosted_pipeline_converts_and_agrees() -> None:
    X, y = cancer()
    model = make_pipeline(HistGradientBoostingClassifier(max_iter=20, random_state=0))
    model.fit(X, y)
    export = export_onnx(model, X.head(100), Task.CLASSIFICATION)
    assert export.status == "ok", export.status
    assert export.data is not None and export.checked_rows == 200  # as given, and with gaps
    assert export.max_difference is not None and export.max_difference <= 1e-5
    labels, proba = OnnxModel(export.data, list(X.columns)).run_frame(X.tail(50))
    assert list(labels) == list(model.predict(X.tail(50)))
    assert np.allclose(proba, model.predict_proba(X.tail(50)), atol=1e-5)


def test_a_regressor_converts_and_agrees_within_float32_precision() -> None:
    bunch = load_diabetes(as_frame=True)
    model = make_pipeline(StandardScaler(), Ridge()).fit(bunch.data, bunch.target)
    export = export_onnx(model, bunch.data.head(80), Task.REGRESSION)
    assert export.status == "ok", export.status
    assert export.max_difference is not None and export.max_difference < 1e-4


def test_a_conversion_that_disagrees_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = cancer()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    # Another model's graph behind the same inputs: a converter bug, as far as refit can tell.
    other = make_pipeline(StandardScaler(), LogisticRegression(C=1e-4)).fit(X, y[::-1].values)
    monkeypatch.setattr(onnx_export, "convert", lambda _model, sample: convert(other, sample))
    export = export_onnx(model, X.head(100), Task.CLASSIFICATION)
    assert export.status.startswith("parity failed:"), export.status
    assert export.data is None


def test_a_schema_with_categories_is_served_natively() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "c": ["a", "b", "a", "b"]})
    export = export_onnx(object(), frame, Task.CLASSIFICATION)
    assert export.status.startswith("unsupported: only numeric"), export.status
