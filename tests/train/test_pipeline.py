import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from refit.errors import SpecError, TrainingError
from refit.spec import DataSpec, ModelSpec, Task
from refit.train.pipeline import (
    build_pipeline,
    feature_frame,
    fit_model,
    resolve_estimator,
    resolve_function,
    target_array,
    wants_scaling,
)
from refit.values import MISSING_CATEGORY

FEATURES = {
    "amount": "float",
    "visits": "int",
    "count": {"type": "int", "nullable": False},
    "member": "bool",
    "plan": "category",
}


def data_spec(**features: Any) -> DataSpec:
    return DataSpec.model_validate(
        {
            "source": {"kind": "csv", "path": "data/*.csv"},
            "target": "label",
            "features": features or FEATURES,
        }
    )


def model_spec(task: str = "classification", **fields: Any) -> ModelSpec:
    if "function" not in fields:
        fields.setdefault("estimator", "sklearn.linear_model.LogisticRegression")
    return ModelSpec.model_validate({"task": task, **fields})


def validated_frame(rows: int = 80, seed: int = 0) -> pd.DataFrame:
    """Rows as validation hands them over, with missing values in every nullable column."""
    rng = np.random.default_rng(seed)
    amount = rng.normal(50, 10, rows)
    member = rng.random(rows) < 0.5
    plan = rng.choice(["basic", "pro", "team"], rows)
    label = np.where((amount > 50) | member, "yes", "no")
    frame = pd.DataFrame(
        {
            "amount": amount,
            "visits": pd.array(rng.integers(0, 9, rows), dtype="Int64"),
            "count": rng.integers(0, 5, rows).astype("int64"),
            "member": pd.array(member, dtype="boolean"),
            "plan": pd.Series(plan, dtype=object),
            "label": pd.Series(label, dtype=object),
        }
    )
    frame.loc[0, "amount"] = np.nan
    frame.loc[1, "visits"] = pd.NA
    frame.loc[2, "member"] = pd.NA
    frame.loc[3, "plan"] = None
    frame.loc[4, "plan"] = np.nan
    return frame


