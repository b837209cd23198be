from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)

from refit.monitor.quality import ISOTONIC_ROWS, estimated_quality, live_quality
from refit.spec import Task
from refit.train.metrics import evaluate

WEIGHTS = np.array([1.5, -1.0, 0.5, 0.0, 2.0])


class World:
    """Rows whose labels follow a logistic model of their inputs, so that a logistic
    regression fitted on them is calibrated wherever the inputs move (a covariate shift)."""

    def __init__(self, seed: int, classes: int = 2) -> None:
        self.rng = np.random.default_rng(seed)
        self.classes = classes
        self.weights = (
            WEIGHTS[:, None] * [0, 1] if classes == 2 else self.rng.normal(size=(5, classes))
        )
        self.labels = np.array(["no", "yes"] if classes == 2 else [10, 20, 30][:classes])

    def rows(self, n: int, loc: float = 0.0, scale: float = 1.0) -> tuple[Any, Any]:
        X = self.rng.normal(loc, scale, size=(n, 5))
        z = X @ self.weights + 0.3
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        chosen = (self.rng.random((n, 1)) > np.cumsum(p, axis=1)).sum(axis=1)
        return X, self.labels[chosen]


@pytest.fixture(scope="module")
def binary() -> tuple[World, LogisticRegression]:
    world = World(seed=0)
    return world, LogisticRegression().fit(*world.rows(20_000))


def test_live_metrics_are_sklearns_with_the_second_class_as_positive() -> None:
    truth = ["yes", "no", "yes", "yes", "no", "no", "yes", "no"]
    predicted = ["yes", "no", "no", "yes", "yes", "no", "yes", "no"]
    positive = np.array([0.9, 0.2, 0.4, 0.7, 0.6, 0.1, 0.8, 0.3])
    scores = np.column_stack([1 - positive, positive])
    result = live_quality(Task.CLASSIFICATION, truth, predicted, scores, ["no", "yes"])
    assert result == pytest.approx(
        {
            "rows": 8,
            "accuracy": accuracy_score(truth, predicted),
            "f1": f1_score(truth, predicted, pos_label="yes"),
            "roc_auc": roc_auc_score(np.array(truth) == "yes", positive),
            "log_loss": log_loss(truth, scores, labels=["no", "yes"]),
        }
    )
    assert result["accuracy"] == 0.75 and result["f1"] == 0.75 and result["roc_auc"] == 0.9375


def test_live_multiclass_metrics_are_macro_and_one_vs_rest() -> None:
    rng = np.random.default_rng(1)
    truth = rng.choice([10, 20, 30], size=300)
    scores = rng.dirichlet([1, 1, 1], size=300)
    predicted = np.array([10, 20, 30])[scores.argmax(axis=1)]
    result = live_quality(Task.CLASSIFICATION, list(truth), list(predicted), scores, [10, 20, 30])
    assert result == pytest.approx(
        {
            "rows": 300,
            "accuracy": accuracy_score(truth, predicted),
            "f1": f1_score(truth, predicted, average="macro"),
            "roc_auc": roc_auc_score(truth, scores, multi_class="ovr", average="macro"),
            "log_loss": log_loss(truth, scores, labels=[10, 20, 30]),
        }
    )


def test_live_regression_metrics_are_sklearns() -> None:
    truth, predicted = [3.0, -1.0, 2.5, 7.0], [2.5, 0.0, 2.0, 8.0]
    result = live_quality(Task.REGRESSION, truth, predicted, None, None)
    assert result == pytest.approx(
        {
            "rows": 4,
            "mae": mean_absolute_error(truth, predicted),
            "rmse": root_mean_squared_error(truth, predicted),
            "r2": r2_score(truth, predicted),
        }
    )


