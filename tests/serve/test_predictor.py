"""The native predictor: a scikit-learn model's labels and probabilities, exactly its own."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from refit.serve.predictor import SklearnPredictor
from refit.serve.records import columns_of
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
    assert answer.labels == model.predict(rows).tolist()
    assert answer.probabilities is not None
    got = pd.DataFrame(answer.probabilities).to_numpy()
    assert np.allclose(got, model.predict_proba(rows), atol=1e-6)
    assert list(answer.probabilities[0]) == ["0", "1", "2"]
