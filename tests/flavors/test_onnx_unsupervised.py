"""Clusterings and anomaly detectors, served natively and through ONNX Runtime: what each
answers (cluster ids and distances, a mixture's probabilities, a flag and a score), the parity
check that decides between them, and the fall-back when it fails."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.covariance import EllipticEnvelope
from sklearn.datasets import make_blobs
from sklearn.ensemble import IsolationForest
from sklearn.impute import SimpleImputer
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from refit.errors import ArtifactError
from refit.flavors.onnx import OnnxModel, OnnxPredictor
from refit.flavors.sklearn import SklearnPredictor
from refit.predictions import NonFiniteOutputError, columns_of
from refit.signature import ANOMALY_SCORE, DISTANCES, InputColumn, Output, Signature
from refit.spec import FeatureType, Task
from refit.train.onnx_export import export_onnx

FEATURES = ["a", "b", "c", "d"]


def blobs(rows: int = 240, seed: int = 0, offset: float = 0.0) -> pd.DataFrame:
    X, _ = make_blobs(rows, n_features=len(FEATURES), centers=3, random_state=seed)
    return pd.DataFrame(X + offset, columns=FEATURES)


def signature(output: Output) -> Signature:
    return Signature([InputColumn(name, FeatureType.FLOAT) for name in FEATURES], output)


def clustering(k: int = 3, distances: bool = True, probabilities: bool = False) -> Output:
    scores = DISTANCES if distances else None
    return Output(Task.CLUSTERING, "int", list(range(k)), probabilities, scores)


ANOMALY = Output(Task.ANOMALY, "bool", None, False, ANOMALY_SCORE)


def kmeans(X: pd.DataFrame) -> Pipeline:
    return make_pipeline(StandardScaler(), KMeans(3, n_init=3, random_state=0)).fit(X)


def test_a_kmeans_pipeline_answers_cluster_ids_and_euclidean_distances() -> None:
    X = blobs()
    model = kmeans(X)
    answer = SklearnPredictor(model, signature(clustering())).predict(columns_of(X, FEATURES))
    assert answer.labels.tolist() == model.predict(X).tolist()
    assert answer.scores is not None and answer.scores.shape == (len(X), 3)
    assert np.array_equal(answer.scores, model.transform(X).round(6))
    assert answer.probabilities is None and answer.classes == ("0", "1", "2")
    # Each row's cluster is its nearest centre.
    assert answer.scores.argmin(axis=1).tolist() == answer.labels.tolist()


def test_a_mixture_answers_its_memberships_as_probabilities() -> None:
    X = blobs()
    model = make_pipeline(StandardScaler(), GaussianMixture(3, random_state=0)).fit(X)
    output = clustering(distances=False, probabilities=True)
    answer = SklearnPredictor(model, signature(output)).predict(columns_of(X, FEATURES))
    assert answer.labels.tolist() == model.predict(X).tolist()
    assert answer.probabilities is not None
    assert np.array_equal(answer.probabilities, model.predict_proba(X).round(6))
    assert answer.scores is None


@pytest.mark.parametrize(
    "detector",
    [
        IsolationForest(n_estimators=50, random_state=0),
        OneClassSVM(nu=0.1),
        LocalOutlierFactor(novelty=True),
        EllipticEnvelope(random_state=0),
    ],
    ids=lambda d: type(d).__name__,
)
def test_a_detector_flags_the_rows_its_predict_calls_anomalies(detector: Any) -> None:
    X = blobs()
    model = make_pipeline(StandardScaler(), detector).fit(X)
    probe = pd.concat([X, blobs(60, seed=1, offset=4.0)], ignore_index=True)
    answer = SklearnPredictor(model, signature(ANOMALY)).predict(columns_of(probe, FEATURES))
    assert answer.scores is not None
    assert np.array_equal(answer.scores, -model.decision_function(probe))
    assert answer.labels.dtype == bool
    assert answer.labels.tolist() == (model.predict(probe) == -1).tolist()
    assert 0 < answer.labels.sum() < len(probe)  # some flagged, not all


class NaNScores:
    """A detector whose score is NaN on rows of a negative first feature."""

    def decision_function(self, X: pd.DataFrame) -> np.ndarray[Any, Any]:
        first = X.iloc[:, 0].to_numpy()
        return np.where(first < 0, np.nan, first)


def test_a_score_that_is_no_number_is_refused_for_its_rows() -> None:
    rows = pd.DataFrame([[1.0, 0, 0, 0], [-1.0, 0, 0, 0], [2.0, 0, 0, 0]], columns=FEATURES)
    predictor = SklearnPredictor(NaNScores(), signature(ANOMALY))
    with pytest.raises(NonFiniteOutputError) as caught:
        predictor.predict(columns_of(rows, FEATURES))
    assert caught.value.rows == [1]
    assert caught.value.what == "NaN or an infinity among its scores"


CONVERTED = [
    (lambda: KMeans(3, n_init=3, random_state=0), clustering()),
    (lambda: MiniBatchKMeans(3, n_init=3, random_state=0), clustering()),
    (lambda: GaussianMixture(3, random_state=0), clustering(distances=False, probabilities=True)),
    (lambda: IsolationForest(n_estimators=50, random_state=0), ANOMALY),
    (lambda: OneClassSVM(nu=0.1), ANOMALY),
    (lambda: LocalOutlierFactor(novelty=True), ANOMALY),
]


@pytest.mark.parametrize(
    ("make", "output"), CONVERTED, ids=[type(make()).__name__ for make, _ in CONVERTED]
)
def test_a_converted_model_passes_parity_and_answers_as_native_serving_does(
    make: Any, output: Output
) -> None:
    X = blobs()
    # Nullable features, as refit's pipelines impute them.
    model = make_pipeline(SimpleImputer(add_indicator=True), StandardScaler(), make()).fit(X)
    export = export_onnx(model, X.head(120), Task(output.task), FEATURES, output)
    assert export.status == "ok", export.status
    assert export.data is not None and export.checked_rows > 120  # with gaps and probes
    graph = OnnxModel(export.data, FEATURES)
    assert [i.name for i in graph.session.get_inputs()] == ["features"]  # one [N, F] matrix
    # The served answers, on rows the check never saw, some of them far from every cluster.
    rows = pd.concat([X.tail(60), blobs(40, seed=2, offset=3.0)], ignore_index=True)
    columns = columns_of(rows, FEATURES)
    native = SklearnPredictor(model, signature(output)).predict(columns)
    onnx = OnnxPredictor(graph, signature(output)).predict(columns)
    assert onnx.labels.dtype == native.labels.dtype
    assert onnx.labels.tolist() == native.labels.tolist()
    assert onnx.classes == native.classes
    for mine, theirs in ((onnx.scores, native.scores), (onnx.probabilities, native.probabilities)):
        assert (mine is None) == (theirs is None)
        if mine is not None and theirs is not None:
            assert mine.shape == theirs.shape
            assert np.allclose(mine, theirs, rtol=1e-4, atol=1e-5)


def test_a_kmeans_graph_gives_distances_not_their_squares() -> None:
    X = blobs()
    model = kmeans(X)
    export = export_onnx(model, X, Task.CLUSTERING, [], clustering())
    assert export.data is not None, export.status
    _, scores = OnnxModel(export.data, FEATURES).frame_results(X)
    assert np.allclose(scores, model.transform(X), rtol=1e-4)
    assert not np.allclose(scores, model.transform(X) ** 2, rtol=1e-2)


def test_a_clustering_that_disagrees_in_float32_is_served_natively_with_the_reason() -> None:
    # Points a millionth apart, a million from the origin: float32 cannot tell them apart.
    X = pd.DataFrame(1e6 + blobs().to_numpy() * 1e-3, columns=FEATURES)
    model = KMeans(3, n_init=3, random_state=0).fit(X)
    export = export_onnx(model, X, Task.CLUSTERING, [], clustering())
    assert export.status.startswith("parity failed: "), export.status
    assert "holdout rows" in export.status
    assert export.data is None


def test_a_detector_skl2onnx_cannot_convert_is_served_natively_with_the_reason() -> None:
    X = blobs()
    model = make_pipeline(StandardScaler(), EllipticEnvelope(random_state=0)).fit(X)
    export = export_onnx(model, X, Task.ANOMALY, [], ANOMALY)
    assert export.status.startswith("unsupported: "), export.status
    assert "EllipticEnvelope" in export.status
    assert export.data is None


def test_a_graph_without_the_distances_it_promises_is_refused() -> None:
    X = blobs()
    model = KMeans(3, n_init=3, random_state=0).fit(X)
    export = export_onnx(model, X, Task.CLUSTERING, [], clustering())
    assert export.data is not None, export.status
    with pytest.raises(ArtifactError, match="4 clusters"):
        OnnxPredictor(OnnxModel(export.data, FEATURES), signature(clustering(k=4)))
