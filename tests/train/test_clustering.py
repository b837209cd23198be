"""Clustering trains, is scored in the evaluation space of its rows, and is gated against
production on the same holdout rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import Birch, KMeans
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from refit._metrics_unsupervised import SILHOUETTE_ROWS, WORST
from refit.data.ingest import run_ingest
from refit.errors import SpecError
from refit.flavors import load_model
from refit.parquet import read_snapshot
from refit.project import load_project
from refit.services import open_services
from refit.signature import DISTANCES, Output, signature_for
from refit.spec import ArtifactFormat, DataSpec, Task
from refit.train.metrics import evaluate, score
from refit.train.run import run_training
from refit.train.split import split
from refit.train.unsupervised import evaluation_space, search_curve
from unlabelled import CLUSTERS, blob_rows, set_model, write_project

KMEANS = "sklearn.cluster.KMeans"


def kmeans(k: int) -> dict[str, Any]:
    return {
        "task": "clustering",
        "estimator": KMEANS,
        "params": {"n_clusters": k, "n_init": 4, "random_state": 0},
    }


def data_spec() -> DataSpec:
    return DataSpec.model_validate(
        {"source": {"kind": "csv", "path": "x"}, "features": dict.fromkeys("xyz", "float")}
    )


@pytest.mark.parametrize(
    "estimator",
    [
        "sklearn.cluster.DBSCAN",
        "sklearn.cluster.HDBSCAN",
        "sklearn.cluster.OPTICS",
        "sklearn.cluster.AgglomerativeClustering",
        "sklearn.cluster.SpectralClustering",
    ],
)
def test_a_clusterer_that_cannot_assign_new_rows_is_refused_before_any_work(
    tmp_path: Path, estimator: str
) -> None:
    root = write_project(tmp_path, blob_rows(), {"task": "clustering", "estimator": estimator})
    with open_services(load_project(root)) as services:
        with pytest.raises(SpecError) as caught:
            run_training(services)
        assert services.registry.list_versions("unsup") == []
    message = str(caught.value)
    name = estimator.rpartition(".")[2]
    assert f"{name} cannot assign new rows to its clusters (it has no predict)" in message
    assert "such as KMeans, MiniBatchKMeans" in message


@pytest.mark.parametrize(
    ("task", "estimator", "kind"),
    [
        ("clustering", "sklearn.linear_model.LogisticRegression", "a classifier"),
        ("clustering", "sklearn.ensemble.IsolationForest", "an anomaly detector"),
        ("classification", KMEANS, "a clusterer"),
        ("regression", "sklearn.mixture.GaussianMixture", "a mixture model (a clusterer)"),
    ],
)
def test_an_estimator_of_another_kind_than_the_task_is_refused(
    tmp_path: Path, task: str, estimator: str, kind: str
) -> None:
    rows = blob_rows().assign(label=lambda f: (f["x"] > 0).astype(int))
    target = None if task == "clustering" else "label"
    root = write_project(
        tmp_path,
        rows if target else blob_rows(),
        {"task": task, "estimator": estimator},
        target=target,
    )
    with open_services(load_project(root)) as services, pytest.raises(SpecError) as caught:
        run_training(services)
    assert f"got {estimator!r}: {kind}, but model.task is {task}" in str(caught.value)


@pytest.mark.parametrize(
    ("estimator", "probabilities", "scores"),
    [(KMeans(4, n_init=2, random_state=0), False, DISTANCES), (GaussianMixture(4), True, None)],
)
def test_the_signature_of_a_clustering_lists_its_cluster_ids(
    estimator: Any, probabilities: bool, scores: str | None
) -> None:
    model = make_pipeline(StandardScaler(), estimator).fit(blob_rows())
    signature = signature_for(model, data_spec(), Task.CLUSTERING)
    assert signature.output == Output(Task.CLUSTERING, "int", [0, 1, 2, 3], probabilities, scores)


def test_a_birch_without_a_cluster_count_lists_the_subclusters_it_assigns() -> None:
    model = Birch(n_clusters=None, threshold=0.5).fit(blob_rows())
    output = signature_for(model, data_spec(), Task.CLUSTERING).output
    assert output.classes == sorted(np.unique(model.predict(blob_rows())).tolist())
    assert output.scores is None  # Birch has transform, but no cluster centres


def test_silhouette_picks_the_number_of_blobs_in_the_evaluation_space() -> None:
    rows = blob_rows()
    # Unscaled models see the raw columns; the criterion is the same rows' standard encoding.
    scores = {
        k: score(
            KMeans(k, n_init=4, random_state=0).fit(rows), rows, None, Task.CLUSTERING, "silhouette"
        )
        for k in range(2, 9)
    }
    assert max(scores, key=scores.__getitem__) == CLUSTERS
    best_db = min(
        range(2, 9),
        key=lambda k: score(
            KMeans(k, n_init=4, random_state=0).fit(rows),
            rows,
            None,
            Task.CLUSTERING,
            "davies_bouldin",
        ),
    )
    assert best_db == CLUSTERS


def test_the_evaluation_space_depends_on_the_rows_only() -> None:
    rows = blob_rows().assign(colour=["red", "blue", None, "red"] * 100)
    space = evaluation_space(rows)
    assert space.shape == (400, 3 + 3)  # 3 numbers standardised; red, blue and missing
    assert np.allclose(space[:, :3].mean(axis=0), 0) and np.allclose(space[:, :3].std(axis=0), 1)
    scaled = rows.assign(x=rows["x"] * 1000 + 5)  # a unit changes nothing
    assert np.allclose(evaluation_space(scaled), space)


def test_rows_in_one_cluster_score_the_worst_value_and_the_metrics_say_so() -> None:
    rows = blob_rows()
    model = KMeans(1, n_init=1, random_state=0).fit(rows)
    metrics = evaluate(model, rows, None, Task.CLUSTERING)
    assert metrics == {**WORST, "clusters": 1}


def test_the_silhouette_of_many_rows_is_that_of_a_seeded_sample() -> None:
    rows = blob_rows(SILHOUETTE_ROWS * 2)
    model = KMeans(CLUSTERS, n_init=1, random_state=0).fit(rows)
    first = score(model, rows, None, Task.CLUSTERING, "silhouette")
    assert score(model, rows, None, Task.CLUSTERING, "silhouette") == first
    assert 0.5 < first < 1


def test_a_search_over_k_gives_its_curve_as_metrics(tmp_path: Path) -> None:
    spec = load_project(write_project(tmp_path, blob_rows(), kmeans(2), ingest=False)).spec
    tuning = {
        "metric": "silhouette",
        "trials": [
            {"number": 0, "params": {"n_clusters": 3}, "score": 0.5, "state": "complete"},
            {"number": 1, "params": {"n_clusters": 2}, "score": 0.4, "state": "complete"},
            {"number": 2, "params": {"n_clusters": 4}, "score": None, "state": "failed: x"},
        ],
    }
    assert search_curve(spec, tuning) == {
        "silhouette@n_clusters=2": 0.4,
        "silhouette@n_clusters=3": 0.5,
    }
    assert search_curve(spec, None) == {}
    detector = {"task": "anomaly", "estimator": "sklearn.ensemble.IsolationForest"}
    other = load_project(write_project(tmp_path / "a", blob_rows(), detector, ingest=False)).spec
    assert search_curve(other, tuning) == {}  # a clustering's search only


def test_a_clustering_splits_without_a_target_and_trains(tmp_path: Path) -> None:
    root = write_project(tmp_path, blob_rows(), kmeans(CLUSTERS), gate={"min": 0.5})
    with open_services(load_project(root)) as services:
        result = run_training(services)
        parts = split(
            read_snapshot(services.store, services.registry.latest_snapshot("unsup")),  # type: ignore[arg-type]
            services.project.spec.data,
            services.project.spec.model,
        )
    assert result.promoted
    version = result.version
    assert version.metric == "silhouette" and version.metrics["silhouette"] > 0.6
    assert version.metrics["clusters"] == CLUSTERS
    assert version.timings["split"] == "random"
    assert len(parts.holdout) == version.timings["holdout_rows"]
    assert version.signature["output"]["classes"] == [0, 1, 2, 3]
    assert version.reference is not None and "labels" not in version.reference
    assert set(version.reference["predictions"]) == {0, 1, 2, 3}


def test_the_gate_judges_champion_and_challenger_on_the_same_rows(tmp_path: Path) -> None:
    root = write_project(tmp_path, blob_rows(), kmeans(CLUSTERS))
    with open_services(load_project(root)) as services:
        first = run_training(services)
    assert first.promoted
    blob_rows(200).to_csv(root / "data" / "incoming" / "batch-0002.csv", index=False)
    set_model(root, params={"n_clusters": 2, "n_init": 4, "random_state": 0})
    with open_services(load_project(root)) as services:
        run_ingest(services.project, services.registry, services.store)
        worse = run_training(services)
        spec = services.project.spec
        snapshot = services.registry.get_snapshot(worse.version.snapshot_id, "unsup")
        holdout = split(read_snapshot(services.store, snapshot), spec.data, spec.model).holdout
        data = services.store.get(first.version.artifact_uri, first.version.artifact_sha256)
        champion = load_model(data, ArtifactFormat.JOBLIB)
    # production scored on the challenger's holdout (which grew), by the same criterion
    assert len(holdout) > first.version.timings["holdout_rows"]
    expected = score(champion, holdout[list("xyz")], None, Task.CLUSTERING, "silhouette")
    decision = worse.decision
    assert not worse.promoted
    assert decision.champion_value == pytest.approx(expected)
    assert decision.champion_value != pytest.approx(first.version.metrics["silhouette"])
    assert decision.candidate_value == worse.version.metrics["silhouette"]
    assert decision.candidate_value < decision.champion_value
    assert "not better than production v1" in decision.reason


def test_a_better_k_takes_production_from_a_worse_one(tmp_path: Path) -> None:
    root = write_project(tmp_path, blob_rows(), kmeans(2))
    with open_services(load_project(root)) as services:
        assert run_training(services).promoted
    set_model(root, params={"n_clusters": CLUSTERS, "n_init": 4, "random_state": 0})
    with open_services(load_project(root)) as services:
        better = run_training(services)
    assert better.promoted and better.decision.previous_version == 1


def test_a_function_model_clusters_too(tmp_path: Path) -> None:
    (tmp_path / "grouping.py").write_text(
        "from sklearn.cluster import KMeans\n\n"
        "def fit(X, y, params):\n"
        "    assert y is None\n"
        "    return KMeans(params['k'], n_init=2, random_state=0).fit(X)\n"
    )
    model = {"task": "clustering", "function": "grouping:fit", "params": {"k": CLUSTERS}}
    root = write_project(tmp_path, blob_rows(), model)
    with open_services(load_project(root)) as services:
        result = run_training(services)
    assert result.promoted and result.version.metrics["clusters"] == CLUSTERS


def test_the_holdout_of_a_clustering_is_the_rows_hash_not_a_label(tmp_path: Path) -> None:
    rows = blob_rows()
    root = write_project(tmp_path, rows, kmeans(CLUSTERS), ingest=False)
    spec = load_project(root).spec
    first = split(rows, spec.data, spec.model)
    again = split(
        pd.concat([rows, blob_rows(50, seed=3)], ignore_index=True), spec.data, spec.model
    )
    kept = again.holdout.merge(rows, how="inner")
    assert len(kept) == len(first.holdout)  # each old row kept its side


def test_the_default_search_finds_the_blobs_k_and_records_its_curve(tmp_path: Path) -> None:
    model = {"task": "clustering", "estimator": KMEANS, "params": {"n_init": 4, "random_state": 0}}
    root = write_project(tmp_path, blob_rows(), model)
    with open_services(load_project(root)) as services:
        result = run_training(services)
    version = result.version
    assert version.params["n_clusters"] == CLUSTERS
    assert version.metrics["clusters"] == CLUSTERS
    curve = {
        int(key.rpartition("=")[2]): value for key, value in version.metrics.items() if "@" in key
    }
    assert sorted(curve) == list(range(2, 11))
    assert max(curve, key=curve.__getitem__) == CLUSTERS
    assert version.tuning is not None and version.tuning["metric"] == "silhouette"
