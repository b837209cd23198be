"""A real `refit serve` answering a clustering, then an anomaly detector promoted in its place,
through ONNX Runtime, on refit's routes, V2 and /invocations."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from refit.project import load_project
from refit.services import open_services
from refit.train.promotion import promote_version
from serving import make_project, serving
from unsupervised import ANOMALY, CLUSTERING, NAME, features, isolation_forest, kmeans, register


def test_a_server_answers_cluster_ids_then_anomaly_flags_on_every_protocol(
    tmp_path: Path,
) -> None:
    root = make_project(tmp_path / "p")
    with open_services(load_project(root)) as services:
        X = features(services)
        clusterer, detector = kmeans(X), isolation_forest(X)
        clusters = register(services, clusterer, CLUSTERING, onnx=True)
        flags = register(services, detector, ANOMALY, onnx=True)
        promote_version(services.registry, NAME, clusters, "test", store=services.store)
        rows = X.iloc[:20]
        records = list(rows.to_dict("records"))
        names = list(rows.columns)
        tensor = {
            "name": "x",
            "shape": [len(rows), len(names)],
            "datatype": "FP64",
            "data": rows.to_numpy().tolist(),
        }
        split = {"dataframe_split": {"columns": names, "data": tensor["data"]}}
        with serving(root, 1) as server:
            server.converge(clusters, workers=1, streak=2)
            assert server.served() is not None and server.served()["runtime"] == "onnx"
            batch = server.http.post("/predict/batch", json={"records": records}).json()
            v2 = server.http.post(f"/v2/models/{NAME}/infer", json={"inputs": [tensor]}).json()
            mlflow = server.http.post("/invocations", json=split).json()["predictions"]
            ids = clusterer.predict(rows).tolist()
            distances = clusterer.transform(rows)
            assert batch["predictions"] == ids
            got = np.array([[d[k] for k in ("0", "1", "2")] for d in batch["distances"]])
            assert np.allclose(got, distances, rtol=1e-4, atol=1e-5)
            outputs = {o["name"]: o["data"] for o in v2["outputs"]}
            assert outputs["predict"] == ids
            assert np.allclose(np.reshape(outputs["distances"], (-1, 3)), distances, rtol=1e-4)
            assert [row["prediction"] for row in mlflow] == ids

            promote_version(services.registry, NAME, flags, "test", store=services.store)
            server.converge(flags, workers=1, streak=2)
            batch = server.http.post("/predict/batch", json={"records": records}).json()
            v2 = server.http.post(f"/v2/models/{NAME}/infer", json={"inputs": [tensor]}).json()
            mlflow = server.http.post("/invocations", json=split).json()["predictions"]
            scores = -detector.decision_function(rows)
            flagged = (detector.predict(rows) == -1).tolist()
            assert batch["predictions"] == flagged
            assert np.allclose(batch["scores"], scores, rtol=1e-4, atol=1e-5)
            outputs = {o["name"]: o["data"] for o in v2["outputs"]}
            assert outputs["predict"] == flagged
            assert np.allclose(outputs["score"], scores, rtol=1e-4, atol=1e-5)
            assert [row["prediction"] for row in mlflow] == flagged
            assert np.allclose([row["score"] for row in mlflow], scores, rtol=1e-4, atol=1e-5)
