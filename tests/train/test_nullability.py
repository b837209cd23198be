"""The signature tells the truth: a nullable feature the model cannot take missing is made not
nullable at registration, so a null there is a 422 naming it, never a failure or a NaN."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import refit.train.onnx_export as onnx_export
from refit.errors import TrainingError
from refit.flavors.onnx import convert
from refit.parquet import read_snapshot
from refit.project import load_project
from refit.serve.app import create_app
from refit.serve.state import ServerState
from refit.services import open_services
from refit.signature import InputColumn, Output, Signature
from refit.spec import FeatureType, Task
from refit.train.nullability import probe_rows, truthful
from refit.train.onnx_export import export_onnx
from refit.train.register import register_model_file
from refit.train.split import split
from wine import TARGET, wine_project, wine_rows

pytestmark = pytest.mark.anyio

FEATURES = list(wine_rows().drop(columns=TARGET).columns)


def signature_of(names: list[str], task: Task = Task.CLASSIFICATION) -> Signature:
    output = (
        Output(task, "string", ["class_0", "class_1", "class_2"], probabilities=True)
        if task is Task.CLASSIFICATION
        else Output(task, "float")
    )
    return Signature([InputColumn(n, FeatureType.FLOAT) for n in names], output)


class Counted:
    """A fitted model that counts the batches it is asked about."""

    def __init__(self, model: Any) -> None:
        self.model, self.classes_, self.calls = model, model.classes_, 0

    def predict(self, X: pd.DataFrame) -> Any:
        self.calls += 1
        return self.model.predict(X)

    def predict_proba(self, X: pd.DataFrame) -> Any:
        return self.model.predict_proba(X)


def wine_xy() -> tuple[pd.DataFrame, pd.Series]:
    rows = wine_rows()
    return rows[FEATURES], rows[TARGET]


async def test_a_pipeline_without_an_imputer_answers_a_null_with_422_naming_it(
    tmp_path: Path,
) -> None:
    root = wine_project(tmp_path / "wine")
    with open_services(load_project(root)) as services:
        spec = services.project.spec
        snapshot = services.registry.latest_snapshot(spec.name)
        assert snapshot is not None
        parts = split(read_snapshot(services.store, snapshot), spec.data, spec.model)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(parts.train[FEATURES], parts.train[TARGET])
    joblib.dump(model, tmp_path / "pipe.joblib")

    with open_services(load_project(root)) as services:
        result = register_model_file(services, tmp_path / "pipe.joblib")
        version = result.version
        assert [i["nullable"] for i in version.signature["inputs"]] == [False] * len(FEATURES)
        assert "'alcohol'" in result.nullable_note and "'od280/od315_of_diluted_wines'" in (
            result.nullable_note
        )
        assert "Input X contains NaN" in result.nullable_note
        assert "SimpleImputer" in result.nullable_note
        assert version.onnx is not None and version.onnx["status"] == "ok", version.onnx
        assert result.promoted

        state = ServerState.open(services)
        assert await state.follower.check()
        record = json.loads(wine_rows()[FEATURES].iloc[:1].to_json(orient="records"))[0]
        transport = httpx.ASGITransport(create_app(state))
        async with httpx.AsyncClient(transport=transport, base_url="http://refit") as client:
            ok = await client.post("/predict", json=record)
            refused = await client.post("/predict", json={**record, "alcohol": None})
    assert ok.status_code == 200, ok.text
    assert all(np.isfinite(v) for v in ok.json()["probabilities"].values())
    assert refused.status_code == 422, refused.text
    assert [p["field"] for p in refused.json()["error"]["problems"]] == ["alcohol"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_one_call_probes_every_feature_of_a_model_that_takes_them_missing() -> None:
    X, y = wine_xy()
    model = Counted(
        make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression()).fit(X, y)
    )
    signature, note = truthful(model, signature_of(FEATURES), X)
    assert model.calls == 1
    assert all(column.nullable for column in signature.inputs) and note == ""


def test_only_the_features_the_model_refuses_missing_are_made_not_nullable() -> None:
    X, y = wine_xy()
    imputed, passed = FEATURES[:10], FEATURES[10:]  # hue, od280/od315..., proline: no imputer
    features = ColumnTransformer(
        [("imputed", SimpleImputer(), imputed), ("passed", "passthrough", passed)]
    )
    pipeline = make_pipeline(features, StandardScaler(), LogisticRegression(max_iter=2000))
    model = Counted(pipeline.fit(X, y))
    signature, note = truthful(model, signature_of(FEATURES), X)
    assert [c.name for c in signature.inputs if not c.nullable] == passed
    assert "any of 'hue', 'od280/od315_of_diluted_wines', 'proline' is missing" in note
    assert model.calls <= 2 * len(FEATURES) - 1  # halves of the failing batches, not 2^n


def test_a_model_that_answers_nan_for_a_missing_feature_has_it_not_nullable() -> None:
    class Doubles:  # a user's model that passes a missing value through
        def predict(self, X: pd.DataFrame) -> Any:
            return X["alcohol"].to_numpy(float) * 2 + X["hue"].fillna(0).to_numpy(float)

    X, _ = wine_xy()
    signature, note = truthful(Doubles(), signature_of(FEATURES, Task.REGRESSION), X)
    assert [c.name for c in signature.inputs if not c.nullable] == ["alcohol"]
    assert "the model answers NaN or infinity when 'alcohol' is missing" in note


def test_a_refused_feature_the_holdout_lacks_fails_with_how_to_fix_it() -> None:
    X, y = wine_xy()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    holdout = X.copy()
    holdout.loc[holdout.index[:4], "ash"] = np.nan
    with pytest.raises(TrainingError) as caught:
        truthful(model, signature_of(FEATURES), holdout)
    message = str(caught.value)
    assert "holdout rows lack some: 'ash' in 4" in message
    assert "Input X contains NaN" in message and "SimpleImputer" in message


def test_the_probe_rows_each_lack_one_feature_in_the_dtype_a_server_gives() -> None:
    frame = pd.DataFrame(
        {
            "x": [np.nan, 1.5, 2.5],
            "n": pd.array([1, 2, 3], dtype="Int64"),
            "b": pd.array([True, False, True], dtype="boolean"),
            "c": pd.Series(["u", "v", "w"], dtype=object),
        }
    )
    rows = probe_rows(frame, ["x", "n", "b", "c"])
    assert rows.isna().to_numpy().tolist() == np.eye(4, dtype=bool).tolist()
    assert rows.iloc[0, 1:].tolist() == [2, False, "v"]  # the first complete row
    assert [str(t) for t in rows.dtypes] == ["float64", "Int64", "boolean", "object"]


def test_an_onnx_graph_that_answers_nan_on_an_accepted_missing_value_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    X, _ = wine_xy()
    y = X["proline"] / 100
    model = make_pipeline(SimpleImputer(), StandardScaler(), Ridge()).fit(X, y)
    # The same model without its imputer: equal on complete rows, NaN where a value is missing.
    twin = make_pipeline(StandardScaler(), Ridge()).fit(X, y)
    monkeypatch.setattr(onnx_export, "convert", lambda _model, sample: convert(twin, sample))
    export = export_onnx(model, X.head(60), Task.REGRESSION, FEATURES)
    assert export.status.startswith("parity failed: ONNX answers NaN or infinity on "), (
        export.status
    )
    assert export.data is None
    # Where no feature may be missing, the same graph answers as the model on every input.
    assert export_onnx(model, X.head(60), Task.REGRESSION, []).status == "ok"


def test_a_users_onnx_graph_that_answers_nan_has_its_features_not_nullable(
    tmp_path: Path,
) -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    root = wine_project(tmp_path / "wine")
    X, y = wine_xy()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X.values, y)
    graph = to_onnx(
        model, initial_types=[("X", FloatTensorType([None, len(FEATURES)]))], target_opset=None
    )
    (tmp_path / "lr.onnx").write_bytes(graph.SerializeToString())
    with open_services(load_project(root)) as services:
        result = register_model_file(services, tmp_path / "lr.onnx")
    assert [i["nullable"] for i in result.version.signature["inputs"]] == [False] * len(FEATURES)
    assert "the model answers NaN or infinity when any of 'alcohol', " in result.nullable_note