def test_live_quality_means_what_training_means(binary: tuple[World, LogisticRegression]) -> None:
    world, model = binary
    X, y = world.rows(500)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(5)])
    model = LogisticRegression().fit(frame, y)
    live = live_quality(
        Task.CLASSIFICATION, y, model.predict(frame), model.predict_proba(frame), model.classes_
    )
    assert live == pytest.approx(
        {"rows": 500, **evaluate(model, frame, pd.Series(y), Task.CLASSIFICATION)}
    )
    values = X @ WEIGHTS
    ridge = Ridge().fit(frame, values)
    assert live_quality(
        Task.REGRESSION, list(values), list(ridge.predict(frame)), None, None
    ) == pytest.approx({"rows": 500, **evaluate(ridge, frame, values, Task.REGRESSION)})


def test_metrics_that_cannot_be_computed_are_left_out() -> None:
    one_class = live_quality(
        Task.CLASSIFICATION, [1, 1, 1], [1, 0, 1], np.array([[0.2, 0.8]] * 3), [0, 1]
    )
    assert set(one_class) == {"rows", "accuracy", "f1", "log_loss"}
    unscored = live_quality(Task.CLASSIFICATION, [0, 1, 1], [1, 1, 0], None, [0, 1])
    assert set(unscored) == {"rows", "accuracy", "f1"}
    unknown = live_quality(
        Task.CLASSIFICATION, [0, 1, 2], [0, 1, 1], np.array([[0.6, 0.4]] * 3), [0, 1]
    )
    assert set(unknown) == {"rows", "accuracy", "f1"}
    assert live_quality(Task.REGRESSION, [1.0], [2.0], None, None) == {
        "rows": 1,
        "mae": 1.0,
        "rmse": 1.0,
    }
    assert live_quality(Task.CLASSIFICATION, [], [], None, None) == {"rows": 0}
    with pytest.raises(ValueError, match="2 true values for 3 predictions"):
        live_quality(Task.REGRESSION, [1.0, 2.0], [1.0, 2.0, 3.0], None, None)


def measured(model: LogisticRegression, X: Any, y: Any) -> dict[str, float]:
    return live_quality(
        Task.CLASSIFICATION, list(y), list(model.predict(X)), model.predict_proba(X), model.classes_
    )


def test_the_estimate_is_close_to_the_accuracy_measured_later(
    binary: tuple[World, LogisticRegression],
) -> None:
    world, model = binary
    X_holdout, y_holdout = world.rows(5_000)
    X_live, y_live = world.rows(20_000)
    estimate = estimated_quality(
        model.predict_proba(X_live), model.classes_, model.predict_proba(X_holdout), y_holdout
    )
    truth = measured(model, X_live, y_live)
    assert estimate["rows"] == 20_000 and estimate["reference_rows"] == 5_000
    for name in ("accuracy", "f1", "roc_auc"):
        assert estimate[name] == pytest.approx(truth[name], abs=0.02), name


def test_the_estimate_moves_with_the_accuracy_under_a_covariate_shift(
    binary: tuple[World, LogisticRegression],
) -> None:
    world, model = binary
    X_holdout, y_holdout = world.rows(5_000)
    reference = model.predict_proba(X_holdout)
    X_near, y_near = world.rows(20_000, scale=0.3)  # inputs crowd the decision boundary
    X_far, y_far = world.rows(20_000, scale=2.0)  # inputs leave it
    near = estimated_quality(model.predict_proba(X_near), model.classes_, reference, y_holdout)
    far = estimated_quality(model.predict_proba(X_far), model.classes_, reference, y_holdout)
    truly_near, truly_far = measured(model, X_near, y_near), measured(model, X_far, y_far)
    assert truly_far["accuracy"] - truly_near["accuracy"] > 0.15
    assert near["accuracy"] == pytest.approx(truly_near["accuracy"], abs=0.02)
    assert far["accuracy"] == pytest.approx(truly_far["accuracy"], abs=0.02)
    assert near["roc_auc"] == pytest.approx(truly_near["roc_auc"], abs=0.02)


def test_a_small_holdout_calibrates_by_platt_scaling(
    binary: tuple[World, LogisticRegression],
) -> None:
    world, model = binary
    X_holdout, y_holdout = world.rows(ISOTONIC_ROWS - 1)
    X_live, y_live = world.rows(20_000)
    estimate = estimated_quality(
        model.predict_proba(X_live), model.classes_, model.predict_proba(X_holdout), y_holdout
    )
    assert estimate["accuracy"] == pytest.approx(
        measured(model, X_live, y_live)["accuracy"], abs=0.03
    )


