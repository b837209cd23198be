import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from refit.errors import StoreError
from refit.signature import InputColumn, Output, Signature, sample_frame, signature_for
from refit.spec import DataSpec, FeatureType, ModelSpec, Task
from refit.train.pipeline import fit_model


def data_spec() -> DataSpec:
    return DataSpec.model_validate(
        {
            "source": {"kind": "csv", "path": "data/*.csv"},
            "target": "churned",
            "features": {
                "tenure": {"type": "float", "min": 0},
                "seats": {"type": "int", "nullable": False, "min": 1, "max": 2},
                "annual": "bool",
                "plan": {"type": "category", "values": ["basic", "pro"]},
                "region": "category",
            },
        }
    )


def training_frame(rows: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    tenure = rng.uniform(0, 10, rows)
    return pd.DataFrame(
        {
            "tenure": tenure,
            "seats": rng.integers(1, 3, rows),
            "annual": pd.array(rng.random(rows) < 0.5, dtype="boolean"),
            "plan": pd.Series(rng.choice(["basic", "pro"], rows), dtype=object),
            "region": pd.Series(rng.choice(["eu", "us"], rows), dtype=object),
            "churned": tenure < 5,
        }
    )


@pytest.fixture
def fitted(tmp_path: Path) -> Any:
    """A pipeline fitted on `training_frame` to predict a bool target."""
    model = ModelSpec.model_validate(
        {"task": "classification", "estimator": "sklearn.linear_model.LogisticRegression"}
    )
    return fit_model(training_frame(), data_spec(), model, tmp_path)


def test_classifier_signature_round_trips_through_json(fitted: Any) -> None:
    signature = signature_for(fitted, data_spec(), Task.CLASSIFICATION, training_frame()["churned"])
    raw = json.loads(json.dumps(signature.to_dict()))
    assert raw["output"] == {
        "task": "classification",
        "type": "bool",
        "classes": [False, True],
        "probabilities": True,
        "scores": None,
    }
    assert raw["inputs"][1] == {
        "name": "seats",
        "type": "int",
        "nullable": False,
        "values": None,
        "min": 1.0,
        "max": 2.0,
    }
    assert raw["inputs"][3]["values"] == ["basic", "pro"]
    assert raw["inputs"][4]["values"] is None
    assert Signature.from_dict(raw) == signature


@pytest.mark.parametrize(
    ("classes", "kind", "as_json"),
    [
        (np.array([1, 2, 3]), "int", [1, 2, 3]),
        (np.array(["no", "yes"], dtype=object), "string", ["no", "yes"]),
        (np.array([0.0, 1.0]), "float", [0.0, 1.0]),
    ],
)
def test_output_type_follows_the_classes(classes: Any, kind: str, as_json: list[Any]) -> None:
    class Model:
        classes_ = classes

        def predict(self, X: Any) -> Any:
            return np.zeros(len(X))

    signature = signature_for(Model(), data_spec(), Task.CLASSIFICATION, classes)
    assert signature.output == Output(Task.CLASSIFICATION, kind, as_json, probabilities=False)
    assert json.loads(json.dumps(signature.to_dict()))["output"]["classes"] == as_json


def test_classifier_without_classes_takes_its_type_from_the_target() -> None:
    y = pd.Series([1, 2, 1], dtype="Int64")
    signature = signature_for(object(), data_spec(), Task.CLASSIFICATION, y)
    assert signature.output == Output(Task.CLASSIFICATION, "int")


def test_regression_output_is_a_float() -> None:
    signature = signature_for(object(), data_spec(), Task.REGRESSION, np.arange(3))
    assert signature.output == Output(Task.REGRESSION, "float")
    assert Signature.from_dict(signature.to_dict()) == signature


def test_sample_frame_is_typed_valid_and_warms_the_model_up(fitted: Any) -> None:
    signature = signature_for(fitted, data_spec(), Task.CLASSIFICATION, np.array([True]))
    sample = sample_frame(signature, n=4)
    assert list(sample.columns) == signature.names
    assert [str(t) for t in sample.dtypes] == ["float64", "int64", "boolean", "object", "object"]
    assert sample["tenure"].min() >= 0
    assert sample["seats"].between(1, 2).all()
    assert set(sample["plan"]) == {"basic", "pro"}
    assert sample.notna().all().all()
    assert fitted.predict_proba(sample).shape == (4, 2)


def test_sample_frame_of_a_nullable_int_is_int64_nullable() -> None:
    signature = Signature(
        [InputColumn("n", FeatureType.INT, max=-3.5)], Output(Task.REGRESSION, "float")
    )
    sample = sample_frame(signature)
    assert str(sample["n"].dtype) == "Int64"
    assert sample["n"].tolist() == [-4, -4, -4]


@pytest.mark.parametrize(
    "raw",
    [
        {"inputs": []},
        {"inputs": [{"name": "x", "type": "complex"}], "output": {"task": "regression"}},
        {"inputs": [], "output": {"task": "regression", "type": "tensor"}},
        {"inputs": [{"name": "x", "type": "float", "colour": 1}], "output": {}},
    ],
)
def test_a_malformed_signature_is_a_store_error(raw: dict[str, Any]) -> None:
    with pytest.raises(StoreError, match="stored model signature"):
        Signature.from_dict(raw)


def test_requiring_makes_the_named_inputs_not_nullable_and_keeps_the_rest() -> None:
    signature = Signature(
        [InputColumn("a", FeatureType.FLOAT), InputColumn("b", FeatureType.INT, min=0)],
        Output(Task.REGRESSION, "float"),
    )
    required = signature.requiring({"b"})
    assert [(c.name, c.nullable) for c in required.inputs] == [("a", True), ("b", False)]
    assert required.inputs[1].min == 0 and required.output == signature.output
    assert Signature.from_dict(json.loads(json.dumps(required.to_dict()))) == required
