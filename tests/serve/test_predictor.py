"""The native predictor: a scikit-learn model's labels and probabilities, exactly its own."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from refit.flavors.sklearn import SklearnPredictor
from refit.predictions import NonFiniteOutputError, columns_of
from refit.signature import InputColumn, Output, Signature
from refit.spec import FeatureType, Task


class CountingScaler(StandardScaler):
    """A scaler that counts its transforms."""

    calls = 0

    def transform(self, X: Any, copy: Any = None) -> Any:
        CountingScaler.calls += 1
        return super().transform(X, copy=copy)


def test_a_pipeline_answers_its_own_labels_and_probabilities_transforming_once() -> None:
    X, y = load_iris(return_X_y=True, as_frame=True)
    X = X.rename(columns=lambda c: c.replace(" ", "_").strip("_()"))
    model = make_pipeline(CountingScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    signature = Signature(
        [InputColumn(name, FeatureType.FLOAT) for name in X.columns],
        Output(Task.CLASSIFICATION, "int", model.classes_.tolist(), probabilities=True),
    )
    predictor = SklearnPredictor(model, signature)
    rows = X.sample(40, random_state=0)
    CountingScaler.calls = 0
    answer = predictor.predict(columns_of(rows, list(X.columns)))
    assert CountingScaler.calls == 1
    assert answer.label_list() == model.predict(rows).tolist()
    maps = answer.probability_maps()
    assert maps is not None
    got = pd.DataFrame(maps).to_numpy()
    assert np.allclose(got, model.predict_proba(rows), atol=1e-6)
    assert list(maps[0]) == ["0", "1", "2"]


def nan_below_zero(y: Any) -> Any:
    return np.where(np.asarray(y) < 0, np.nan, y)


def test_a_model_that_answers_nan_for_some_rows_is_refused_for_those_rows() -> None:
    # Its linear model answers below zero for small inputs, which it turns into NaN.
    X = pd.DataFrame({"x": np.arange(1.0, 21.0)})
    model = TransformedTargetRegressor(
        LinearRegression(), func=nan_below_zero, inverse_func=nan_below_zero, check_inverse=False
    ).fit(X, X["x"] + 1.0)
    signature = Signature(
        [InputColumn("x", FeatureType.FLOAT, nullable=False)],
        Output(Task.REGRESSION, "float"),
    )
    predictor = SklearnPredictor(model, signature)
    assert np.isnan(model.predict(pd.DataFrame({"x": [-50.0]}))).all()
    with pytest.raises(NonFiniteOutputError) as raised:
        predictor.predict([[3.0, -50.0, 5.0, -80.0]])
    assert raised.value.rows == [1, 3]
    assert (
        str(raised.value) == "the model answered NaN or an infinity as its prediction for 2 row(s)"
    )
    assert len(predictor.predict([[3.0, 5.0]])) == 2
