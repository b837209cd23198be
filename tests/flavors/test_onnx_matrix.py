"""Converted graphs of numbers only take one [N, F] matrix; graphs of one input per feature,
as converted before, still load and answer the same."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from onnx import TensorProto, helper
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from refit.flavors._onnx_matrix import MATRIX_INPUT, take_matrix
from refit.flavors._onnx_names import input_names, rename_inputs
from refit.flavors._skl2onnx import fixed_converters
from refit.flavors.onnx import OnnxModel, OnnxPredictor, convert
from refit.flavors.sklearn import SklearnPredictor
from refit.predictions import columns_of
from refit.signature import Signature, signature_for
from refit.spec import DataSpec, ModelSpec, Task
from refit.train.pipeline import build_pipeline, feature_frame


def cancer_pipeline(estimator: str) -> tuple[Any, pd.DataFrame, Signature]:
    """A refit pipeline fitted on the 30 float features of the breast-cancer data, the rows,
    and its signature."""
    bunch = load_breast_cancer(as_frame=True)
    X = bunch.data.rename(columns=lambda c: c.replace(" ", "_"))
    features = {name: {"type": "float", "nullable": True} for name in X.columns}
    data = DataSpec.model_validate(
        {"source": {"kind": "csv", "path": "x.csv"}, "target": "y", "features": features}
    )
    spec = ModelSpec.model_validate({"task": "classification", "estimator": estimator})
    model = build_pipeline(data, spec).fit(feature_frame(X, data), bunch.target)
    return model, X, signature_for(model, data, Task.CLASSIFICATION, bunch.target)


def mixed_pipeline() -> tuple[Any, pd.DataFrame, Signature]:
    """A refit pipeline of float, int and bool features (numbers, no category), one of them
    named like the matrix input, with missing values in training."""
    r = np.random.default_rng(0)
    size = 400
    frame = pd.DataFrame(
        {
            "amount": r.normal(size=size),
            "age": pd.array(r.integers(18, 90, size), dtype="Int64"),
            "active": pd.array(r.random(size) < 0.5, dtype="boolean"),
            MATRIX_INPUT: r.normal(size=size),
        }
    )
    frame.loc[r.random(size) < 0.15, "amount"] = np.nan
    frame.loc[r.random(size) < 0.1, "active"] = pd.NA
    logit = frame["amount"].fillna(0).to_numpy() + frame[MATRIX_INPUT].to_numpy()
    y = np.where(logit + frame["active"].fillna(False).to_numpy(bool) > 0.5, "yes", "no")
    features = {
        "amount": {"type": "float", "nullable": True},
        "age": "int",
        "active": {"type": "bool", "nullable": True},
        MATRIX_INPUT: "float",
    }
    data = DataSpec.model_validate(
        {"source": {"kind": "csv", "path": "x.csv"}, "target": "y", "features": features}
    )
    spec = ModelSpec.model_validate(
        {"task": "classification", "estimator": "sklearn.linear_model.LogisticRegression"}
    )
    model = build_pipeline(data, spec).fit(feature_frame(frame, data), y)
    return model, feature_frame(frame, data), signature_for(model, data, Task.CLASSIFICATION, y)


def per_feature_graph(model: Any, sample: pd.DataFrame) -> bytes:
    """The graph `convert` made before the matrix input: one [N, 1] float input per feature."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    layout = [(str(c), FloatTensorType([None, 1])) for c in sample.columns]
    with fixed_converters():
        graph = to_onnx(model, initial_types=layout, options={"zipmap": False})
    rename_inputs(graph, input_names(list(sample.columns)))
    return bytes(graph.SerializeToString())


