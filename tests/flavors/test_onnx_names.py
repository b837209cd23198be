"""Feature names of any shape through ONNX: valid input names, and served by ONNX Runtime."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

from refit.errors import ArtifactError
from refit.flavors import load_model
from refit.flavors._onnx_names import input_names, rename_inputs
from refit.flavors.onnx import OnnxModel, convert
from refit.flavors.sklearn import SklearnPredictor
from refit.predictions import columns_of
from refit.project import load_project
from refit.serve.predictor import load_predictor
from refit.services import open_services
from refit.signature import Signature
from refit.spec import ArtifactFormat, DataSpec, ModelSpec, Task
from refit.train.onnx_export import export_onnx
from refit.train.pipeline import build_pipeline, feature_frame
from refit.train.run import run_training
from wine import TARGET, wine_project, wine_rows

ODD = ["mean radius", "pH.level", "température", "1st", "x+y", "a_b", "a b", "a.b", "a/b"]


def test_every_feature_gets_a_distinct_valid_onnx_name() -> None:
    names = input_names(ODD)
    assert names == [
        "mean_radius",
        "pH_level",
        "temp_rature",
        "_1st",
        "x_y",
        "a_b",  # already an identifier: its own name
        "a_b_2",
        "a_b_3",
        "a_b_4",
    ]
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) for n in names)
    assert input_names(["mean_radius", "x"]) == ["mean_radius", "x"]


def test_a_pipeline_of_odd_feature_names_converts_and_agrees() -> None:
    r = np.random.default_rng(0)
    frame = pd.DataFrame({name: r.normal(size=300) for name in ODD})
    frame["a.b"] = r.choice(["red", "white"], 300).astype(object)  # a category among them
    y = np.where(frame["mean radius"] + frame["température"] > 0, "yes", "no").astype(object)
    features = {name: "float" for name in ODD} | {"a.b": "category"}
    data = DataSpec.model_validate(
        {"source": {"kind": "csv", "path": "x.csv"}, "target": "y", "features": features}
    )
    spec = ModelSpec.model_validate(
        {"task": "classification", "estimator": "sklearn.linear_model.LogisticRegression"}
    )
    model = build_pipeline(data, spec).fit(feature_frame(frame[:200], data), y[:200])
    graph = onnx.load_from_string(convert(model, frame[200:]))
    assert [i.name for i in graph.graph.input] == input_names(ODD)
    onnx.checker.check_model(graph)

    export = export_onnx(model, frame[200:], Task.CLASSIFICATION, ODD)
    assert export.status == "ok", export.status
    assert export.data is not None
    labels, proba = OnnxModel(export.data, ODD, ["no", "yes"]).run_frame(frame[200:])
    assert labels.tolist() == model.predict(frame[200:]).tolist()
    assert np.abs(proba - model.predict_proba(frame[200:])).max() < 1e-5


def test_the_wine_features_are_served_by_onnx_and_answer_as_the_model(tmp_path: Path) -> None:
    root = wine_project(tmp_path / "wine")
    with open_services(load_project(root)) as services:
        version = run_training(services).version
        assert version.onnx is not None and version.onnx["status"] == "ok", version.onnx
        loaded = load_predictor(version, services.store)
        model_data = services.store.get(version.artifact_uri, version.artifact_sha256)
    assert "od280/od315_of_diluted_wines" in loaded.signature.names
    assert loaded.runtime == "onnx" and loaded.onnx is None
    native = SklearnPredictor(
        load_model(model_data, ArtifactFormat(version.format)),
        Signature.from_dict(version.signature),
    )
    rows = wine_rows().drop(columns=TARGET)
    columns = columns_of(rows, list(rows.columns))
    served, expected = loaded.predictor.predict(columns), native.predict(columns)
    assert served.label_list() == expected.label_list()
    served_maps, expected_maps = served.probability_maps(), expected.probability_maps()
    assert served_maps is not None and expected_maps is not None
    for got, want in zip(served_maps, expected_maps, strict=True):
        assert got.keys() == want.keys()
        assert max(abs(got[k] - want[k]) for k in got) <= 1e-5


def concat_graph(names: list[str]) -> bytes:
    """A graph of one [N, 1] float input per name, answering their sum."""
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in names]
    nodes = [
        helper.make_node("Concat", names, ["all"], axis=1),
        helper.make_node("ReduceSum", ["all", "axes"], ["y"], keepdims=0),
    ]
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    graph = helper.make_graph(nodes, "sum", inputs, [output], [axes])
    opsets = [helper.make_opsetid("", 13)]
    return bytes(helper.make_model(graph, opset_imports=opsets).SerializeToString())


def test_a_graph_takes_each_feature_by_its_name_or_its_onnx_name() -> None:
    features = ["alcohol", "od280/od315_of_diluted_wines", "température"]
    # As skl2onnx names them: unicode kept, "/" replaced.
    model = OnnxModel(
        concat_graph(["température", "alcohol", "od280_od315_of_diluted_wines"]), features
    )
    values, _ = model.run(np.array([[1.0, 10.0, 100.0]]))
    assert values.tolist() == [111.0]

    with pytest.raises(ArtifactError) as caught:
        OnnxModel(concat_graph(["alcohol", "od280_od315", "extra"]), features)
    assert str(caught.value).endswith(
        "no input for the features 'od280/od315_of_diluted_wines' (or "
        "'od280_od315_of_diluted_wines'), 'température' (or 'temp_rature'); "
        "inputs that are no feature: 'od280_od315', 'extra'"
    )


def test_renaming_moves_a_value_that_already_has_the_new_name_out_of_the_way() -> None:
    import onnxruntime as ort

    nodes = [
        helper.make_node("Mul", ["x+y", "x+y"], ["x_y"]),  # an inner value named "x_y"
        helper.make_node("Add", ["x_y", "x+y"], ["out"]),
    ]
    inputs = [helper.make_tensor_value_info("x+y", TensorProto.FLOAT, [None, 1])]
    output = helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 1])
    graph = helper.make_graph(nodes, "square", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    rename_inputs(model, input_names(["x+y"]))
    assert [i.name for i in model.graph.input] == ["x_y"]
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x_y": np.array([[3.0]], np.float32)})[0].tolist() == [[12.0]]
