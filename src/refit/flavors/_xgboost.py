"""XGBoost's classifier for any labels, which `model.estimator: xgboost.XGBClassifier` builds.

`xgboost.XGBClassifier` learns only the labels 0 to n-1 (it refuses text, bools come back as
0 and 1, and classes 1, 2, 3 fail). This subclass learns whatever labels the target holds,
sorted as scikit-learn sorts them: `classes_` are those labels, `predict` answers them and
`predict_proba` has a column per label in that order. Its parameters, tags and booster are
XGBoost's own, and onnxmltools' converter reads its `classes_` as the graph's labels.

Artifacts name this class by its path (`refit.flavors._xgboost.XGBClassifier`), so it stays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xgboost


class XGBClassifier(xgboost.XGBClassifier):
    """`xgboost.XGBClassifier` fitted on any labels (text, bools, any whole numbers)."""

    labels_: np.ndarray[Any, Any] | None = None

    def fit(self, X: Any, y: Any, **kwargs: Any) -> XGBClassifier:
        labels, codes = np.unique(np.asarray(y), return_inverse=True)
        self.labels_ = None  # while XGBoost fits, classes_ are its own 0 to n-1
        super().fit(X, codes, **kwargs)
        self.labels_ = labels
        return self

    @property
    def classes_(self) -> np.ndarray[Any, Any]:
        if self.labels_ is None:
            return np.arange(self.n_classes_)
        return self.labels_

    def predict(self, X: Any, **kwargs: Any) -> np.ndarray[Any, Any]:
        codes = np.asarray(super().predict(X, **kwargs))
        if self.labels_ is None or kwargs.get("output_margin"):
            return codes
        return self.labels_[codes.astype(np.int64)]