def test_a_small_holdout_that_scores_separate_perfectly_is_estimated_near_perfect() -> None:
    positive = np.linspace(0.01, 0.99, 200)
    scores = np.column_stack([1 - positive, positive])
    estimate = estimated_quality(scores, [0, 1], scores, (positive > 0.5).astype(int))
    assert estimate["accuracy"] > 0.99 and estimate["roc_auc"] > 0.99


def test_a_miscalibrated_model_is_estimated_after_calibration() -> None:
    world = World(seed=3)
    model = LogisticRegression().fit(*world.rows(20_000))
    X_holdout, y_holdout = world.rows(5_000)
    X_live, y_live = world.rows(20_000)

    def overconfident(X: Any) -> Any:
        p = model.predict_proba(X) ** 4  # the same ranking and choices, far too sure
        return p / p.sum(axis=1, keepdims=True)

    estimate = estimated_quality(
        overconfident(X_live), model.classes_, overconfident(X_holdout), y_holdout
    )
    naive = float(overconfident(X_live).max(axis=1).mean())
    truth = measured(model, X_live, y_live)["accuracy"]
    assert naive - truth > 0.05  # taken at their word, the probabilities would mislead
    assert estimate["accuracy"] == pytest.approx(truth, abs=0.02)


def test_the_multiclass_estimate_is_close_to_the_measured_one() -> None:
    world = World(seed=4, classes=3)
    model = LogisticRegression().fit(*world.rows(20_000))
    X_holdout, y_holdout = world.rows(5_000)
    X_live, y_live = world.rows(20_000, scale=0.5)
    estimate = estimated_quality(
        model.predict_proba(X_live), model.classes_, model.predict_proba(X_holdout), y_holdout
    )
    truth = measured(model, X_live, y_live)
    for name in ("accuracy", "f1", "roc_auc"):
        assert estimate[name] == pytest.approx(truth[name], abs=0.025), name


def test_the_expected_roc_auc_weighs_each_row_as_both_classes() -> None:
    # Calibrated on a holdout whose labels are certain given the score, the estimate is the
    # ROC AUC of each live row counted as positive with its probability, as sklearn weighs it.
    reference = np.repeat([0.1, 0.3, 0.6, 0.9], 1_000)
    hits = np.tile(np.arange(1_000), 4) < np.repeat([100, 300, 600, 900], 1_000)
    truth = np.where(hits, "yes", "no")
    live = np.array([0.1, 0.3, 0.3, 0.6, 0.9, 0.9, 0.1])
    estimate = estimated_quality(
        np.column_stack([1 - live, live]),
        ["no", "yes"],
        np.column_stack([1 - reference, reference]),
        truth,
    )
    doubled = np.concatenate([live, live])
    labels = np.concatenate([np.ones(len(live)), np.zeros(len(live))])
    weights = np.concatenate([live, 1 - live])
    assert estimate["roc_auc"] == pytest.approx(
        roc_auc_score(labels, doubled, sample_weight=weights)
    )
    assert estimate["accuracy"] == pytest.approx(np.maximum(live, 1 - live).mean())


def test_the_estimate_needs_reference_rows_and_matching_shapes() -> None:
    scores = np.array([[0.3, 0.7], [0.8, 0.2]])
    assert estimated_quality(scores, [0, 1], np.empty((0, 2)), []) == {
        "rows": 2,
        "reference_rows": 0,
    }
    assert estimated_quality(np.empty((0, 2)), [0, 1], scores, [0, 1]) == {
        "rows": 0,
        "reference_rows": 2,
    }
    with pytest.raises(ValueError, match=r"scores of shape \(2, 2\): expected one column per"):
        estimated_quality(scores, [0, 1, 2], scores, [0, 1])
    with pytest.raises(ValueError, match="3 true values for 2 reference rows"):
        estimated_quality(scores, [0, 1], scores, [0, 1, 1])
