from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)

from refit.errors import TrainingError
from refit.spec import Task
from refit.train.metrics import evaluate, score


def frame(X: np.ndarray[Any, Any]) -> pd.DataFrame:
    return pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])


def classification(classes: int, labels: list[Any]) -> tuple[pd.DataFrame, np.ndarray[Any, Any]]:
    X, y = make_classification(
        n_samples=120, n_features=5, n_informative=3, n_classes=classes, random_state=0
    )
    return frame(X), np.asarray(labels, dtype=object)[y]


def test_binary_metrics_match_sklearn_with_the_second_class_as_positive() -> None:
    X, y = classification(2, ["yes", "no"])  # classes_ sorts to ["no", "yes"]
    model = LogisticRegression().fit(X, y)
    predicted, proba = model.predict(X), model.predict_proba(X)
    assert list(model.classes_) == ["no", "yes"]
    assert evaluate(model, X, pd.Series(y), Task.CLASSIFICATION) == pytest.approx(
        {
            "accuracy": accuracy_score(y, predicted),
            "f1": f1_score(y, predicted, pos_label="yes"),
            "roc_auc": roc_auc_score(y == "yes", proba[:, 1]),
            "log_loss": log_loss(y, proba),
        }
    )


def test_multiclass_metrics_are_macro_and_one_vs_rest() -> None:
    X, y = classification(3, [10, 20, 30])
    model = LogisticRegression().fit(X, y.astype(int))
    y = y.astype(int)
    predicted, proba = model.predict(X), model.predict_proba(X)
    result = evaluate(model, X, y, Task.CLASSIFICATION)
    assert result == pytest.approx(
        {
            "accuracy": accuracy_score(y, predicted),
            "f1": f1_score(y, predicted, average="macro"),
            "roc_auc": roc_auc_score(y, proba, multi_class="ovr", average="macro"),
            "log_loss": log_loss(y, proba),
        }
    )
    assert all(type(value) is float for value in result.values())


def test_metrics_needing_probabilities_are_left_out_or_refused() -> None:
    X, y = classification(2, [0, 1])
    model = RidgeClassifier().fit(X, y.astype(int))
    y = y.astype(int)
    assert set(evaluate(model, X, y, Task.CLASSIFICATION)) == {"accuracy", "f1"}
    with pytest.raises(
        TrainingError, match=r"cannot compute roc_auc for this model: .*predict_proba"
    ):
        score(model, X, y, Task.CLASSIFICATION, "roc_auc")


def test_a_single_class_holdout_has_no_roc_auc() -> None:
    X, y = classification(2, [0, 1])
    model = LogisticRegression().fit(X, y.astype(int))
    ones = y.astype(int) == 1
    result = evaluate(model, X[ones], np.ones(ones.sum(), dtype=int), Task.CLASSIFICATION)
    assert "roc_auc" not in result
    assert {"accuracy", "f1", "log_loss"} <= set(result)
    with pytest.raises(TrainingError, match=r"roc_auc .*: the holdout has a single class"):
        score(model, X[ones], np.ones(ones.sum(), dtype=int), Task.CLASSIFICATION, "roc_auc")


def test_a_class_the_model_never_saw_blocks_probability_metrics() -> None:
    X, y = classification(2, ["a", "b"])
    model = LogisticRegression().fit(X, y)
    y = y.copy()
    y[:5] = "c"
    with pytest.raises(TrainingError, match=r"log_loss .*never saw: \['c'\]"):
        score(model, X, y, Task.CLASSIFICATION, "log_loss")
    assert "accuracy" in evaluate(model, X, y, Task.CLASSIFICATION)


def test_regression_metrics_match_sklearn() -> None:
    X, y = make_regression(n_samples=80, n_features=4, noise=5.0, random_state=0)
    model = Ridge().fit(frame(X), y)
    predicted = model.predict(frame(X))
    assert evaluate(model, frame(X), pd.Series(y), Task.REGRESSION) == pytest.approx(
        {
            "rmse": root_mean_squared_error(y, predicted),
            "mae": mean_absolute_error(y, predicted),
            "r2": r2_score(y, predicted),
        }
    )
    assert score(model, frame(X), y, Task.REGRESSION, "mae") == pytest.approx(
        mean_absolute_error(y, predicted)
    )


def test_one_row_has_no_r2() -> None:
    X, y = make_regression(n_samples=20, n_features=2, random_state=0)
    model = Ridge().fit(frame(X), y)
    assert set(evaluate(model, frame(X[:1]), y[:1], Task.REGRESSION)) == {"rmse", "mae"}


def test_score_refuses_a_metric_of_the_other_task() -> None:
    X, y = make_regression(n_samples=20, n_features=2, random_state=0)
    model = Ridge().fit(frame(X), y)
    with pytest.raises(TrainingError, match="unknown metric 'roc_auc' for regression"):
        score(model, frame(X), y, Task.REGRESSION, "roc_auc")


def test_a_failing_predict_is_a_training_error() -> None:
    class Broken:
        def predict(self, X: Any) -> Any:
            raise RuntimeError("no model here")

    with pytest.raises(TrainingError, match="the model's predict failed on the holdout: Runtime"):
        evaluate(Broken(), pd.DataFrame({"x": [1.0]}), np.array([1.0]), Task.REGRESSION)


def test_an_empty_holdout_is_refused() -> None:
    with pytest.raises(TrainingError, match="empty holdout"):
        evaluate(object(), pd.DataFrame({"x": []}), np.array([]), Task.REGRESSION)


class Constant:
    """A user's model without classes_: always predicts one label."""

    def __init__(self, label: Any) -> None:
        self.label = label

    def predict(self, X: Any) -> Any:
        return np.full(len(X), self.label, dtype=object)


def test_a_model_without_classes_gets_f1_on_the_labels_seen() -> None:
    X = pd.DataFrame({"x": range(4)})
    y = np.array(["no", "yes", "yes", "no"], dtype=object)
    result = evaluate(Constant("yes"), X, y, Task.CLASSIFICATION)
    assert result == pytest.approx(
        {"accuracy": 0.5, "f1": f1_score(y, ["yes"] * 4, pos_label="yes")}
    )


def test_labels_of_another_type_are_named_in_the_refusal() -> None:
    X = pd.DataFrame({"x": range(4)})
    y = np.array(["no", "yes", "yes", "no"], dtype=object)
    assert evaluate(Constant(1), X, y, Task.CLASSIFICATION) == {}
    with pytest.raises(TrainingError, match="cannot compute accuracy for this model: "):
        score(Constant(1), X, y, Task.CLASSIFICATION, "accuracy")
