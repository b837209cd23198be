from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from refit.errors import ArtifactError
from refit.flavors.sklearn import is_trusted, load, save
from refit.spec import ArtifactFormat, DataSpec, ModelSpec
from refit.train.pipeline import build_pipeline


class OwnModel:
    """A user's model class, as a `model.function` might return."""

    def fit(self, X: Any, y: Any) -> "OwnModel":
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X: Any) -> Any:
        return np.full(len(X), self.mean_)


def data() -> tuple[pd.DataFrame, Any]:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    return X.iloc[:150, :6], y.iloc[:150]


def scaled_logistic() -> Any:
    """A LogisticRegression pipeline fitted on a slice of the breast cancer data."""
    X, y = data()
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)


@pytest.mark.parametrize("fmt", list(ArtifactFormat))
def test_round_trip_predicts_the_same(fmt: ArtifactFormat) -> None:
    X, y = data()
    codes = pd.DataFrame({"c": np.where(y == 1, "a", "b")})
    cases = [
        (scaled_logistic(), X),
        (HistGradientBoostingClassifier(max_iter=20).fit(X, y), X),
        (
            make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression()).fit(
                codes, y
            ),
            pd.DataFrame({"c": ["a", "b", "zz"]}),
        ),
    ]
    for model, probe in cases:
        blob = save(model, fmt)
        assert isinstance(blob, bytes)
        loaded = load(blob, fmt)
        assert np.array_equal(loaded.predict_proba(probe), model.predict_proba(probe))


@pytest.mark.parametrize("fmt", list(ArtifactFormat))
def test_a_refit_pipeline_with_every_feature_type_round_trips(fmt: ArtifactFormat) -> None:
    data = DataSpec.model_validate(
        {
            "source": {"kind": "csv", "path": "x.csv"},
            "target": "y",
            "features": {"f": "float", "i": "int", "b": "bool", "c": "category"},
        }
    )
    model = ModelSpec.model_validate(
        {"task": "classification", "estimator": "sklearn.ensemble.RandomForestClassifier"}
    )
    frame = pd.DataFrame(
        {
            "f": [0.5, np.nan, 2.5, 3.0, 1.0, 0.0],
            "i": pd.array([1, None, 3, 4, 5, 6], dtype="Int64"),
            "b": pd.array([True, None, False, True, False, True], dtype="boolean"),
            "c": pd.Series(["a", None, "b", np.nan, "a", "b"], dtype=object),
        }
    )
    pipeline = build_pipeline(data, model).set_params(estimator__n_estimators=3)
    pipeline.fit(frame, [0, 1, 0, 1, 0, 1])
    blob = save(pipeline, fmt)
    assert len(blob) < 50_000  # compressed, skops included
    loaded = load(blob, fmt)
    assert np.array_equal(loaded.predict_proba(frame), pipeline.predict_proba(frame))


def test_joblib_takes_a_users_own_class() -> None:
    model = OwnModel().fit(None, [1.0, 3.0])
    loaded = load(save(model, ArtifactFormat.JOBLIB), ArtifactFormat.JOBLIB)
    assert loaded.predict([0, 0]).tolist() == [2.0, 2.0]


def test_skops_refuses_to_save_a_users_own_class_and_suggests_joblib() -> None:
    with pytest.raises(ArtifactError) as caught:
        save(OwnModel().fit(None, [1.0]), ArtifactFormat.SKOPS)
    message = str(caught.value)
    assert "test_sklearn.OwnModel" in message
    assert "which a skops artifact does not trust; add them to model.trusted_types" in message
    assert "or set model.format: joblib" in message


def test_model_trusted_types_let_skops_save_and_load_a_users_own_class() -> None:
    own = OwnModel().fit(None, [1.0])
    trusted = [f"{OwnModel.__module__}.OwnModel"]
    data = save(own, ArtifactFormat.SKOPS, trusted)

    assert type(load(data, ArtifactFormat.SKOPS, trusted)).__name__ == "OwnModel"
    with pytest.raises(ArtifactError, match=r"untrusted type .*OwnModel.*model\.trusted_types"):
        load(data, ArtifactFormat.SKOPS)  # a server without the setting refuses it


def test_skops_refuses_to_load_an_untrusted_function() -> None:
    def shift(X: Any) -> Any:
        return X + 1

    X, y = data()
    model = make_pipeline(FunctionTransformer(shift), LogisticRegression()).fit(X / 1000, y)
    blob = skops.io.dumps(model)  # made elsewhere: refit itself would not save it
    with pytest.raises(ArtifactError) as caught:
        load(blob, ArtifactFormat.SKOPS)
    assert str(caught.value).startswith("untrusted type ")
    assert "shift in a skops artifact" in str(caught.value)


def test_joblib_reports_what_it_cannot_pickle() -> None:
    with pytest.raises(ArtifactError, match="cannot save the model with joblib: "):
        save(lambda X: X, ArtifactFormat.JOBLIB)


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        (ArtifactFormat.JOBLIB, "cannot load a joblib artifact: "),
        (ArtifactFormat.SKOPS, "not a readable skops artifact: BadZipFile"),
    ],
)
def test_garbage_is_refused(fmt: ArtifactFormat, message: str) -> None:
    with pytest.raises(ArtifactError, match=message):
        load(b"not a model", fmt)


@pytest.mark.parametrize(
    ("name", "trusted"),
    [
        ("sklearn.tree._tree.Tree", True),
        ("numpy.dtype", True),
        ("scipy.sparse._csr.csr_matrix", True),
        ("builtins.slice", True),
        ("collections.OrderedDict", True),
        ("builtins.eval", False),
        ("builtins.exec", False),
        ("sklearnx.Model", False),
        ("my_project.train.Model", False),
        ("os.system", False),
    ],
)
def test_trust_list(name: str, trusted: bool) -> None:
    assert is_trusted(name) is trusted
