"""`refit models register`: models trained elsewhere (ONNX, joblib, skops) scored, gated, served."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from refit.data.ingest import run_ingest
from refit.errors import ArtifactError, InputError, SpecError
from refit.examples import create_project
from refit.flavors import load_model
from refit.flavors.onnx import OnnxModel
from refit.parquet import read_snapshot
from refit.predictions import columns_of
from refit.project import load_project
from refit.registry import PRODUCTION
from refit.serve.predictor import load_predictor
from refit.services import Services, open_services
from refit.signature import Signature
from refit.spec import SPEC_FILE, ArtifactFormat
from refit.train.metrics import evaluate
from refit.train.pipeline import target_array
from refit.train.register import register_model_file
from refit.train.run import TrainResult, run_training
from refit.train.split import Split, split


def opened(root: Path) -> Services:
    return open_services(load_project(root))


@pytest.fixture
def cancer(tmp_path: Path) -> Path:
    """A breast-cancer project (labels "benign" / "malignant") with its first batch ingested."""
    root = create_project(tmp_path / "cancer", "breast-cancer")
    with opened(root) as services:
        assert run_ingest(services.project, services.registry, services.store).snapshot
    return root


def parts_of(root: Path) -> tuple[Split, list[str]]:
    """The split every run on the newest snapshot uses, and the features in spec order."""
    with opened(root) as services:
        spec = services.project.spec
        snapshot = services.registry.latest_snapshot(spec.name)
        assert snapshot is not None
        frame = read_snapshot(services.store, snapshot)
        return split(frame, spec.data, spec.model), list(spec.data.features)


def fitted_logistic(root: Path) -> tuple[Any, Split, list[str]]:
    parts, features = parts_of(root)
    X = parts.train[features].to_numpy(np.float64)
    y = parts.train["diagnosis"].to_numpy(object)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    return model, parts, features


def write_onnx(path: Path, model: Any, width: int, *, zipmap: bool = False, double: bool = False):
    kind = DoubleTensorType if double else FloatTensorType
    options = {"zipmap": zipmap} if hasattr(model, "predict_proba") else None
    onx = to_onnx(model, initial_types=[("X", kind([None, width]))], options=options)
    path.write_bytes(onx.SerializeToString())
    return path


def register(root: Path, path: Path, **kwargs: Any) -> TrainResult:
    with opened(root) as services:
        return register_model_file(services, path, **kwargs)


def softmax_graph(
    weights: np.ndarray, *, name: str = "features", softmax: bool = True, rows: int | None = None
) -> bytes:
    """A hand-made classifier: one [N, F] float input, one [N, classes] softmax output (or
    the logits, without the softmax); `rows` fixes N."""
    nodes = [helper.make_node("MatMul", [name, "W"], ["logits" if softmax else "p"])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["p"], axis=1))
    graph = helper.make_graph(
        nodes,
        "softmax",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [rows, weights.shape[0]])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, weights.shape[1]])],
        [numpy_helper.from_array(weights.astype(np.float32), "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


# --- ONNX classifiers -------------------------------------------------------------------------


def test_an_onnx_classifier_is_scored_gated_and_served_like_a_trained_model(
    cancer: Path, tmp_path: Path
) -> None:
    model, parts, features = fitted_logistic(cancer)
    path = write_onnx(tmp_path / "lr.onnx", model, len(features))

    result = register(cancer, path)

    version = result.version
    assert (version.flavor, version.format, version.params) == ("onnx", "onnx", {"file": "lr.onnx"})
    assert version.artifact_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert version.onnx == {"status": "the model is ONNX"}
    # Its metrics are the scikit-learn model's own on the same holdout (float32 aside).
    X = parts.holdout[features]
    expected = evaluate(
        _OnArrays(model),
        X,
        target_array(parts.holdout, _spec(cancer).data),
        _spec(cancer).model.task,
    )
    assert set(version.metrics) == set(expected) | {"roc_auc"}
    for name, value in expected.items():
        assert version.metrics[name] == pytest.approx(value, abs=1e-4), name
    assert version.signature["output"]["classes"] == ["benign", "malignant"]
    assert version.signature["output"]["probabilities"] is True
    assert result.promoted and "there is no production version" in result.decision.reason
    with opened(cancer) as services:
        run = services.registry.list_runs("breast-cancer")[0]
        assert (run.trigger, run.status) == ("register", "succeeded")
        loaded = load_predictor(version, services.store)
    assert loaded.runtime == "onnx" and loaded.onnx is None
    answer = loaded.predictor.predict(columns_of(X, features))
    assert answer.label_list() == model.predict(X.to_numpy(np.float64)).tolist()
    maps = answer.probability_maps()
    assert maps is not None
    got = np.array([[row["benign"], row["malignant"]] for row in maps])
    assert np.allclose(got, model.predict_proba(X.to_numpy(np.float64)), atol=1e-5)


class _OnArrays:
    """A model fitted on arrays, scored on frames (as refit scores it) without warnings."""

    def __init__(self, model: Any) -> None:
        self.model, self.classes_ = model, model.classes_

    def predict(self, X: pd.DataFrame) -> Any:
        return self.model.predict(X.to_numpy(np.float64))

    def predict_proba(self, X: pd.DataFrame) -> Any:
        return self.model.predict_proba(X.to_numpy(np.float64))


def _spec(root: Path) -> Any:
    return load_project(root).spec


def test_zipmap_outputs_and_double_inputs_are_read(cancer: Path, tmp_path: Path) -> None:
    model, parts, features = fitted_logistic(cancer)
    zipped = register(cancer, write_onnx(tmp_path / "z.onnx", model, len(features), zipmap=True))
    double = register(cancer, write_onnx(tmp_path / "d.onnx", model, len(features), double=True))
    for result in (zipped, double):
        assert result.version.metrics["roc_auc"] == pytest.approx(
            zipped.version.metrics["roc_auc"], abs=1e-6
        )
        with opened(cancer) as services:
            loaded = load_predictor(result.version, services.store)
        rows = parts.holdout[features].head(5)
        answer = loaded.predictor.predict(columns_of(rows, features))
        assert answer.label_list() == model.predict(rows.to_numpy(np.float64)).tolist()


def test_one_input_per_feature_named_like_it(cancer: Path, tmp_path: Path) -> None:
    # refit's own conversion of a pipeline that selects columns by name: one input each.
    with opened(cancer) as services:
        result = run_training(services)
        data = services.store.get(result.version.onnx["uri"], result.version.onnx["sha256"])
    (tmp_path / "per-feature.onnx").write_bytes(data)
    registered = register(cancer, tmp_path / "per-feature.onnx")
    assert registered.version.flavor == "onnx"
    assert registered.version.metrics["roc_auc"] == pytest.approx(
        result.version.metrics["roc_auc"], abs=1e-6
    )


def test_a_classifier_giving_only_probabilities_answers_the_most_probable_class(
    cancer: Path, tmp_path: Path
) -> None:
    parts, features = parts_of(cancer)
    weights = np.zeros((len(features), 2), np.float32)
    weights[features.index("mean_radius"), 1] = 1.0  # malignant grows with the radius
    weights[features.index("mean_texture"), 0] = 0.7
    path = tmp_path / "softmax.onnx"
    path.write_bytes(softmax_graph(weights))
    result = register(cancer, path)
    with opened(cancer) as services:
        loaded = load_predictor(result.version, services.store)
    rows = parts.holdout[features]
    answer = loaded.predictor.predict(columns_of(rows, features))
    logits = rows.to_numpy(np.float32) @ weights
    assert answer.label_list() == [["benign", "malignant"][i] for i in logits.argmax(axis=1)]
    assert result.version.signature["output"]["probabilities"] is True


def test_a_project_of_models_trained_elsewhere_registers_and_never_trains(
    cancer: Path, tmp_path: Path
) -> None:
    spec = yaml.safe_load((cancer / SPEC_FILE).read_text())
    spec["model"] = {"task": "classification", "trained_elsewhere": True}
    (cancer / SPEC_FILE).write_text(yaml.safe_dump(spec))
    model, _, features = fitted_logistic(cancer)
    result = register(cancer, write_onnx(tmp_path / "lr.onnx", model, len(features)))
    assert result.promoted and result.version.flavor == "onnx"
    with opened(cancer) as services, pytest.raises(SpecError, match="trained_elsewhere is true"):
        run_training(services)


def test_classes_name_the_order_of_the_probability_columns(cancer: Path, tmp_path: Path) -> None:
    model, _, features = fitted_logistic(cancer)
    path = write_onnx(tmp_path / "lr.onnx", model, len(features))
    with pytest.raises(ArtifactError, match="most probable class is not its label on"):
        register(cancer, path, classes=["malignant", "benign"])
    result = register(cancer, path, classes=["benign", "malignant"])
    assert result.version.signature["output"]["classes"] == ["benign", "malignant"]
    with pytest.raises(ArtifactError, match=r"should name each of the data's classes once"):
        register(cancer, path, classes=["benign", "sick"])
    with opened(cancer) as services:
        runs = services.registry.list_runs("breast-cancer")
    assert [r.status for r in runs].count("failed") == 2


def test_labels_that_are_not_the_data_classes_are_refused(cancer: Path, tmp_path: Path) -> None:
    parts, features = parts_of(cancer)
    X = parts.train[features].to_numpy(np.float32)
    y = (parts.train["diagnosis"] == "malignant").to_numpy(np.int64)  # 0/1, not the names
    path = write_onnx(
        tmp_path / "ints.onnx", LogisticRegression(max_iter=3000).fit(X, y), len(features)
    )
    with pytest.raises(ArtifactError, match="answers labels 0, 1 that are not the data's classes"):
        register(cancer, path)
    zipped = write_onnx(
        tmp_path / "zip.onnx", LogisticRegression(max_iter=3000).fit(X, y), 30, zipmap=True
    )
    with pytest.raises(ArtifactError, match="probabilities of classes 0, 1, not of the model's"):
        register(cancer, zipped)


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        (
            lambda n: softmax_graph(np.ones((n - 1, 2), np.float32)),
            "takes 29 columns, but the model has 30",
        ),
        (lambda n: _string_input(), "takes text for all the features; refit feeds text to a"),
        (lambda n: b"not onnx at all", "bad.onnx is not an ONNX model"),
    ],
)
def test_a_model_that_cannot_take_the_features_is_refused(
    cancer: Path, tmp_path: Path, graph: Any, message: str
) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(graph(30))
    with pytest.raises(ArtifactError, match=message):
        register(cancer, path)
    with opened(cancer) as services:
        assert services.registry.list_versions("breast-cancer") == []
        # A file that is not ONNX is refused before any run starts; the others, by a run.
        assert {r.status for r in services.registry.list_runs("breast-cancer")} <= {"failed"}


def test_scores_are_not_probabilities(cancer: Path, tmp_path: Path) -> None:
    weights = np.ones((30, 2), np.float32)
    (tmp_path / "logits.onnx").write_bytes(softmax_graph(weights, softmax=False))
    with pytest.raises(ArtifactError, match=r"are scores, not probabilities .* end the graph"):
        register(cancer, tmp_path / "logits.onnx")
    (tmp_path / "three.onnx").write_bytes(softmax_graph(np.ones((30, 3), np.float32)))
    with pytest.raises(ArtifactError, match=r"probabilities of shape \[\d+, 3\] for 2 classes"):
        register(cancer, tmp_path / "three.onnx")


def test_a_graph_of_a_fixed_batch_size_is_refused(cancer: Path, tmp_path: Path) -> None:
    (tmp_path / "one.onnx").write_bytes(softmax_graph(np.ones((30, 2), np.float32), rows=1))
    with pytest.raises(ArtifactError, match=r"takes exactly 1 row.* dynamic first dimension"):
        register(cancer, tmp_path / "one.onnx")


def test_weights_saved_beside_the_file_are_stored_inside_the_artifact(
    cancer: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, features = parts_of(cancer)
    weights = np.zeros((len(features), 2), np.float32)
    weights[features.index("mean_radius"), 1] = 1.0
    weights[features.index("mean_texture"), 0] = 0.7
    export = tmp_path / "export"
    export.mkdir()
    onnx.save(
        onnx.load_from_string(softmax_graph(weights)),
        str(export / "softmax.onnx"),
        save_as_external_data=True,
        location="softmax.onnx.data",
        size_threshold=0,
    )
    assert (export / "softmax.onnx.data").exists()
    monkeypatch.chdir(tmp_path)  # not where the weights are
    result = register(cancer, export / "softmax.onnx")
    with opened(cancer) as services:
        stored = services.store.get(result.version.artifact_uri, result.version.artifact_sha256)
        loaded = load_predictor(result.version, services.store)
    assert len(stored) > (export / "softmax.onnx").stat().st_size
    rows = parts.holdout[features]
    answer = loaded.predictor.predict(columns_of(rows, features))
    logits = rows.to_numpy(np.float32) @ weights
    assert answer.label_list() == [["benign", "malignant"][i] for i in logits.argmax(axis=1)]


def test_what_register_takes_from_the_project(cancer: Path, tmp_path: Path) -> None:
    model, _, features = fitted_logistic(cancer)
    path = write_onnx(tmp_path / "lr.onnx", model, len(features))
    with pytest.raises(ArtifactError, match=r"should name each .* not named: malignant"):
        register(cancer, path, classes=["benign"])
    import joblib

    joblib.dump(model, tmp_path / "lr.joblib")
    with pytest.raises(ArtifactError, match="--classes applies to an ONNX classifier only"):
        register(cancer, tmp_path / "lr.joblib", classes=["benign", "malignant"])
    spec = yaml.safe_load((cancer / SPEC_FILE).read_text())
    spec["model"]["format"] = "skops"
    (cancer / SPEC_FILE).write_text(yaml.safe_dump(spec))
    with pytest.raises(ArtifactError, match=r"lr\.joblib is a pickle, which runs code"):
        register(cancer, tmp_path / "lr.joblib")


def _string_input() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["out"])],
        "strings",
        [helper.make_tensor_value_info("s", TensorProto.STRING, [None, 30])],
        [helper.make_tensor_value_info("out", TensorProto.STRING, [None, 30])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_files_refit_cannot_register_are_named(cancer: Path, tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(
        ArtifactError,
        match=r"format of model\.pt: expected a file ending in \.joblib, \.skops, \.onnx",
    ):
        register(cancer, tmp_path / "model.pt")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ArtifactError, match=r"the model file .*empty\.onnx is empty"):
        register(cancer, tmp_path / "empty.onnx")
    with pytest.raises(ArtifactError, match=r"cannot read the model file .*missing\.onnx"):
        register(cancer, tmp_path / "missing.onnx")


# --- other formats, regression, the gate ------------------------------------------------------


def test_a_joblib_model_is_registered_and_converted_to_onnx_like_a_trained_one(
    cancer: Path, tmp_path: Path
) -> None:
    import joblib

    parts, features = parts_of(cancer)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(parts.train[features], parts.train["diagnosis"])
    joblib.dump(model, tmp_path / "lr.joblib")
    result = register(cancer, tmp_path / "lr.joblib")
    assert (result.version.flavor, result.version.format) == ("sklearn", "joblib")
    assert result.version.onnx is not None and result.version.onnx["status"] == "ok"
    joblib.dump({"not": "a model"}, tmp_path / "dict.joblib")
    with pytest.raises(ArtifactError, match=r"dict\.joblib holds a dict, not a model"):
        register(cancer, tmp_path / "dict.joblib")


def test_an_onnx_regressor_is_scored_with_regression_metrics(tmp_path: Path) -> None:
    root = create_project(tmp_path / "diabetes", "diabetes")
    with opened(root) as services:
        run_ingest(services.project, services.registry, services.store)
    spec = yaml.safe_load((root / SPEC_FILE).read_text())
    del spec["data"]["features"]["sex"]
    (root / SPEC_FILE).write_text(yaml.safe_dump(spec))
    parts, features = parts_of(root)
    target = _spec(root).data.target
    model = LinearRegression().fit(parts.train[features].to_numpy(np.float32), parts.train[target])
    result = register(root, write_onnx(tmp_path / "lin.onnx", model, len(features)))
    assert set(result.version.metrics) == {"rmse", "mae", "r2"}
    expected = model.predict(parts.holdout[features].to_numpy(np.float32))
    rmse = float(np.sqrt(np.mean((expected - parts.holdout[target].to_numpy()) ** 2)))
    assert result.version.metrics["rmse"] == pytest.approx(rmse, rel=1e-4)
    with opened(root) as services:
        loaded = load_predictor(result.version, services.store)
    answer = loaded.predictor.predict(columns_of(parts.holdout[features].head(3), features))
    assert np.allclose(answer.labels, expected[:3], rtol=1e-5)


def test_an_onnx_model_with_a_category_takes_it_as_text(tmp_path: Path) -> None:
    root = create_project(tmp_path / "diabetes", "diabetes")  # "sex" is a category
    with opened(root) as services:
        run_ingest(services.project, services.registry, services.store)
        trained = run_training(services).version
        assert trained.onnx is not None and trained.onnx["status"] == "ok"
        data = services.store.get(trained.onnx["uri"], trained.onnx["sha256"])
    (tmp_path / "diabetes.onnx").write_bytes(data)
    result = register(root, tmp_path / "diabetes.onnx")
    assert result.version.metrics["rmse"] == pytest.approx(trained.metrics["rmse"], rel=1e-5)
    parts, features = parts_of(root)
    rows = parts.holdout[features].head(4)
    with opened(root) as services:
        loaded = load_predictor(result.version, services.store)
    columns = columns_of(rows, features)
    columns[features.index("sex")][0] = None  # a missing category
    answer = loaded.predictor.predict(columns)
    assert loaded.runtime == "onnx" and len(answer) == 4


def test_an_onnx_champion_is_scored_by_the_gate(cancer: Path, tmp_path: Path) -> None:
    model, _, features = fitted_logistic(cancer)
    first = register(cancer, write_onnx(tmp_path / "lr.onnx", model, len(features)))
    with opened(cancer) as services:
        trained = run_training(services)
        assert services.registry.alias_version("breast-cancer", PRODUCTION) in (1, 2)
        row = services.registry.get_version("breast-cancer", first.version.version)
        champion = load_model(
            services.store.get(row.artifact_uri, row.artifact_sha256),
            ArtifactFormat.ONNX,
            "onnx",
            Signature.from_dict(row.signature),
        )
    assert trained.decision.champion_value == pytest.approx(first.version.metrics["roc_auc"])
    assert "could not be scored" not in trained.decision.reason
    assert list(champion.classes_) == ["benign", "malignant"]


def test_an_integer_input_refuses_a_missing_value_by_name() -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["n"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["f", "f"], ["y"]),
        ],
        "ints",
        [helper.make_tensor_value_info("n", TensorProto.INT64, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
    )
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(data))
    model = OnnxModel(data, ["n"])
    values, _ = model.run(np.array([[2.0], [3.0]]))
    assert values.tolist() == [4.0, 9.0]
    with pytest.raises(InputError, match="'n': is missing, and the model takes it as an integer"):
        model.run(np.array([[2.0], [np.nan]]))
