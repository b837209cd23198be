"""Anomaly detection trains on the features alone, is scored against a label when the data has
one and by the Excess-Mass and Mass-Volume criteria otherwise, and is gated on the same rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.svm import OneClassSVM

from refit._metrics_unsupervised import excess_mass, mass_volume
from refit.errors import SpecError
from refit.monitor.quality import live_quality
from refit.project import load_project
from refit.services import open_services
from refit.signature import ANOMALY_SCORE, Output, anomaly_score, signature_for
from refit.spec import DataSpec, Task
from refit.train.metrics import evaluate, score
from refit.train.run import run_training
from unlabelled import LABEL, anomaly_rows, set_model, write_project

FOREST = "sklearn.ensemble.IsolationForest"
GOOD: dict[str, Any] = {"n_estimators": 25, "random_state": 0}
# Two trees on two rows each: a detector that barely tells the anomalies apart.
POOR: dict[str, Any] = {"n_estimators": 1, "max_samples": 2, "random_state": 3}


def detector(params: dict[str, Any], **model: Any) -> dict[str, Any]:
    return {"task": "anomaly", "estimator": FOREST, "params": params, **model}


def features() -> list[str]:
    return ["x", "y", "z"]


def test_the_signature_of_a_detector_is_a_flag_with_a_score() -> None:
    rows = anomaly_rows()[features()]
    model = IsolationForest(random_state=0).fit(rows)
    data = DataSpec.model_validate(
        {"source": {"kind": "csv", "path": "x"}, "features": dict.fromkeys(features(), "float")}
    )
    signature = signature_for(model, data, Task.ANOMALY)
    assert signature.output == Output(Task.ANOMALY, "bool", None, False, ANOMALY_SCORE)
    # the score is above 0 exactly where predict flags the row (-1)
    assert ((anomaly_score(model, rows) > 0) == (model.predict(rows) == -1)).all()


def test_a_labelled_holdout_scores_the_detector_by_its_label(tmp_path: Path) -> None:
    root = write_project(tmp_path, anomaly_rows(), detector(GOOD, contamination=0.05), target=LABEL)
    with open_services(load_project(root)) as services:
        result = run_training(services)
    version = result.version
    assert version.metric == "roc_auc" and version.metrics["roc_auc"] > 0.95
    assert {"average_precision", "f1", "precision", "recall"} <= set(version.metrics)
    assert {"excess_mass", "mass_volume"} <= set(version.metrics)
    assert version.params["contamination"] == 0.05
    assert version.timings["split"] == "random"
    reference = version.reference
    assert reference is not None
    assert set(reference["labels"]) == {False, True}  # the label, as flags
    assert len(reference["score"]) == len(reference["predictions"]) == len(reference["labels"])
    assert reference["predictions"] == [s > 0 for s in reference["score"]]


def test_without_a_label_the_detector_is_scored_by_excess_mass(tmp_path: Path) -> None:
    rows = anomaly_rows().drop(columns=LABEL)
    root = write_project(tmp_path, rows, detector(GOOD))
    with open_services(load_project(root)) as services:
        result = run_training(services)
    version = result.version
    assert version.metric == "excess_mass"
    assert set(version.metrics) == {"excess_mass", "mass_volume"}
    assert result.promoted


@pytest.mark.parametrize("labelled", [True, False])
def test_an_obviously_better_detector_wins_the_gate(tmp_path: Path, labelled: bool) -> None:
    rows = anomaly_rows() if labelled else anomaly_rows().drop(columns=LABEL)
    root = write_project(tmp_path, rows, detector(POOR), target=LABEL if labelled else None)
    with open_services(load_project(root)) as services:
        poor = run_training(services)
    assert poor.promoted
    set_model(root, params=GOOD)
    with open_services(load_project(root)) as services:
        good = run_training(services)
    metric = "roc_auc" if labelled else "excess_mass"
    assert good.decision.metric == metric
    assert good.promoted, good.decision.reason
    assert good.decision.champion_value == pytest.approx(poor.version.metrics[metric])
    set_model(root, params=POOR)
    with open_services(load_project(root)) as services:
        again = run_training(services)
    assert not again.promoted  # the poor one does not take production back


def test_excess_mass_and_mass_volume_rank_a_detector_that_knows_the_density_first() -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(2_000, 2))
    uniform = rng.uniform(rows.min(axis=0), rows.max(axis=0), size=(10_000, 2))

    def knowing(points: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        result: np.ndarray[Any, Any] = (points**2).sum(axis=1)  # far from the centre: anomalous
        return result

    def blind(points: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        result: np.ndarray[Any, Any] = points[:, 0]  # one side of one axis is "anomalous"
        return result

    assert excess_mass(knowing(rows), knowing(uniform)) > excess_mass(blind(rows), blind(uniform))
    assert mass_volume(knowing(rows), knowing(uniform)) < mass_volume(blind(rows), blind(uniform))


def test_the_unlabelled_criteria_are_seeded() -> None:
    rows = anomaly_rows()[features()]
    model = OneClassSVM(nu=0.05).fit(rows)
    first = evaluate(model, rows, None, Task.ANOMALY)
    assert evaluate(model, rows, None, Task.ANOMALY) == first
    assert set(first) == {"excess_mass", "mass_volume"}


def test_a_flag_metric_reads_the_score_above_zero() -> None:
    rows = anomaly_rows()
    model = IsolationForest(contamination=0.05, random_state=0).fit(rows[features()])
    f1 = score(model, rows[features()], rows[LABEL].to_numpy(), Task.ANOMALY, "f1")
    assert f1 > 0.8


@pytest.mark.parametrize(
    ("estimator", "params", "expected"),
    [
        ("sklearn.svm.OneClassSVM", {}, ("nu", 0.1)),
        ("sklearn.linear_model.SGDOneClassSVM", {"random_state": 0}, ("nu", 0.1)),
        ("sklearn.covariance.EllipticEnvelope", {"random_state": 0}, ("contamination", 0.1)),
        ("sklearn.neighbors.LocalOutlierFactor", {"novelty": True}, ("contamination", 0.1)),
    ],
)
def test_contamination_is_the_detectors_own_parameter(
    tmp_path: Path, estimator: str, params: dict[str, Any], expected: tuple[str, float]
) -> None:
    model = {"task": "anomaly", "estimator": estimator, "params": params, "contamination": 0.1}
    root = write_project(tmp_path, anomaly_rows(300), model, target=LABEL)
    with open_services(load_project(root)) as services:
        version = run_training(services).version
    name, value = expected
    assert version.params[name] == value
    assert 0 <= version.metrics["roc_auc"] <= 1


def test_contamination_set_twice_is_refused(tmp_path: Path) -> None:
    model = detector({"contamination": 0.2}, contamination=0.1)
    root = write_project(tmp_path, anomaly_rows(), model, target=LABEL)
    with open_services(load_project(root)) as services, pytest.raises(SpecError) as caught:
        run_training(services)
    assert "model.contamination and model.params.contamination both set" in str(caught.value)


def test_contamination_searched_and_set_is_refused_before_any_work(tmp_path: Path) -> None:
    search = {"params": {"contamination": [0.02, 0.05]}, "sampler": "grid"}
    model = detector(GOOD, contamination=0.1, tune=search)
    root = write_project(tmp_path, anomaly_rows(), model, target=LABEL)
    with open_services(load_project(root)) as services, pytest.raises(SpecError) as caught:
        run_training(services)
    assert str(caught.value).startswith(
        "model.tune.params.contamination: model.contamination sets contamination already"
    )


def test_a_searched_contamination_tunes_the_detector(tmp_path: Path) -> None:
    search = {"params": {"contamination": [0.01, 0.05]}, "sampler": "grid", "folds": 2}
    model = detector(GOOD, tune=search, metric="f1")
    root = write_project(tmp_path, anomaly_rows(), model, target=LABEL)
    with open_services(load_project(root)) as services:
        version = run_training(services).version
    assert version.tuning is not None and len(version.tuning["trials"]) == 2
    assert version.params["contamination"] == 0.05  # the data holds 5% anomalies


def test_a_local_outlier_factor_without_novelty_is_refused(tmp_path: Path) -> None:
    model = {"task": "anomaly", "estimator": "sklearn.neighbors.LocalOutlierFactor"}
    root = write_project(tmp_path, anomaly_rows(), model, target=LABEL)
    with open_services(load_project(root)) as services, pytest.raises(SpecError) as caught:
        run_training(services)
    assert "LocalOutlierFactor with novelty=False only scores the rows it was fitted on" in str(
        caught.value
    )
    assert "model.params.novelty: true" in str(caught.value)


@pytest.mark.parametrize(
    ("task", "estimator", "kind"),
    [
        ("anomaly", "sklearn.ensemble.RandomForestClassifier", "a classifier"),
        ("anomaly", "sklearn.cluster.KMeans", "a clusterer"),
        ("classification", FOREST, "an anomaly detector"),
    ],
)
def test_an_estimator_of_another_kind_is_refused(
    tmp_path: Path, task: str, estimator: str, kind: str
) -> None:
    root = write_project(
        tmp_path, anomaly_rows(), {"task": task, "estimator": estimator}, target=LABEL
    )
    with open_services(load_project(root)) as services, pytest.raises(SpecError) as caught:
        run_training(services)
    assert f"{kind}, but model.task is {task}" in str(caught.value)


def test_a_label_that_is_no_flag_is_refused_saying_what_it_holds(tmp_path: Path) -> None:
    rows = anomaly_rows().assign(kind=lambda f: f[LABEL].map({True: "odd", False: "usual"}))
    root = write_project(tmp_path, rows.drop(columns=LABEL), detector(GOOD), target="kind")
    with open_services(load_project(root)) as services, pytest.raises(SpecError) as caught:
        run_training(services)
    assert str(caught.value) == (
        "data.target 'kind' holds two values, 'odd' and 'usual', but an anomaly label says "
        "which rows are anomalies: write the anomalous value as true (or 1) and the other as "
        "false (or 0)"
    )


def test_a_label_of_other_values_is_refused_saying_what_a_label_is(tmp_path: Path) -> None:
    rows = anomaly_rows().assign(level=lambda f: np.arange(len(f)) % 3)
    root = write_project(tmp_path, rows.drop(columns=LABEL), detector(GOOD), target="level")
    with open_services(load_project(root)) as services, pytest.raises(SpecError) as caught:
        run_training(services)
    assert str(caught.value).startswith(
        "data.target 'level' holds 0, 1, 2, but an anomaly label is true or 1 for an anomaly "
        "and false or 0 for a normal row"
    )


def test_a_label_of_zeros_and_ones_is_a_flag(tmp_path: Path) -> None:
    rows = anomaly_rows().assign(**{LABEL: lambda f: f[LABEL].astype(int)})
    root = write_project(tmp_path, rows, detector(GOOD), target=LABEL)
    with open_services(load_project(root)) as services:
        assert run_training(services).version.metrics["roc_auc"] > 0.95


def test_too_few_rows_for_a_holdout_are_refused(tmp_path: Path) -> None:
    root = write_project(tmp_path, anomaly_rows(8), detector(GOOD), target=LABEL)
    with open_services(load_project(root)) as services, pytest.raises(Exception) as caught:
        run_training(services)
    assert "the snapshot has 8 row(s); training needs at least 10" in str(caught.value)


def test_live_feedback_of_flags_is_scored_as_the_holdout_is() -> None:
    rows = anomaly_rows()
    model = IsolationForest(n_estimators=25, contamination=0.05, random_state=0)
    model.fit(rows[features()])
    held = evaluate(model, rows[features()], rows[LABEL].to_numpy(), Task.ANOMALY)
    scores = anomaly_score(model, rows[features()])
    # as the monitor reads them back: flags and feedback as JSON values, the logged scores
    live = live_quality(Task.ANOMALY, rows[LABEL].tolist(), (scores > 0).tolist(), scores, None)
    labelled = {"roc_auc", "average_precision", "f1", "precision", "recall"}
    assert {name: live[name] for name in labelled} == {name: held[name] for name in labelled}
    assert live["rows"] == len(rows) and "excess_mass" not in live
    assert live_quality(Task.ANOMALY, ["odd"], [True], None, None) == {"rows": 1}
    assert live_quality(Task.CLUSTERING, [1], [1], None, None) == {"rows": 1}


def test_a_function_detector_refusing_missing_values_makes_its_features_not_nullable(
    tmp_path: Path,
) -> None:
    (tmp_path / "detect.py").write_text(
        "from sklearn.svm import OneClassSVM\n\n"
        "def fit(X, y, params):\n"
        "    assert y is None  # the label only scores the holdout\n"
        "    return OneClassSVM(nu=0.05).fit(X)\n"
    )
    model = {"task": "anomaly", "function": "detect:fit"}
    root = write_project(tmp_path, anomaly_rows(), model, target=LABEL)
    with open_services(load_project(root)) as services:
        result = run_training(services)
    inputs = result.version.signature["inputs"]
    assert [c["nullable"] for c in inputs] == [False, False, False]
    assert "made not nullable" in result.nullable_note
    assert result.version.metrics["roc_auc"] > 0.9
