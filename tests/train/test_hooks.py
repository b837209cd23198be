"""The project's own code around a model: `model.features` and `model.postprocess`, bundled
with each version and run from that bundle at training, at the gate and in a server."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from refit.cli import app
from refit.cli._output import run_app
from refit.code import CODE_PREFIX, LoadedCode, bundle_code
from refit.data.ingest import run_ingest
from refit.errors import (
    ArtifactCorruptError,
    ArtifactPathError,
    CodeError,
    SpecError,
    TrainingError,
)
from refit.examples import create_project
from refit.flavors import load_version
from refit.flavors.hooked import checked_features
from refit.parquet import read_snapshot
from refit.predictions import columns_of
from refit.project import load_project
from refit.serve.predictor import load_predictor
from refit.services import Services, open_services
from refit.spec import SPEC_FILE
from refit.train.promotion import UnservableVersionError, check_artifacts
from refit.train.run import run_training
from refit.train.split import split

NAME = "breast-cancer"

HOOKS = """
def features(frame):
    out = frame[["mean_radius", "mean_texture"]].copy()
    out["ratio"] = frame["mean_area"] / frame["mean_perimeter"]
    out["big"] = frame["mean_radius"] > 15
    return out


def postprocess(record, prediction):
    if record["mean_radius"] > 18:
        return None
    return prediction