def with_missing(rows: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """`rows` with about one cell in five of the columns `names` missing."""
    gaps = rows.copy()
    for j, name in enumerate(names):
        blank = (np.arange(len(gaps)) + j) % 5 == 0
        gaps[name] = gaps[name].astype(object).where(~blank, None)
    return gaps


@pytest.mark.parametrize(
    "estimator",
    [
        "sklearn.ensemble.HistGradientBoostingClassifier",  # its Concat gives way to the matrix
        "sklearn.linear_model.LogisticRegression",
    ],
)
def test_a_pipeline_of_floats_takes_one_matrix_and_answers_as_before(estimator: str) -> None:
    model, X, signature = cancer_pipeline(estimator)
    graph = onnx.load_from_string(convert(model, X.head(50)))
    onnx.checker.check_model(graph, full_check=True)
    assert [i.name for i in graph.graph.input] == [MATRIX_INPUT]
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value") and dims[1].dim_value == 30

    new = OnnxModel(graph.SerializeToString(), signature.names, signature.output.classes)
    assert new.float32 and not new.texts
    assert [(name, j) for name, j, _, _ in new._feeds] == [(MATRIX_INPUT, None)]
    old = OnnxModel(per_feature_graph(model, X.head(50)), signature.names, [0, 1])
    assert len(old._feeds) == 30  # one input per feature: the layout of older versions

    rows = with_missing(X.sample(120, random_state=1), list(X.columns[::3]))
    columns = columns_of(rows, signature.names)  # None for a missing value
    served = OnnxPredictor(new, signature).predict(columns)
    before = OnnxPredictor(old, signature).predict(columns)
    native = SklearnPredictor(model, signature).predict(columns)
    assert served == before
    assert served.label_list() == native.label_list()
    assert served.probabilities is not None and native.probabilities is not None
    assert np.abs(served.probabilities - native.probabilities).max() <= 1e-5


def test_ints_bools_and_a_feature_named_like_the_matrix_go_through_one_split() -> None:
    model, X, signature = mixed_pipeline()
    data = convert(model, X.head(50))
    graph = onnx.load_from_string(data)
    onnx.checker.check_model(graph, full_check=True)
    assert [i.name for i in graph.graph.input] == [MATRIX_INPUT]
    assert [n.op_type for n in graph.graph.node].count("Split") == 1

    onnx_model = OnnxModel(data, signature.names, signature.output.classes)
    old = OnnxModel(per_feature_graph(model, X.head(50)), signature.names, ["no", "yes"])
    columns = columns_of(with_missing(X.tail(100), ["amount", "active"]), signature.names)
    served = OnnxPredictor(onnx_model, signature).predict(columns)
    assert served == OnnxPredictor(old, signature).predict(columns)
    assert served.label_list() == SklearnPredictor(model, signature).predict(columns).label_list()


def test_a_pipeline_with_a_category_keeps_one_input_per_feature() -> None:
    frame = pd.DataFrame({"amount": [1.0, 2.0, 3.0, 4.0], "plan": ["a", "b", "a", "b"]})
    data = DataSpec.model_validate(
        {
            "source": {"kind": "csv", "path": "x.csv"},
            "target": "y",
            "features": {"amount": "float", "plan": "category"},
        }
    )
    spec = ModelSpec.model_validate(
        {"task": "classification", "estimator": "sklearn.linear_model.LogisticRegression"}
    )
    model = build_pipeline(data, spec).fit(feature_frame(frame, data), ["n", "y", "y", "n"])
    graph = onnx.load_from_string(convert(model, feature_frame(frame, data)))
    assert [i.name for i in graph.graph.input] == ["amount", "plan"]


def test_a_bare_pipeline_of_one_matrix_is_converted_as_it_is() -> None:
    bunch = load_breast_cancer(as_frame=True)
    X = bunch.data.iloc[:, :4].to_numpy()  # no column names: a matrix, not named features
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, bunch.target)
    sample = pd.DataFrame(X[:20], columns=["a", "b", "c", "d"])
    graph = onnx.load_from_string(convert(model, sample))
    assert [i.name for i in graph.graph.input] == [MATRIX_INPUT]
    labels, _ = OnnxModel(graph.SerializeToString(), list(sample.columns), [0, 1]).run_frame(sample)
    assert labels.tolist() == model.predict(X[:20]).tolist()


def two_inputs(opset: int, first: str, second: str) -> Any:
    """A graph of two [N, 1] float inputs `a` and `b` answering `2a + b` (as a [N, 1] column):
    concatenated in the order `first`, `second`, then weighted."""
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in "ab"]
    weights = [2.0, 1.0] if first == "a" else [1.0, 2.0]
    nodes = [
        helper.make_node("Concat", [first, second], ["both"], axis=1),
        helper.make_node("MatMul", ["both", "w"], ["y"]),
    ]
    w = onnx.numpy_helper.from_array(np.array([[weights[0]], [weights[1]]], np.float32), "w")
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    graph = helper.make_graph(nodes, "weighted", inputs, [output], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize(("first", "second"), [("a", "b"), ("b", "a")])
def test_the_matrix_splits_into_the_inputs_at_any_opset(
    opset: int, first: str, second: str
) -> None:
    model = two_inputs(opset, first, second)
    take_matrix(model)
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    # In order, the Concat gives way to the matrix itself; out of order, the matrix is split.
    assert ops == (["MatMul"] if first == "a" else ["Split", "Concat", "MatMul"])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    matrix = np.array([[1.0, 10.0], [3.0, np.nan]], np.float32)
    (answer,) = session.run(None, {MATRIX_INPUT: matrix})
    assert answer[0].tolist() == [12.0] and np.isnan(answer[1, 0])
