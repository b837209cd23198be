"""Loading `refit.yaml`: defaults, the shapes a person may write, overrides and every error."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from refit.errors import SpecError
from refit.project import Project, load_project
from refit.spec import FeatureType, SnapshotMode, SplitKind, Task

DELETE = object()
"""In a patch for `spec_text`: remove this field."""

MINIMAL: dict[str, Any] = {
    "name": "churn",
    "data": {
        "source": {"kind": "csv", "path": "data/incoming"},
        "target": "churned",
        "features": {"tenure": "float"},
    },
    "model": {
        "task": "classification",
        "estimator": "sklearn.linear_model.LogisticRegression",
    },
}


def patched(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`base` with `patch` merged in, mapping by mapping; DELETE removes a field."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = patched(out[key], value)
        else:
            out[key] = value
    return out


def spec_text(patch: dict[str, Any] | None = None) -> str:
    return yaml.safe_dump(patched(MINIMAL, patch or {}), sort_keys=False)


def write_spec(root: Path, text: str) -> Path:
    path = root / "refit.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load(root: Path, text: str, environ: dict[str, str] | None = None) -> Project:
    write_spec(root, text)
    return load_project(root, environ or {})


def spec_error(root: Path, text: str, environ: dict[str, str] | None = None) -> SpecError:
    """The error of loading `text`; checks what every such message must (and must not) hold."""
    path = write_spec(root, text)
    with pytest.raises(SpecError) as caught:
        load_project(root, environ or {})
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    for noise in ("errors.pydantic.dev", "Value error", "[type=", "input_value", "Traceback"):
        assert noise not in message
    assert caught.value.exit_code == 2
    return caught.value


def problems(root: Path, patch: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    error = spec_error(root, spec_text(patch), environ)
    noun = "problem" if len(error.problems) == 1 else "problems"
    lines = "".join(f"\n  - {p}" for p in error.problems)
    assert str(error) == f"{root / 'refit.yaml'}: {len(error.problems)} {noun}:{lines}"
    return error.problems


# --- a valid spec ---------------------------------------------------------------------------


def test_a_minimal_spec_loads_with_the_documented_defaults(tmp_path: Path) -> None:
    project = load(tmp_path, spec_text())
    spec = project.spec
    assert project.root == tmp_path.resolve()
    assert spec.name == "churn"
    assert spec.data.features["tenure"].type is FeatureType.FLOAT
    assert spec.data.features["tenure"].nullable is True
    assert spec.data.time_column is None
    assert spec.data.snapshot.mode is SnapshotMode.CUMULATIVE
    assert spec.data.max_reject_rate == 0.1
    assert spec.model.metric is None and spec.model.metric_name == "roc_auc"
    assert spec.model.higher_is_better is True
    assert spec.model.split_kind is SplitKind.STRATIFIED
    assert (spec.model.holdout.fraction, spec.model.holdout.seed) == (0.2, 0)
    assert spec.model.format.value == "joblib"
    assert spec.model.params == {}
    assert (spec.gate.min, spec.gate.max, spec.gate.min_improvement) == (None, None, 0.0)
    assert spec.gate.promote_ties is False
    assert (spec.schedule.ingest, spec.schedule.train, spec.schedule.monitor) == ("1m", "5m", "5m")
    assert spec.schedule.metrics_port == 9464
    assert (spec.monitor.sample, spec.monitor.retention, spec.monitor.window) == (1.0, "30d", "1h")
    assert spec.monitor.retrain_on_drift is False
    assert spec.schedule.lease_timeout == 30.0
    assert spec.storage.metadata_url == "sqlite:///.refit/refit.db"
    assert project.metadata_url == f"sqlite:///{tmp_path.resolve()}/.refit/refit.db"
    assert project.artifacts_url == str(tmp_path.resolve() / ".refit" / "artifacts")


def test_a_regression_defaults_to_rmse_and_a_random_split(tmp_path: Path) -> None:
    patch = {"model": {"task": "regression", "estimator": "sklearn.linear_model.Ridge"}}
    model = load(tmp_path, spec_text(patch)).spec.model
    assert model.task is Task.REGRESSION
    assert model.metric_name == "rmse"
    assert model.higher_is_better is False
    assert model.split_kind is SplitKind.RANDOM


def test_a_chosen_metric_and_split_replace_the_defaults(tmp_path: Path) -> None:
    patch = {"model": {"metric": "log_loss", "holdout": {"split": "random"}}, "gate": {"max": 0.4}}
    spec = load(tmp_path, spec_text(patch)).spec
    assert spec.model.metric_name == "log_loss"
    assert spec.model.higher_is_better is False
    assert spec.model.split_kind is SplitKind.RANDOM
    assert spec.gate.max == 0.4


def test_an_empty_file_lists_every_required_field(tmp_path: Path) -> None:
    error = spec_error(tmp_path, "")
    assert error.problems == [
        "name: required field is missing",
        "data: required field is missing",
        "model: required field is missing",
    ]


@pytest.mark.parametrize(
    ("metadata_url", "resolved"),
    [
        ("sqlite:///state/r.db", "sqlite:///{root}/state/r.db"),
        ("sqlite:////srv/refit/r.db", "sqlite:////srv/refit/r.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql+psycopg://refit@db/refit", "postgresql+psycopg://refit@db/refit"),
    ],
)
def test_a_relative_sqlite_path_resolves_against_the_project(
    tmp_path: Path, metadata_url: str, resolved: str
) -> None:
    project = load(tmp_path, spec_text({"storage": {"metadata_url": metadata_url}}))
    assert project.metadata_url == resolved.format(root=tmp_path.resolve())


@pytest.mark.parametrize(
    ("artifacts_url", "resolved"),
    [
        ("store", "{root}/store"),
        ("/srv/artifacts", "/srv/artifacts"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
    ],
)
def test_a_relative_artifacts_folder_resolves_against_the_project(
    tmp_path: Path, artifacts_url: str, resolved: str
) -> None:
    project = load(tmp_path, spec_text({"storage": {"artifacts_url": artifacts_url}}))
    assert project.artifacts_url == resolved.format(root=tmp_path.resolve())


def test_project_paths_resolve_against_the_project_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    project = load(tmp_path, spec_text())
    assert project.path("data/incoming") == tmp_path.resolve() / "data" / "incoming"
    assert project.path(Path("/abs/file.csv")) == Path("/abs/file.csv")
    assert project.path("~/x.csv") == tmp_path / "home" / "x.csv"


def test_a_feature_may_be_written_short_or_in_full(tmp_path: Path) -> None:
    features = {
        "tenure": "float",
        "seats": {"type": "int", "min": 1, "max": 500, "nullable": False},
        "plan": {"type": "category", "values": ["basic", "pro"]},
        "active": "bool",
    }
    spec = load(tmp_path, spec_text({"data": {"features": features}})).spec
    got = spec.data.features
    assert list(got) == ["tenure", "seats", "plan", "active"]
    assert got["tenure"].type is FeatureType.FLOAT and got["tenure"].nullable is True
    assert (got["seats"].type, got["seats"].min, got["seats"].max) == (FeatureType.INT, 1, 500)
    assert got["seats"].nullable is False
    assert got["plan"].values == ["basic", "pro"]
    assert got["active"].type is FeatureType.BOOL


def test_category_values_written_as_numbers_are_read_as_text(tmp_path: Path) -> None:
    # Validation reads a category value 1 from a file as the text "1".
    features = {"rating": {"type": "category", "values": [1, 2, 3]}}
    spec = load(tmp_path, spec_text({"data": {"features": features}})).spec
    assert spec.data.features["rating"].values == ["1", "2", "3"]


@pytest.mark.parametrize("value", ["30s", "5m", "1h", "1d", "*/5 * * * *", "0 3 * * MON-FRI", None])
def test_a_schedule_is_an_interval_or_a_cron_expression(tmp_path: Path, value: str | None) -> None:
    spec = load(tmp_path, spec_text({"schedule": {"train": value}})).spec
    assert spec.schedule.train == value


@pytest.mark.parametrize(
    "source",
    [
        {"kind": "csv", "path": "in", "delimiter": ";"},
        {"kind": "parquet", "path": "in/*.parquet"},
        {"kind": "sql", "url": "sqlite:///src.db", "query": "SELECT * FROM t", "watermark": "id"},
    ],
)
def test_each_kind_of_source_loads(tmp_path: Path, source: dict[str, str]) -> None:
    spec = load(tmp_path, spec_text({"data": {"source": {"path": DELETE, **source}}})).spec
    assert spec.data.source.kind == source["kind"]


# --- errors in the file ---------------------------------------------------------------------


def test_a_missing_spec_points_to_refit_init(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load_project(tmp_path, {})
    assert str(caught.value) == (
        f"No refit.yaml in {tmp_path.resolve()}. Create a project with `refit init DIR` "
        "or point at one with --project DIR."
    )


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            "name: demo\ndata:\n  source: {kind: csv, path: data\n  target: y\n",
            "at line 4, column 9: expected ',' or '}', but got ':'",
        ),
        ("name: demo\n\tdata: 1\n", "at line 2, column 1: found character '\\t' that cannot"),
    ],
)
def test_invalid_yaml_names_the_line_and_column(tmp_path: Path, text: str, where: str) -> None:
    error = spec_error(tmp_path, text)
    assert str(error).startswith(f"{tmp_path / 'refit.yaml'}: not valid YAML {where}")


def test_a_spec_that_is_not_utf8_says_so(tmp_path: Path) -> None:
    (tmp_path / "refit.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(SpecError) as caught:
        load_project(tmp_path, {})
    assert str(caught.value) == (
        f"{tmp_path / 'refit.yaml'}: not UTF-8 text (byte 9): save it as UTF-8"
    )


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "a list"), ("churn\n", "a string")])
def test_the_top_level_must_be_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    error = spec_error(tmp_path, text)
    assert str(error) == (
        f"{tmp_path / 'refit.yaml'}: expected a mapping of fields at the top, got {kind}"
    )


SCHEDULE = "expected an interval such as 30s, 5m, 1h, 1d or a 5-field cron expression"
CLASSIFIERS = "accuracy, f1, roc_auc, log_loss"
REGRESSION = {"task": "regression", "estimator": "sklearn.linear_model.Ridge"}


@pytest.mark.parametrize(
    ("patch", "problem"),
    [
        pytest.param(
            {"data": {"snapshot": {"mdoe": "latest"}}},
            "data.snapshot.mdoe: unknown field (check its spelling; got 'latest')",
            id="typo in a nested field",
        ),
        pytest.param(
            {"modle": {"task": "regression"}},
            "modle: unknown field (check its spelling; got a mapping)",
            id="typo at the top",
        ),
        pytest.param(
            {"model": {"holdout": {"fraction": "most"}}},
            "model.holdout.fraction: got 'most': input should be a valid number, "
            "unable to parse string as a number",
            id="wrong type",
        ),
        pytest.param(
            {"model": {"holdout": {"fraction": 1.5}}},
            "model.holdout.fraction: got 1.5: input should be less than 1",
            id="out of range",
        ),
        pytest.param(
            {"data": {"max_reject_rate": 2}},
            "data.max_reject_rate: got 2: input should be less than or equal to 1",
            id="reject rate above 1",
        ),
        pytest.param(
            {"data": {"features": {"tenure": {"type": "float", "nullable": "maybe"}}}},
            "data.features.tenure.nullable: got 'maybe': input should be a valid boolean, "
            "unable to interpret input",
            id="not a boolean",
        ),
        pytest.param(
            {"data": {"features": ["tenure"]}},
            "data.features: got a list: expected a mapping (name: value)",
            id="a list for a mapping",
        ),
        pytest.param(
            {"data": {"source": "data/incoming/*.csv"}},
            "data.source: got 'data/incoming/*.csv': expected a mapping (name: value)",
            id="a string for a source",
        ),
        pytest.param(
            {"model": {"task": "clasification"}},
            "model.task: got 'clasification': input should be 'classification', 'regression', "
            "'clustering' or 'anomaly'",
            id="bad task",
        ),
        pytest.param(
            {"data": {"features": {"tenure": "double"}}},
            "data.features.tenure.type: got 'double': "
            "input should be 'float', 'int', 'bool' or 'category'",
            id="bad feature type, short form",
        ),
        pytest.param(
            {"data": {"features": {"tenure": {"type": "double"}}}},
            "data.features.tenure.type: got 'double': "
            "input should be 'float', 'int', 'bool' or 'category'",
            id="bad feature type, full form",
        ),
        pytest.param(
            {"data": {"snapshot": {"mode": "rolling"}}},
            "data.snapshot.mode: got 'rolling': input should be 'cumulative', 'window' or 'latest'",
            id="bad snapshot mode",
        ),
        pytest.param(
            {"model": {"holdout": {"split": "kfold"}}},
            "model.holdout.split: got 'kfold': input should be 'random', 'stratified' or 'time'",
            id="bad split",
        ),
        pytest.param(
            {"model": {"format": "pickle"}},
            "model.format: got 'pickle': input should be 'joblib', 'skops' or 'onnx'",
            id="bad format",
        ),
        pytest.param(
            {"model": {"trained_elsewhere": True}},
            "model: `trained_elsewhere` is true, and so refit does not train: remove "
            "`estimator`, or trained_elsewhere",
            id="trained elsewhere with an estimator",
        ),
        pytest.param(
            {"model": {"format": "onnx"}},
            "model.format: got 'onnx': training saves joblib or skops (and converts to ONNX "
            "itself when it can); an ONNX file of your own is registered with "
            "`refit models register FILE.onnx`",
            id="onnx is not a training format",
        ),
        pytest.param(
            {"data": {"source": {"kind": "excel"}}},
            "data.source.kind: got 'excel': expected csv, parquet or sql",
            id="bad source kind",
        ),
        pytest.param(
            {"data": {"source": {"kind": DELETE}}},
            "data.source.kind: required field is missing (expected csv, parquet or sql)",
            id="no source kind",
        ),
        pytest.param(
            {"name": "Churn Model"},
            "name: got 'Churn Model': "
            "expected lowercase letters, digits, - and _ (it is used in URLs)",
            id="bad name",
        ),
        pytest.param(
            {"model": {"function": "train:fit"}},
            "model: both `estimator` ('sklearn.linear_model.LogisticRegression') and "
            "`function` ('train:fit') are set: give exactly one of them",
            id="estimator and function",
        ),
        pytest.param(
            {"model": {"estimator": DELETE}},
            "model: neither `estimator` nor `function` is set: give one of them, "
            "e.g. estimator: sklearn.linear_model.LogisticRegression (or set "
            "trained_elsewhere: true to register models trained by another tool)",
            id="neither estimator nor function",
        ),
        pytest.param(
            {"model": {"estimator": "LogisticRegression"}},
            "model.estimator: got 'LogisticRegression': "
            "expected an import path such as sklearn.linear_model.Ridge",
            id="estimator without a module",
        ),
        pytest.param(
            {"model": {"estimator": DELETE, "function": "train.fit"}},
            "model.function: got 'train.fit': "
            "expected module:function, such as my_project.train:fit",
            id="function without a colon",
        ),
        pytest.param(
            {"model": {"metric": "rmse"}},
            "model.metric: got 'rmse': a regression metric, but model.task is classification; "
            f"expected one of {CLASSIFIERS}",
            id="metric of the other task",
        ),
        pytest.param(
            {"model": {"metric": "auc"}},
            f"model.metric: got 'auc': unknown metric; expected one of {CLASSIFIERS} "
            "(for classification)",
            id="unknown metric",
        ),
        pytest.param(
            {"model": {**REGRESSION, "metric": "mae"}, "gate": {"min": 0.8}},
            "gate.min: got 0.8: a floor does not apply to mae (lower is better): use gate.max",
            id="gate min with a lower-is-better metric",
        ),
        pytest.param(
            {"gate": {"max": 0.3}},
            "gate.max: got 0.3: a ceiling does not apply to roc_auc (higher is better): "
            "use gate.min",
            id="gate max with a higher-is-better metric",
        ),
        pytest.param(
            {"gate": {"min_improvement": -0.1}},
            "gate.min_improvement: got -0.1: input should be greater than or equal to 0",
            id="negative improvement",
        ),
        pytest.param(
            {"model": {**REGRESSION, "holdout": {"split": "stratified"}}},
            "model.holdout.split: got 'stratified': a stratified split applies to "
            "classification only; expected random or time",
            id="stratified regression",
        ),
        pytest.param(
            {"model": {"holdout": {"split": "time"}}},
            "model.holdout.split: got 'time': a time split needs data.time_column "
            "(the column the rows are ordered by)",
            id="time split without a time column",
        ),
        pytest.param(
            {"data": {"snapshot": {"mode": "window", "days": 30}}},
            "data.snapshot.days: got 30.0: a window of days needs data.time_column "
            "(the column the days are counted by)",
            id="days without a time column",
        ),
        pytest.param(
            {"data": {"snapshot": {"mode": "window"}}},
            "data.snapshot.mode: got 'window': a window snapshot needs `rows` or `days` (or both)",
            id="window without a size",
        ),
        pytest.param(
            {"data": {"snapshot": {"mode": "latest", "rows": 100}}},
            "data.snapshot.rows: got 100: rows applies to mode: window, not to latest",
            id="rows without a window",
        ),
        pytest.param(
            {"data": {"snapshot": {"mode": "window", "rows": 0}}},
            "data.snapshot.rows: got 0: input should be greater than 0",
            id="empty window",
        ),
        pytest.param(
            {"data": {"features": {"churned": "bool"}}},
            "data.target: got 'churned': the target is also listed in data.features; "
            "a model cannot learn from it",
            id="target as a feature",
        ),
        pytest.param(
            {"data": {"time_column": "tenure"}},
            "data.time_column: got 'tenure': the time column is also listed in data.features",
            id="time column as a feature",
        ),
        pytest.param(
            {"data": {"features": {"tenure": {"type": "float", "min": 10, "max": 1}}}},
            "data.features.tenure.min: got 10.0: greater than max (1): expected min <= max",
            id="min above max",
        ),
        pytest.param(
            {"data": {"features": {"plan": {"type": "category", "min": 1}}}},
            "data.features.plan.min: got 1.0: "
            "min applies to numeric features (float, int), not to category",
            id="min on a category",
        ),
        pytest.param(
            {"data": {"features": {"flag": {"type": "bool", "max": 1}}}},
            "data.features.flag.max: got 1.0: "
            "max applies to numeric features (float, int), not to bool",
            id="max on a bool",
        ),
        pytest.param(
            {"data": {"features": {"tenure": {"type": "float", "values": ["a"]}}}},
            "data.features.tenure.values: got a list: "
            "values apply to category features only, not to float",
            id="values on a float",
        ),
        pytest.param(
            {"data": {"features": {"tenure": DELETE}}},
            "data.features: got a mapping: dictionary should have at least 1 item after "
            "validation, not 0",
            id="no features",
        ),
        pytest.param(
            {"schedule": {"lease_timeout": 0.5}},
            "schedule.lease_timeout: got 0.5: input should be greater than or equal to 1",
            id="lease shorter than a second",
        ),
        pytest.param(
            {"data": {"source": {"kind": "csv", "path": "gs://bucket/incoming/"}}},
            "data.source.path: got 'gs://bucket/incoming/': gs:// is not supported: "
            "expected a local path or s3://bucket/prefix/",
            id="source in another object store",
        ),
        pytest.param(
            {"schedule": {"ingest": "5x"}},
            f"schedule.ingest: got '5x': {SCHEDULE}",
            id="bad interval unit",
        ),
        pytest.param(
            {"schedule": {"train": "*/5 * * *"}},
            f"schedule.train: got '*/5 * * *': {SCHEDULE}",
            id="cron with four fields",
        ),
        pytest.param(
            {"schedule": {"monitor": "every 5 minutes"}},
            f"schedule.monitor: got 'every 5 minutes': {SCHEDULE}",
            id="prose schedule",
        ),
        pytest.param(
            {"schedule": {"train": "99 99 99 99 99"}},
            f"schedule.train: got '99 99 99 99 99': {SCHEDULE} (minute hour day-of-month month "
            "day-of-week, in UTC): a field is out of range",
            id="cron fields out of range",
        ),
        pytest.param(
            {"schedule": {"ingest": "0 0 31 2 *"}},
            f"schedule.ingest: got '0 0 31 2 *': {SCHEDULE}: this one matches no date "
            "(such as 31 February)",
            id="cron that never comes",
        ),
        pytest.param(
            {"schedule": {"train": "0s"}},
            f"schedule.train: got '0s': {SCHEDULE}",
            id="zero interval",
        ),
        pytest.param(
            {"data": {"source": {"kind": "sql", "path": DELETE, "query": "SELECT 1"}}},
            "data.source.url: required field is missing",
            id="sql without url",
        ),
        pytest.param(
            {"data": {"source": {"kind": "sql", "path": DELETE, "url": "sqlite:///x.db"}}},
            "data.source.query: required field is missing",
            id="sql without query",
        ),
        pytest.param(
            {"data": {"source": {"kind": "parquet", "delimiter": ";"}}},
            "data.source.delimiter: unknown field (check its spelling; got ';')",
            id="a csv option on parquet",
        ),
        pytest.param(
            {"storage": {"s3": {"bucket": "models"}}},
            "storage.s3.bucket: unknown field (check its spelling; got 'models')",
            id="unknown s3 option",
        ),
        pytest.param(
            {"storage": {"s3": {"region": ["eu-west-1"]}}},
            "storage.s3.region: got a list: input should be a valid string",
            id="s3 region not a string",
        ),
        pytest.param(
            {"storage": {"metadata_url": "mysql://db/refit"}},
            "storage.metadata_url: got 'mysql://db/refit': "
            "expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DB",
            id="unsupported database",
        ),
    ],
)
def test_a_bad_field_is_named_with_its_value_and_what_was_expected(
    tmp_path: Path, patch: dict[str, Any], problem: str
) -> None:
    assert problems(tmp_path, patch) == [problem]


def test_a_feature_named_like_a_source_kind_keeps_its_place_in_the_path(tmp_path: Path) -> None:
    features = {"sql": {"type": "float", "min": "low"}}
    assert problems(tmp_path, {"data": {"features": features}}) == [
        "data.features.sql.min: got 'low': input should be a valid number, "
        "unable to parse string as a number"
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    patch = {
        "name": "Churn",
        "data": {"features": {"tenure": "double"}, "max_reject_rate": -1},
        "model": {"holdout": {"fraction": 0}},
        "schedule": {"ingest": "5x"},
    }
    assert problems(tmp_path, patch) == [
        "name: got 'Churn': expected lowercase letters, digits, - and _ (it is used in URLs)",
        "data.features.tenure.type: got 'double': "
        "input should be 'float', 'int', 'bool' or 'category'",
        "data.max_reject_rate: got -1: input should be greater than or equal to 0",
        "model.holdout.fraction: got 0: input should be greater than 0",
        f"schedule.ingest: got '5x': {SCHEDULE}",
    ]


def test_the_readme_example_of_a_bad_spec(tmp_path: Path) -> None:
    text = spec_text({"schedule": {"ingest": "5x"}})
    error = spec_error(tmp_path, text, {"REFIT_MODEL__HOLDOUT__FRACTION": "2"})
    assert str(error) == (
        f"{tmp_path / 'refit.yaml'}: 2 problems:\n"
        "  - model.holdout.fraction: got 2 (from REFIT_MODEL__HOLDOUT__FRACTION): "
        "input should be less than 1\n"
        f"  - schedule.ingest: got '5x': {SCHEDULE}"
    )


# --- environment overrides ------------------------------------------------------------------


def test_an_override_replaces_a_field(tmp_path: Path) -> None:
    url = "postgresql+psycopg://refit@db/refit"
    project = load(tmp_path, spec_text(), {"REFIT_STORAGE__METADATA_URL": url})
    assert project.spec.storage.metadata_url == url
    assert project.metadata_url == url


def test_override_values_are_read_as_yaml(tmp_path: Path) -> None:
    text = spec_text({"model": {"params": {"C": 0.5, "max_iter": 200}}})
    environ = {"REFIT_MODEL__PARAMS__MAX_ITER": "50", "REFIT_GATE__MIN": "0.8"}
    spec = load(tmp_path, text, environ).spec
    assert spec.model.params == {"C": 0.5, "max_iter": 50}
    assert type(spec.model.params["max_iter"]) is int
    assert spec.gate.min == 0.8


def test_an_override_creates_a_section_the_file_lacks(tmp_path: Path) -> None:
    environ = {"REFIT_SCHEDULE__TRAIN": "0 3 * * *", "REFIT_STORAGE__S3__REGION": "eu-west-1"}
    spec = load(tmp_path, spec_text(), environ).spec
    assert spec.schedule.train == "0 3 * * *"
    assert spec.schedule.ingest == "1m"
    assert spec.storage.s3.region == "eu-west-1"


def test_a_bare_word_stays_text(tmp_path: Path) -> None:
    spec = load(tmp_path, spec_text(), {"REFIT_DATA__TARGET": "2024-05-01"}).spec
    assert spec.data.target == "2024-05-01"


def test_overrides_match_existing_keys_whatever_their_case(tmp_path: Path) -> None:
    text = spec_text({"data": {"features": {"tenure": DELETE, "Tenure": "int"}}})
    environ = {"REFIT_DATA__FEATURES__TENURE__NULLABLE": "false"}
    features = load(tmp_path, text, environ).spec.data.features
    assert list(features) == ["Tenure"]
    assert features["Tenure"].type is FeatureType.INT
    assert features["Tenure"].nullable is False


def test_a_bad_override_names_its_variable(tmp_path: Path) -> None:
    text = spec_text({"data": {"features": {"tenure": DELETE, "Tenure": "float"}}})
    error = spec_error(tmp_path, text, {"REFIT_DATA__FEATURES__TENURE__MIN": "low"})
    assert error.problems == [
        "data.features.Tenure.min: got 'low' (from REFIT_DATA__FEATURES__TENURE__MIN): "
        "input should be a valid number, unable to parse string as a number",
    ]


def test_an_override_that_breaks_a_rule_across_fields_names_its_variable(tmp_path: Path) -> None:
    error = spec_error(tmp_path, spec_text(), {"REFIT_GATE__MAX": "0.3"})
    assert error.problems == [
        "gate.max: got 0.3 (from REFIT_GATE__MAX): a ceiling does not apply to roc_auc "
        "(higher is better): use gate.min",
    ]


def test_a_misspelt_override_names_its_variable(tmp_path: Path) -> None:
    error = spec_error(tmp_path, spec_text(), {"REFIT_MODEL__HOLDOUT__FRACTON": "0.3"})
    assert error.problems == [
        "model.holdout.fracton: unknown field "
        "(check the spelling of REFIT_MODEL__HOLDOUT__FRACTON; got 0.3)"
    ]


def test_a_bad_source_kind_from_the_environment_names_its_variable(tmp_path: Path) -> None:
    error = spec_error(tmp_path, spec_text(), {"REFIT_DATA__SOURCE__KIND": "excel"})
    assert error.problems == [
        "data.source.kind: got 'excel' (from REFIT_DATA__SOURCE__KIND): "
        "expected csv, parquet or sql"
    ]


def test_unrelated_refit_variables_are_ignored(tmp_path: Path) -> None:
    environ = {"REFIT_DEBUG": "1", "REFIT_": "x", "REFIT_MODEL__": "x", "REFITS_NAME": "other"}
    assert load(tmp_path, spec_text(), environ).spec == load(tmp_path, spec_text()).spec


def test_the_process_environment_is_read_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_spec(tmp_path, spec_text())
    monkeypatch.setenv("REFIT_MODEL__HOLDOUT__SEED", "7")
    assert load_project(tmp_path).spec.model.holdout.seed == 7


def test_an_all_digit_secret_from_the_environment_stays_text(tmp_path: Path) -> None:
    environ = {"REFIT_STORAGE__S3__SECRET_ACCESS_KEY": "12345678"}
    secret = load(tmp_path, spec_text(), environ).spec.storage.s3.secret_access_key
    assert secret is not None and secret.get_secret_value() == "12345678"


# --- secrets --------------------------------------------------------------------------------

PASSWORD = "hunter2-b7f1"
SQL = {
    "kind": "sql",
    "path": DELETE,
    "url": f"postgresql+psycopg://reader:{PASSWORD}@db/shop",
    "query": "SELECT * FROM orders",
}


def test_secrets_never_appear_in_the_spec_repr(tmp_path: Path) -> None:
    s3 = {"access_key_id": "AKIDEXAMPLE", "secret_access_key": f"s3-{PASSWORD}"}
    spec = load(tmp_path, spec_text({"data": {"source": SQL}, "storage": {"s3": s3}})).spec
    assert PASSWORD not in repr(spec)
    assert PASSWORD not in str(spec)
    assert "**********" in repr(spec.data.source)
    assert spec.storage.s3.secret_access_key is not None
    assert spec.storage.s3.secret_access_key.get_secret_value() == f"s3-{PASSWORD}"


def test_secrets_never_appear_in_an_error_about_another_field(tmp_path: Path) -> None:
    error = spec_error(tmp_path, spec_text({"data": {"source": {**SQL, "watermark": ["id"]}}}))
    assert error.problems == ["data.source.watermark: got a list: input should be a valid string"]
    assert PASSWORD not in str(error)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"data": {"source": {**SQL, "url": DELETE, "ulr": SQL["url"]}}}, "data.source.ulr"),
        ({"storage": {"s3": {"secret_acess_key": PASSWORD}}}, "storage.s3.secret_acess_key"),
    ],
)
def test_a_misspelt_secret_is_not_printed(
    tmp_path: Path, patch: dict[str, Any], field: str
) -> None:
    found = problems(tmp_path, patch)
    hidden = "got a value not shown, as it may be a secret"
    assert f"{field}: unknown field (check its spelling; {hidden})" in found
    assert all(PASSWORD not in p for p in found)
