"""A clustering and an anomaly detector over the breast-cancer example's 30 features, registered
as versions of its project the way training registers them (artifact, signature, the ONNX
file when it passed its parity check), for the server's tests.

    version = register(services, kmeans(features(services)), CLUSTERING, onnx=True)
"""

from __future__ import annotations

import uuid
from typing import Any

import pandas as pd
from sklearn.cluster import KMeans
from sklearn.ensemble import IsolationForest
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from refit.examples import example_rows
from refit.flavors import save_model
from refit.registry import ModelVersionRow
from refit.services import Services
from refit.signature import ANOMALY_SCORE, DISTANCES, Output, Signature
from refit.spec import ArtifactFormat, Task
from refit.train.onnx_export import export_onnx

NAME = "breast-cancer"
CLUSTERING = Output(Task.CLUSTERING, "int", [0, 1, 2], False, DISTANCES)
ANOMALY = Output(Task.ANOMALY, "bool", None, False, ANOMALY_SCORE)


def features(services: Services) -> pd.DataFrame:
    """The example's feature columns, in the signature's order."""
    names = Signature.from_dict(services.registry.get_version(NAME, 1).signature).names
    return example_rows(NAME)[names].astype("float64")


def kmeans(X: pd.DataFrame) -> Pipeline:
    steps = (SimpleImputer(add_indicator=True), StandardScaler())
    return make_pipeline(*steps, KMeans(3, n_init=3, random_state=0)).fit(X)


def isolation_forest(X: pd.DataFrame) -> Pipeline:
    detector = IsolationForest(n_estimators=60, contamination=0.1, random_state=0)
    return make_pipeline(SimpleImputer(add_indicator=True), detector).fit(X)


def register(services: Services, model: Any, output: Output, *, onnx: bool) -> int:
    """A new version of `model` (a copy of v1's row with its own artifact and signature),
    converted to ONNX and checked (`onnx`), or served natively: the version."""
    registry, store = services.registry, services.store
    first = registry.get_version(NAME, 1)
    signature = Signature(Signature.from_dict(first.signature).inputs, output)
    columns = {c.key: getattr(first, c.key) for c in ModelVersionRow.__table__.columns}
    for generated in ("id", "version", "run_id", "created_at"):
        columns.pop(generated)
    ref = store.put(save_model(model, ArtifactFormat.JOBLIB), kind="models", suffix=".joblib")
    converted: dict[str, Any] = {"status": "not converted (a test's version)"}
    if onnx:
        X = features(services)
        nullable = [c.name for c in signature.inputs if c.nullable]
        export = export_onnx(model, X.head(120), output.task, nullable, output)
        assert export.status == "ok" and export.data is not None, export.status
        graph = store.put(export.data, kind="models", suffix=".onnx")
        converted = {"status": "ok", "uri": graph.uri, "sha256": graph.sha256, "size": graph.size}
    columns.update(
        task=output.task.value,
        format=ArtifactFormat.JOBLIB.value,
        artifact_uri=ref.uri,
        artifact_sha256=ref.sha256,
        artifact_size=ref.size,
        signature=signature.to_dict(),
        onnx=converted,
    )
    run = registry.start_run(uuid.uuid4().hex, NAME, first.snapshot_id, "test")
    return registry.register_version(run.id, ModelVersionRow(**columns)).version