"""


def write_hooks(root: Path, source: str) -> None:
    (root / "hooks.py").write_text(textwrap.dedent(source), "utf-8")


def use_hooks(root: Path, **fields: Any) -> None:
    spec = yaml.safe_load((root / SPEC_FILE).read_text("utf-8"))
    spec["model"].update(
        {"estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 2000}}
    )
    spec["model"].update(fields)
    (root / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False), "utf-8")


def opened(root: Path) -> Services:
    return open_services(load_project(root))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = create_project(tmp_path / "project", NAME)
    with opened(root) as services:
        assert run_ingest(services.project, services.registry, services.store).status == "accepted"
    write_hooks(root, HOOKS)
    use_hooks(root, features="hooks:features", postprocess="hooks:postprocess")
    return root


def holdout(services: Services) -> pd.DataFrame:
    spec = services.project.spec
    snapshot = services.registry.latest_snapshot(NAME)
    assert snapshot is not None
    parts = split(read_snapshot(services.store, snapshot), spec.data, spec.model)
    return parts.holdout[list(spec.data.features)]


def test_the_model_is_fitted_on_the_features_hook_output_and_the_code_is_stored(
    project: Path,
) -> None:
    with opened(project) as services:
        result = run_training(services)
        row = result.version
        code = row.code
        assert code is not None
        assert code["modules"] == ["hooks"] and code["files"] == ["hooks.py"]
        assert code["features"] == "hooks:features"
        assert code["postprocess"] == "hooks:postprocess"
        assert code["columns"] == {
            "mean_radius": "float",
            "mean_texture": "float",
            "ratio": "float",
            "big": "bool",
        }
        bundle = services.store.get(code["uri"], code["sha256"])
        assert len(bundle) == code["size"]
        assert bundle == bundle_code(project, {"model.features": "hooks:features"}).data
        assert row.onnx is not None and "model.features" in row.onnx["status"]
        model = load_version(row, services.store.get)
        assert list(model.model.feature_names_in_) == [
            "mean_radius",
            "mean_texture",
            "ratio",
            "big",
        ]
        # The signature keeps the raw inputs: clients send the declared features.
        assert "mean_area" in [c["name"] for c in row.signature["inputs"]]
        X = holdout(services)
        assert code["holdout_withheld"] == int((X["mean_radius"] > 18).sum()) > 0


def test_a_served_version_answers_as_training_did_and_withholds_what_postprocess_refuses(
    project: Path,
) -> None:
    with opened(project) as services:
        row = run_training(services).version
        X = holdout(services)
        loaded = load_predictor(row, services.store)
        assert not loaded.predictor.quick
        answers = loaded.predictor.predict(columns_of(X, loaded.signature.names))
    assert row.reference is not None
    assert answers.label_list() == row.reference["predictions"][: len(X)]
    assert answers.withheld is not None
    assert answers.withheld.tolist() == (X["mean_radius"] > 18).tolist()


def test_a_server_runs_the_version_s_code_not_the_project_s_files(project: Path) -> None:
    with opened(project) as services:
        row = run_training(services).version
        X = holdout(services)
        write_hooks(project, HOOKS.replace("> 18", "> 1000"))  # withholds nothing
        (project / "__pycache__").mkdir(exist_ok=True)
        loaded = load_predictor(row, services.store)
        answers = loaded.predictor.predict(columns_of(X, loaded.signature.names))
        assert answers.withheld is not None
        assert answers.withheld.tolist() == (X["mean_radius"] > 18).tolist()
        # The next version is trained with the new code, and withholds nothing.
        new = run_training(services).version
        assert new.code is not None and new.code["sha256"] != row.code["sha256"]
        served = load_predictor(new, services.store).predictor.predict(
            columns_of(X, loaded.signature.names)
        )
        assert served.withheld is not None and not served.withheld.any()
    assert "hooks" not in sys.modules


def test_the_gate_scores_the_champion_with_the_champion_s_own_features_code(
    project: Path,
) -> None:
    with opened(project) as services:
        first = run_training(services)
        assert first.promoted
        # New code that the champion's model could not take: other column names.
        write_hooks(
            project,
            """
            def features(frame):
                return frame[["mean_radius"]].rename(columns={"mean_radius": "radius"})

            def postprocess(record, prediction):
                return prediction
            """,
        )
        second = run_training(services)
    assert second.decision.champion_value == pytest.approx(first.version.metrics["roc_auc"])
    assert "could not be scored" not in second.decision.reason


def test_a_tampered_code_artifact_is_refused_by_a_server_and_by_promotion(project: Path) -> None:
    with opened(project) as services:
        row = run_training(services).version
        assert row.code is not None
        path = project / ".refit" / "artifacts" / row.code["uri"]
        # Other code, in a well-formed bundle, where the version's code was.
        write_hooks(project, HOOKS.replace("> 18", "> 99"))
        forged = bundle_code(project, {"model.features": "hooks:features"}).data
        assert forged != path.read_bytes()
        path.write_bytes(forged)
        with pytest.raises(ArtifactCorruptError):
            load_predictor(row, services.store)
        with pytest.raises(UnservableVersionError, match="code artifact"):
            check_artifacts(services.store, row)
        # A code path that leaves the store is refused before a byte is read.
        row.code = {**row.code, "uri": "../../hooks.py"}
        with pytest.raises(ArtifactPathError, match="is refused"):
            load_predictor(row, services.store)


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        (
            "def features(frame):\n    raise ValueError('no ratio today')",
            "raised ValueError: no ratio today",
        ),
        ("def features(frame):\n    return frame.to_numpy()", "expected a pandas DataFrame"),
        ("def features(frame):\n    return frame.iloc[:-1]", "rows for"),
        (
            "def features(frame):\n    return frame.sort_values('mean_radius')",
            "changed the frame's index",
        ),
        (
            "import pandas as pd\ndef features(frame):\n"
            "    return frame.assign(when=pd.Timestamp('2024-01-01'))",
            "column 'when' of dtype datetime64",
        ),
    ],
)
def test_a_features_hook_that_misbehaves_fails_training_naming_it(
    project: Path, source: str, problem: str
) -> None:
    write_hooks(project, source)
    use_hooks(project, postprocess=None)
    spec = yaml.safe_load((project / SPEC_FILE).read_text("utf-8"))
    spec["model"].pop("postprocess")
    (project / SPEC_FILE).write_text(yaml.safe_dump(spec), "utf-8")
    with opened(project) as services, pytest.raises(TrainingError) as caught:
        run_training(services)
    assert "model.features hooks:features" in str(caught.value)
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("return {**prediction, 'prediction': 1}", "predictions are of type string"),
        ("return {**prediction, 'prediction': 'maybe'}", "one of 'benign', 'malignant'"),
        ("return prediction['prediction']", "expected the prediction dict"),
        ("raise KeyError('mean_radius')", "raised KeyError"),
    ],
)
def test_a_postprocess_hook_that_misbehaves_fails_training_naming_it(
    project: Path, body: str, problem: str
) -> None:
    write_hooks(
        project,
        HOOKS.split("def postprocess")[0] + f"def postprocess(record, prediction):\n    {body}\n",
    )
    with opened(project) as services, pytest.raises(TrainingError) as caught:
        run_training(services)
    assert "model.postprocess hooks:postprocess" in str(caught.value)
    assert problem in str(caught.value)


def test_a_postprocess_may_map_a_label_to_another_class(project: Path) -> None:
    write_hooks(
        project,
        HOOKS.split("def postprocess")[0]
        + "def postprocess(record, prediction):\n"
        + "    return {**prediction, 'prediction': 'malignant'}\n",
    )
    with opened(project) as services:
        row = run_training(services).version
        X = holdout(services)
        answers = load_predictor(row, services.store).predictor.predict(
            columns_of(X, list(X.columns))
        )
    assert set(answers.label_list()) == {"malignant"}
    assert answers.withheld is not None and not answers.withheld.any()


def test_a_hook_outside_the_project_folder_is_refused_before_any_run(project: Path) -> None:
    use_hooks(project, features="json:loads")
    with opened(project) as services:
        with pytest.raises(SpecError, match="module json is not a file of the project folder"):
            run_training(services)
        assert services.registry.list_runs(NAME) == []


# --- the bundle -------------------------------------------------------------------------------


def test_a_bundle_holds_a_package_with_relative_imports_and_the_project_modules_it_imports(
    tmp_path: Path,
) -> None:
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "hooks.py").write_text(
        "from .scale import factor\nimport helpers\n\n"
        "def features(frame):\n    return frame * factor() * helpers.TWO\n"
    )
    (tmp_path / "shop" / "scale.py").write_text("def factor():\n    return 10\n")
    (tmp_path / "helpers.py").write_text("import numpy\nTWO = 2\n")
    (tmp_path / "unused.py").write_text("X = 1\n")
    bundle = bundle_code(tmp_path, {"model.features": "shop.hooks:features"})
    assert bundle.modules == ["helpers", "shop"]
    assert bundle.files == ["helpers.py", "shop/__init__.py", "shop/hooks.py", "shop/scale.py"]
    assert bundle_code(tmp_path, {"model.features": "shop.hooks:features"}).data == bundle.data

    # Changed on disk after bundling: the loaded code is the bundled one.
    (tmp_path / "helpers.py").write_text("TWO = 3\n")
    code = LoadedCode(bundle.data, "shop v1")
    features = code.function("shop.hooks:features")
    assert features(pd.DataFrame({"a": [1.0]}))["a"].tolist() == [20.0]
    assert features.__module__.startswith(CODE_PREFIX)
    assert "helpers" not in sys.modules and "shop" not in sys.modules


def test_two_versions_with_the_same_module_names_load_side_by_side(tmp_path: Path) -> None:
    bundles = []
    for value in (1, 2):
        folder = tmp_path / f"v{value}"
        folder.mkdir()
        (folder / "hooks.py").write_text(
            f"VALUE = {value}\n\ndef post(record, p):\n    return VALUE\n"
        )
        bundles.append(bundle_code(folder, {"model.postprocess": "hooks:post"}).data)
    first, second = (LoadedCode(data, f"v{i}") for i, data in enumerate(bundles, 1))
    assert first.package != second.package
    assert first.function("hooks:post")({}, {}) == 1
    assert second.function("hooks:post")({}, {}) == 2
    assert first.function("hooks:post")({}, {}) == 1


def test_a_hook_that_fails_at_serving_is_a_code_error_of_that_call(project: Path) -> None:
    write_hooks(
        project,
        HOOKS.replace(
            "    return out\n",
            "    if (frame['mean_radius'] < 0).any():\n        raise ValueError('negative')\n"
            "    return out\n",
        ),
    )
    with opened(project) as services:
        row = run_training(services).version
        X = holdout(services)
        predictor = load_predictor(row, services.store).predictor
    bad = X.iloc[:2].copy()
    bad["mean_radius"] = -1.0
    with pytest.raises(CodeError, match=r"model\.features hooks:features raised ValueError"):
        predictor.predict(columns_of(bad, list(X.columns)))
    assert len(predictor.predict(columns_of(X.iloc[:2], list(X.columns)))) == 2
    assert np.isfinite(predictor.predict(columns_of(X, list(X.columns))).probabilities).all()


def test_the_hooks_example_trains_and_serves_with_its_own_hooks(tmp_path: Path) -> None:
    root = create_project(tmp_path / "wine", "hooks")
    assert (root / "hooks.py").is_file()
    with opened(root) as services:
        assert run_ingest(services.project, services.registry, services.store).status == "accepted"
        result = run_training(services)
        assert result.promoted, result.decision.reason
        code = result.version.code
        assert code is not None and code["modules"] == ["hooks"]
        assert {"log_proline", "phenol_ratio", "colour_per_hue"} <= set(code["columns"])
        loaded = load_predictor(result.version, services.store)
    request = pd.DataFrame([yaml.safe_load((root / "request.json").read_text("utf-8"))])
    answer = loaded.predictor.predict(columns_of(request, loaded.signature.names))
    assert answer.withheld is not None and len(answer) == 1
    confident = max(answer.probability_maps()[0].values()) >= 0.7  # type: ignore[index]
    assert answer.withheld.tolist() == [not confident]


def test_models_show_names_the_version_s_own_code(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with opened(project) as services:
        row = run_training(services).version
    capsys.readouterr()
    assert run_app(app, ["models", "show", "1", "-p", str(project)]) == 0
    shown = capsys.readouterr().out
    assert row.code is not None
    line = next(line for line in shown.splitlines() if line.startswith("own code"))
    assert line == (
        f"own code  hooks.py ({row.code['uri']}): features hooks:features; "
        "postprocess hooks:postprocess"
    )


def test_a_features_hook_must_answer_the_columns_the_version_was_trained_on() -> None:
    frame = pd.DataFrame({"a": [1, 2]})
    with pytest.raises(CodeError, match=r"returned the columns a \(int\), extra \(float\)"):
        checked_features(lambda f: f.assign(extra=1.0), "hooks:f", frame, {"a": "int"})
    with pytest.raises(CodeError, match="trained on a"):
        checked_features(lambda f: f.astype(bool), "hooks:f", frame, {"a": "int"})
    # A number is a number: an int column with a missing value comes back as floats.
    out = checked_features(lambda f: f.astype(float), "hooks:f", frame, {"a": "int"})
    assert out["a"].tolist() == [1.0, 2.0]
    text = checked_features(lambda f: f.astype(str).astype("category"), "hooks:f", frame)
    assert text["a"].dtype == object and text["a"].tolist() == ["1", "2"]
