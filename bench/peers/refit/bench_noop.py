"""A model that does nothing, for measuring the floor of refit's own HTTP stack.

`refit.yaml` names it as `model.function: bench_noop:fit`; refit trains it like any user
function and saves it with joblib. The server's workers unpickle it, so this folder must be
on their `PYTHONPATH` (the harness sets it for the no-op server only).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class NoopClassifier:
    """Answers the first class, with probability 1, for every row, without reading them."""

    def __init__(self, classes: list[Any]) -> None:
        self.classes_ = np.asarray(classes, dtype=object)

    def predict(self, X: Any) -> np.ndarray:
        return np.full(len(X), self.classes_[0], dtype=object)

    def predict_proba(self, X: Any) -> np.ndarray:
        proba = np.zeros((len(X), len(self.classes_)))
        proba[:, 0] = 1.0
        return proba


def fit(X: Any, y: Any, params: dict[str, Any]) -> NoopClassifier:
    return NoopClassifier(sorted(set(y.tolist())))