@pytest.fixture
def module_writer(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Writes a uniquely named module into tmp_path and returns its name."""
    names: list[str] = []

    def write(source: str) -> str:
        name = f"user_model_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


# --- resolve_estimator ------------------------------------------------------------------------


def test_resolve_estimator_builds_the_class_with_params() -> None:
    estimator = resolve_estimator(
        "sklearn.ensemble.RandomForestClassifier", {"n_estimators": 7}, Task.CLASSIFICATION
    )
    assert type(estimator).__name__ == "RandomForestClassifier"
    assert estimator.n_estimators == 7


@pytest.mark.parametrize(
    ("path", "params", "task", "message"),
    [
        (
            "sklearn.ensemble.RandomForestClasifier",
            {},
            None,
            "model.estimator: got 'sklearn.ensemble.RandomForestClasifier': "
            "module sklearn.ensemble has no attribute RandomForestClasifier; "
            "did you mean 'RandomForestClassifier'?",
        ),
        (
            "sklearn.ensembl.RandomForestClassifier",
            {},
            None,
            "model.estimator: got 'sklearn.ensembl.RandomForestClassifier': "
            "no module named sklearn.ensembl; did you mean 'sklearn.ensemble'?",
        ),
        (
            "sklearn.ensemble.RandomForestClassifier",
            {"max_iters": 3},
            None,
            "model.params: RandomForestClassifier does not accept 'max_iters'",
        ),
        (
            "sklearn.ensemble.HistGradientBoostingClassifier",
            {"max_iters": 3},
            None,
            "model.params: HistGradientBoostingClassifier does not accept 'max_iters'; "
            "did you mean 'max_iter'?",
        ),
        (
            "sklearn.ensemble.HistGradientBoostingClassifier",
            {"max_iter": -1},
            None,
            "model.params: The 'max_iter' parameter of HistGradientBoostingClassifier must be",
        ),
        (
            "sklearn.ensemble.BaggingClassifier",
            {"estimator__C": 1.0},
            None,
            "model.params: BaggingClassifier does not accept 'estimator__C'",
        ),
        (
            "sklearn.preprocessing.StandardScaler",
            {},
            None,
            "model.estimator: got 'sklearn.preprocessing.StandardScaler': "
            "expected an estimator with fit and predict methods",
        ),
        (
            "sklearn.base.clone",
            {},
            None,
            "model.estimator: got 'sklearn.base.clone': expected a class, got an object of type "
            "builtins.function",
        ),
        (
            "sklearn.ensemble.RandomForestRegressor",
            {},
            Task.CLASSIFICATION,
            "model.estimator: got 'sklearn.ensemble.RandomForestRegressor': a regressor, "
            "but model.task is classification",
        ),
        (
            "sklearn.linear_model.LogisticRegression",
            {},
            Task.REGRESSION,
            "a classifier, but model.task is regression",
        ),
    ],
)
def test_resolve_estimator_names_the_field_and_the_problem(
    path: str, params: dict[str, Any], task: Task | None, message: str
) -> None:
    with pytest.raises(SpecError) as caught:
        resolve_estimator(path, params, task)
    assert message in str(caught.value)


# --- resolve_function -------------------------------------------------------------------------


def test_resolve_function_imports_from_the_project_root(
    tmp_path: Path, module_writer: Callable[[str], str]
) -> None:
    name = module_writer("def fit(X, y, params):\n    return 'fitted'\n")
    function = resolve_function(f"{name}:fit", tmp_path)
    assert function(None, None, {}) == "fitted"
    assert str(tmp_path) not in sys.path


@pytest.mark.parametrize(
    ("source", "attribute", "message"),
    [
        ("x = 1\n", "fit", "has no function fit"),
        ("fit = 3\n", "fit", "expected a function, got an object of type builtins.int"),
        ("1 / 0\n", "fit", "importing {name} failed: ZeroDivisionError: division by zero"),
        ("import not_a_module_anywhere\n", "fit", "No module named 'not_a_module_anywhere'"),
    ],
)
def test_resolve_function_errors_name_model_function(
    tmp_path: Path,
    module_writer: Callable[[str], str],
    source: str,
    attribute: str,
    message: str,
) -> None:
    name = module_writer(source)
    with pytest.raises(SpecError) as caught:
        resolve_function(f"{name}:{attribute}", tmp_path)
    assert str(caught.value).startswith(f"model.function: got '{name}:{attribute}': ")
    assert message.format(name=name) in str(caught.value)


def test_resolve_function_reports_a_missing_module(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"model.function: got 'nowhere_mod:fit': no module named"):
        resolve_function("nowhere_mod:fit", tmp_path)


# --- build_pipeline ---------------------------------------------------------------------------


def test_scaling_only_for_estimators_that_need_it() -> None:
    linear = build_pipeline(data_spec(), model_spec())
    trees = build_pipeline(
        data_spec(), model_spec(estimator="sklearn.ensemble.HistGradientBoostingClassifier")
    )
    assert "scale" in linear.named_steps["features"].transformers[0][1].named_steps
    assert "scale" not in trees.named_steps["features"].transformers[0][1].named_steps
    assert not wants_scaling(trees.named_steps["estimator"])


def test_build_pipeline_refuses_a_function_model() -> None:
    with pytest.raises(SpecError, match=r"model\.estimator: required"):
        build_pipeline(data_spec(), model_spec(function="mod:fit"))


# --- fit_model --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("estimator", "params"),
    [
        ("sklearn.linear_model.LogisticRegression", {}),
        ("sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 20}),
    ],
)
def test_pipeline_fits_every_feature_type_and_predicts_awkward_rows(
    tmp_path: Path, estimator: str, params: dict[str, Any]
) -> None:
    model = fit_model(
        validated_frame(), data_spec(), model_spec(estimator=estimator, params=params), tmp_path
    )
    assert list(model.feature_names_in_) == list(FEATURES)
    assert set(model.classes_) == {"no", "yes"}
    # Unknown categories, missing values everywhere, plain numpy dtypes, a column order
    # that differs from the spec, and an extra column the pipeline drops.
    awkward = pd.DataFrame(
        {
            "plan": pd.Series(["enterprise", None, np.nan, "pro"], dtype=object),
            "amount": [np.nan, 40.0, 60.0, 55.0],
            "visits": pd.array([None, 2, 3, 4], dtype="Int64"),
            "count": [0, 1, 2, 3],
            "member": pd.array([None, True, False, True], dtype="boolean"),
            "extra": ["x", "y", "z", "w"],
        }
    )
    assert set(model.predict(awkward)) <= {"no", "yes"}
    numpy_dtypes = awkward.assign(
        visits=[1.0, np.nan, 3.0, 4.0], member=np.array([True, False, True, True])
    )
    proba = model.predict_proba(numpy_dtypes)
    assert proba.shape == (4, 2)
    assert np.allclose(proba.sum(axis=1), 1.0)


def test_categories_missing_in_training_become_the_missing_category(tmp_path: Path) -> None:
    model = fit_model(validated_frame(), data_spec(), model_spec(), tmp_path)
    encoder = model.named_steps["features"].named_transformers_["category"].named_steps["encode"]
    assert list(encoder.categories_[0]) == [MISSING_CATEGORY, "basic", "pro", "team"]


def test_fit_errors_become_training_errors_with_their_cause(tmp_path: Path) -> None:
    frame = validated_frame().assign(label=np.linspace(0, 1, 80))
    with pytest.raises(TrainingError) as caught:
        fit_model(frame, data_spec(), model_spec(), tmp_path)
    assert str(caught.value).startswith("fitting LogisticRegression failed: ValueError: ")
    assert "continuous" in str(caught.value)
    assert isinstance(caught.value.__cause__, ValueError)


def test_function_gets_the_raw_frame_and_params(
    tmp_path: Path, module_writer: Callable[[str], str]
) -> None:
    name = module_writer(
        """
        from sklearn.dummy import DummyClassifier

        def fit(X, y, params):
            assert list(X.columns) == ["amount", "visits", "count", "member", "plan"]
            assert str(X["visits"].dtype) == "Int64" and str(X["member"].dtype) == "boolean"
            assert y.name == "label"
            return DummyClassifier(strategy=params["strategy"]).fit(X[["count"]], y)
        """
    )
    spec = model_spec(function=f"{name}:fit", params={"strategy": "most_frequent"})
    model = fit_model(validated_frame(), data_spec(), spec, tmp_path)
    assert model.predict(pd.DataFrame({"count": [1, 2]})).shape == (2,)


@pytest.mark.parametrize(
    ("body", "message", "cause"),
    [
        ("return None", "returned None; expected a fitted model with a predict method", None),
        (
            "return [1, 2]",
            "returned an object of type builtins.list; expected a fitted model",
            None,
        ),
        ("raise KeyError('plan')", "raised KeyError: 'plan'", KeyError),
        ("return 1 / 0", "raised ZeroDivisionError: division by zero", ZeroDivisionError),
    ],
)
def test_function_failures_become_training_errors(
    tmp_path: Path,
    module_writer: Callable[[str], str],
    body: str,
    message: str,
    cause: type[BaseException] | None,
) -> None:
    name = module_writer(f"def fit(X, y, params):\n    {body}\n")
    with pytest.raises(TrainingError) as caught:
        fit_model(validated_frame(), data_spec(), model_spec(function=f"{name}:fit"), tmp_path)
    assert str(caught.value).startswith(f"model.function {name}:fit {message}")
    if cause is None:
        assert caught.value.__cause__ is None
    else:
        assert isinstance(caught.value.__cause__, cause)


# --- frames -----------------------------------------------------------------------------------


def test_feature_frame_gives_canonical_dtypes() -> None:
    frame = validated_frame().assign(
        plan=pd.Series(["a", pd.NA, None, np.nan] + ["b"] * 76, dtype=object)
    )
    features = feature_frame(frame, data_spec())
    assert list(features.columns) == list(FEATURES)
    assert [str(t) for t in features.dtypes] == ["float64"] * 4 + ["object"]
    assert features["visits"].isna().tolist()[:3] == [False, True, False]
    assert features["member"].isna().tolist()[:3] == [False, False, True]
    assert features["plan"].head(4).tolist()[0] == "a"
    assert all(v is np.nan for v in features["plan"].iloc[1:4])


def test_feature_frame_refuses_text_in_a_numeric_column() -> None:
    frame = validated_frame().astype({"amount": object})
    frame.loc[5, "amount"] = "lots"
    with pytest.raises(TrainingError, match=r"feature 'amount' \(float\) holds a value"):
        feature_frame(frame, data_spec())


def test_missing_columns_are_named() -> None:
    with pytest.raises(TrainingError, match="the snapshot has no column 'plan'"):
        feature_frame(validated_frame().drop(columns="plan"), data_spec())


def test_target_array_converts_nullable_dtypes_and_refuses_missing_targets() -> None:
    spec = data_spec()
    frame = validated_frame(rows=10)
    assert target_array(frame.assign(label=pd.array([1] * 10, dtype="Int64")), spec).dtype == (
        np.int64
    )
    assert target_array(frame.assign(label=pd.array([True] * 10, dtype="boolean")), spec).dtype == (
        bool
    )
    with pytest.raises(TrainingError, match="the target 'label' has 1 missing value"):
        target_array(frame.assign(label=pd.Series([None] + ["yes"] * 9, dtype=object)), spec)
