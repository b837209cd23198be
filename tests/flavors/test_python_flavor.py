"""The python flavor: a `model.function` that returns its own kind of model (no scikit-learn
estimator), pickled with its classes resolved from the version's code."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from refit.data.ingest import run_ingest
from refit.errors import ArtifactError, TrainingError, UntrustedVersionError
from refit.examples import create_project, example_rows
from refit.flavors import PYTHON_FLAVOR, load_model, load_version
from refit.predictions import columns_of
from refit.project import load_project
from refit.serve.predictor import LoadPolicy, load_predictor
from refit.services import Services, open_services
from refit.spec import SPEC_FILE, ArtifactFormat
from refit.train.run import run_training

NAME = "breast-cancer"

MODEL = """
import numpy as np


class Threshold:
    \"\"\"Malignant below a cut of the mean radius.\"\"\"

    classes_ = np.array(["benign", "malignant"], dtype=object)

    def __init__(self, cut):
        self.cut = cut

    def predict_proba(self, X):
        p = 1.0 / (1.0 + np.exp(self.cut - X["mean_radius"].to_numpy()))
        return np.column_stack([1.0 - p, p])

    def predict(self, X):
        return self.classes_[(self.predict_proba(X)[:, 1] > 0.5).astype(int)]


def fit(X, y, params):
    return Threshold(float(X["mean_radius"].median()))
"""


def opened(root: Path) -> Services:
    return open_services(load_project(root))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = create_project(tmp_path / "project", NAME)
    (root / "mymodel.py").write_text(textwrap.dedent(MODEL), "utf-8")
    spec = yaml.safe_load((root / SPEC_FILE).read_text("utf-8"))
    spec["model"].pop("estimator")
    spec["model"].pop("params")
    spec["model"]["function"] = "mymodel:fit"
    spec["gate"] = {"min": 0.5}
    (root / SPEC_FILE).write_text(yaml.safe_dump(spec), "utf-8")
    with opened(root) as services:
        assert run_ingest(services.project, services.registry, services.store).status == "accepted"
    return root


def test_a_model_that_is_no_estimator_is_the_python_flavor_and_serves_with_its_code(
    project: Path,
) -> None:
    X = example_rows(NAME).drop(columns="diagnosis").iloc[:50]
    with opened(project) as services:
        result = run_training(services)
        row = result.version
        assert result.promoted, result.decision.reason
        assert row.flavor == PYTHON_FLAVOR and row.format == ArtifactFormat.JOBLIB.value
        assert row.code is not None and row.code["modules"] == ["mymodel"]
        assert row.code["function"] == "mymodel:fit"
        assert row.onnx == {"status": "not converted: a python model runs as it is"}
        assert row.signature["output"]["classes"] == ["benign", "malignant"]
        assert row.signature["output"]["probabilities"] is True

        # The model's class now says the opposite on disk; the version keeps its own.
        (project / "mymodel.py").write_text(
            textwrap.dedent(MODEL).replace("> 0.5", "< 0.5"), "utf-8"
        )
        model = load_version(row, services.store.get)
        assert type(model).__module__.endswith(".mymodel")
        assert type(model).__module__ != "mymodel"
        loaded = load_predictor(row, services.store)
        assert loaded.runtime == "native"
        answers = loaded.predictor.predict(columns_of(X, loaded.signature.names))
    want = ["malignant" if r > model.cut else "benign" for r in X["mean_radius"]]
    assert answers.label_list() == want
    assert answers.probabilities is not None and answers.classes == ("benign", "malignant")


def test_the_gate_scores_a_python_champion_with_its_own_classes(project: Path) -> None:
    with opened(project) as services:
        first = run_training(services)
        second = run_training(services)
    assert second.decision.champion_value == pytest.approx(first.version.metrics["roc_auc"])
    assert "could not be scored" not in second.decision.reason


def test_a_python_model_is_refused_where_pickles_are(project: Path) -> None:
    with opened(project) as services:
        row = run_training(services).version
        with pytest.raises(UntrustedVersionError, match="allow_pickle is false"):
            load_predictor(row, services.store, policy=LoadPolicy(allow_pickle=False))
        data = services.store.get(row.artifact_uri, row.artifact_sha256)
    # Never with the classes of whatever module of that name is importable.
    with pytest.raises(ArtifactError, match="loads with its version's code"):
        load_model(data, ArtifactFormat.JOBLIB, PYTHON_FLAVOR)


def test_a_python_model_needs_joblib_and_its_module_in_the_project(project: Path) -> None:
    spec = yaml.safe_load((project / SPEC_FILE).read_text("utf-8"))
    spec["model"]["format"] = "skops"
    (project / SPEC_FILE).write_text(yaml.safe_dump(spec), "utf-8")
    with opened(project) as services, pytest.raises(ArtifactError, match=r"set model\.format"):
        run_training(services)


def test_a_python_model_from_outside_the_project_is_refused(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "installed"
    elsewhere.mkdir()
    (elsewhere / "theirmodel.py").write_text(textwrap.dedent(MODEL), "utf-8")
    monkeypatch.syspath_prepend(str(elsewhere))
    spec = yaml.safe_load((project / SPEC_FILE).read_text("utf-8"))
    spec["model"]["function"] = "theirmodel:fit"
    (project / SPEC_FILE).write_text(yaml.safe_dump(spec), "utf-8")
    with opened(project) as services, pytest.raises(TrainingError, match="project folder"):
        run_training(services)
    sys.modules.pop("theirmodel", None)


def test_a_python_model_takes_what_the_features_hook_returns(project: Path) -> None:
    (project / "mymodel.py").write_text(
        textwrap.dedent(MODEL)
        + textwrap.dedent(
            """

            def features(frame):
                return frame[["mean_radius"]] * 2.0
            """
        ),
        "utf-8",
    )
    spec = yaml.safe_load((project / SPEC_FILE).read_text("utf-8"))
    spec["model"]["features"] = "mymodel:features"
    (project / SPEC_FILE).write_text(yaml.safe_dump(spec), "utf-8")
    X = example_rows(NAME).drop(columns="diagnosis").iloc[:50]
    with opened(project) as services:
        row = run_training(services).version
        assert row.flavor == PYTHON_FLAVOR and row.code is not None
        assert row.code["columns"] == {"mean_radius": "float"}
        model = load_version(row, services.store.get)
        loaded = load_predictor(row, services.store)
        answers = loaded.predictor.predict(columns_of(X, loaded.signature.names))
    # Fitted on twice the radius: its cut is twice the median radius of the training rows.
    want = ["malignant" if 2 * r > model.model.cut else "benign" for r in X["mean_radius"]]
    assert answers.label_list() == want
    assert answers.label_list() == model.predict(X).tolist()
