"""The spec's `model` section: the task, how the model is made (an estimator or the user's
function), the metric the gate compares, the tuning step, and the user's own code that runs
with the model (a feature hook and a post-processing hook)."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator, model_validator

from refit._spec_data import SpecModel
from refit._spec_problems import FieldProblem
from refit.schedule import parse_duration

IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+$")
FUNCTION_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


class Task(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    CLUSTERING = "clustering"
    """No label: the model assigns each row a cluster (k chosen by the tuning step)."""
    ANOMALY = "anomaly"
    """Each row gets an anomaly score and a flag; `data.target`, when given, is a label
    (true or 1: an anomaly) that only scores the holdout."""


SUPERVISED = frozenset({Task.CLASSIFICATION, Task.REGRESSION})
"""The tasks that learn `data.target` (which they require)."""

#: metric name -> (the tasks it scores, higher is better)
METRICS: dict[str, tuple[frozenset[Task], bool]] = {
    "accuracy": (frozenset({Task.CLASSIFICATION}), True),
    "f1": (frozenset({Task.CLASSIFICATION, Task.ANOMALY}), True),
    "roc_auc": (frozenset({Task.CLASSIFICATION, Task.ANOMALY}), True),
    "log_loss": (frozenset({Task.CLASSIFICATION}), False),
    "rmse": (frozenset({Task.REGRESSION}), False),
    "mae": (frozenset({Task.REGRESSION}), False),
    "r2": (frozenset({Task.REGRESSION}), True),
    "silhouette": (frozenset({Task.CLUSTERING}), True),
    "davies_bouldin": (frozenset({Task.CLUSTERING}), False),
    "calinski_harabasz": (frozenset({Task.CLUSTERING}), True),
    "average_precision": (frozenset({Task.ANOMALY}), True),
    "precision": (frozenset({Task.ANOMALY}), True),
    "recall": (frozenset({Task.ANOMALY}), True),
    "excess_mass": (frozenset({Task.ANOMALY}), True),
    "mass_volume": (frozenset({Task.ANOMALY}), False),
}
LABELLED_METRICS = frozenset(
    {"accuracy", "f1", "roc_auc", "log_loss", "rmse", "mae", "r2", "average_precision"}
    | {"precision", "recall"}
)
"""The metrics that compare answers with a label (an anomaly task needs `data.target`)."""
DEFAULT_METRIC = {
    Task.CLASSIFICATION: "roc_auc",
    Task.REGRESSION: "rmse",
    Task.CLUSTERING: "silhouette",
    Task.ANOMALY: "roc_auc",
}
UNLABELLED_ANOMALY_METRIC = "excess_mass"
"""An anomaly task's default metric without `data.target`."""


def metrics_of(task: Task) -> list[str]:
    """The metric names that score `task`, in `METRICS` order."""
    return [name for name, (tasks, _) in METRICS.items() if task in tasks]


class SplitKind(StrEnum):
    RANDOM = "random"
    STRATIFIED = "stratified"
    TIME = "time"


class Holdout(SpecModel):
    fraction: float = Field(default=0.2, gt=0, lt=1)
    split: SplitKind | None = None
    """random, stratified or time; default stratified for classification, random otherwise."""
    seed: int = 0


class ArtifactFormat(StrEnum):
    JOBLIB = "joblib"
    SKOPS = "skops"
    """Loads without running arbitrary code: for artifacts that must load safely."""
    ONNX = "onnx"
    """A user's own ONNX model, registered with `refit models register` (not for training)."""


# --- tuning -----------------------------------------------------------------------------------


class Sampler(StrEnum):
    GRID = "grid"
    """Every combination of the spaces (a range needs `step`, or gives `points` values)."""
    RANDOM = "random"
    TPE = "tpe"
    """Optuna's tree-structured Parzen estimator (`pip install refit[tune]`)."""


class ParamSpace(SpecModel):
    """One parameter's search space. In YAML: a list of choices (`[50, 100, 200]`), or a range
    `{int: [1, 50]}`, `{float: [0.0, 1.0]}`, `{log: [0.001, 100]}` (a float on a log scale),
    with `log: true`, `step` and (for the grid) `points` beside `int` or `float`."""

    choices: list[Any] | None = Field(default=None, min_length=1, max_length=10_000)
    kind: str | None = None
    """`int` or `float` for a range; None for choices."""
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(default=None, gt=0)
    points: int = Field(default=5, ge=2, le=1000)
    """How many values a grid takes from a float range without `step`."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {"choices": value}
        if not isinstance(value, dict) or "choices" in value or "kind" in value:
            return value
        raw = dict(value)
        given = [key for key in ("int", "float") if key in raw]
        if len(given) > 1:
            raise ValueError("give one of int or float")
        if given:
            kind = given[0]
            bounds = raw.pop(kind)
        elif isinstance(raw.get("log"), list):
            kind, bounds = "float", raw.pop("log")
            raw["log"] = True
        else:
            raise ValueError(
                "expected a list of choices, or a range such as {int: [1, 50]}, "
                "{float: [0.0, 1.0]} or {log: [0.001, 100]}"
            )
        if not (isinstance(bounds, list) and len(bounds) == 2):
            raise ValueError(f"expected {kind}: [low, high], got {bounds!r}")
        return {**raw, "kind": kind, "low": bounds[0], "high": bounds[1]}

    @model_validator(mode="after")
    def _valid_range(self) -> ParamSpace:
        if self.choices is not None:
            if self.kind is not None or self.low is not None or self.high is not None:
                raise ValueError("give a list of choices or a range, not both")
            return self
        if self.kind not in ("int", "float") or self.low is None or self.high is None:
            raise ValueError("a range needs int or float, and [low, high]")
        if not self.low <= self.high:
            raise ValueError(f"the range's low {self.low:g} is above its high {self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs a low above 0, got {self.low:g}")
        if self.kind == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int range needs whole bounds")
        return self


class TuneSpec(SpecModel):
    """The tuning step: which parameters each training run searches, how, and for how long.
    Trials score on the training rows only (cross-validation folds, or a validation part of
    them); the holdout stays the gate's."""

    params: dict[str, ParamSpace] = Field(min_length=1, max_length=100)
    """Search space per parameter (`__` for nested ones, as in `model.params`)."""
    sampler: Sampler = Sampler.RANDOM
    trials: int | None = Field(default=20, ge=1, le=100_000)
    """At most this many trials (None: no limit but `timeout`; grid: at most the grid)."""
    timeout: str | None = None
    """At most this long (`30s`, `10m`, `1h`): no trial starts after it."""
    folds: int | None = Field(default=3, ge=2, le=50)
    """Cross-validation folds of the training rows; None: one validation part of them."""
    validation_fraction: float = Field(default=0.2, gt=0, lt=1)
    """The share of the training rows a trial scores on when `folds` is None."""
    metric: str | None = None
    """The metric trials are ranked by; default the gate's (`model.metric`)."""
    jobs: int | None = Field(default=None, ge=1, le=1024)
    """Trials run at once; default the machine's cores."""
    seed: int = 0
    warm_start: bool = True
    """Try the production version's best parameters first, when the space holds them."""

    @field_validator("timeout")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _some_budget(self) -> TuneSpec:
        if self.trials is None and self.timeout is None and self.sampler is not Sampler.GRID:
            raise ValueError(f"a {self.sampler.value} search needs trials, timeout or both")
        return self

    @property
    def timeout_seconds(self) -> float | None:
        return None if self.timeout is None else parse_duration(self.timeout)


# --- the model --------------------------------------------------------------------------------


def _function_path(value: str | None) -> str | None:
    if value is not None and not FUNCTION_PATH.match(value):
        raise ValueError("expected module:function, such as my_project.train:fit")
    return value


class ModelSpec(SpecModel):
    task: Task
    estimator: str | None = None
    """Import path of a scikit-learn estimator, e.g. `sklearn.ensemble.RandomForestClassifier`."""
    function: str | None = None
    """`module:function` called as `function(X, y, params)` that returns a fitted model."""
    params: dict[str, Any] = Field(default_factory=dict)
    metric: str | None = None
    """The metric the gate compares; default roc_auc (classification), rmse (regression),
    silhouette (clustering), roc_auc or, without data.target, excess_mass (anomaly)."""
    tune: TuneSpec | None = None
    """Search hyperparameters at each training run; the best trial is registered."""
    contamination: float | None = Field(default=None, gt=0, le=0.5)
    """An anomaly detector's expected share of anomalies (its `contamination`, or `nu`)."""
    features: str | None = None
    """`module:function` of the project: `features(frame) -> frame`, applied to the inputs at
    training and at serving; the version keeps the code it was trained with."""
    postprocess: str | None = None
    """`module:function` of the project: `postprocess(record, prediction) -> prediction | None`
    run on each answer before it is sent; None withholds that answer."""
    holdout: Holdout = Holdout()
    format: ArtifactFormat = ArtifactFormat.JOBLIB
    trusted_types: list[str] = Field(default_factory=list, max_length=1000)
    """Dotted type names (`mypackage.MyScaler`) a skops artifact may hold beyond the built-in
    list (scikit-learn, NumPy, SciPy and plain containers), when saved and when loaded."""
    trained_elsewhere: bool = False
    """Versions come only from `refit models register FILE` (no estimator, no function):
    refit scores, gates, serves and watches them, and never trains."""

    _paths = field_validator("function", "features", "postprocess")(_function_path)

    @field_validator("estimator")
    @classmethod
    def _estimator_path(cls, value: str | None) -> str | None:
        if value is not None and not IMPORT_PATH.match(value):
            raise ValueError("expected an import path such as sklearn.linear_model.Ridge")
        return value

    @field_validator("trusted_types")
    @classmethod
    def _type_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not IMPORT_PATH.match(name):
                raise ValueError(f"{name!r} is not a dotted type name such as mypackage.MyScaler")
        return value

    @model_validator(mode="after")
    def _one_way_to_train(self) -> ModelSpec:
        if self.trained_elsewhere and (self.estimator or self.function):
            raise ValueError(
                "`trained_elsewhere` is true, and so refit does not train: remove "
                f"`{'estimator' if self.estimator else 'function'}`, or trained_elsewhere"
            )
        if self.estimator is None and self.function is None and not self.trained_elsewhere:
            raise ValueError(
                "neither `estimator` nor `function` is set: give one of them, "
                "e.g. estimator: sklearn.linear_model.LogisticRegression (or set "
                "trained_elsewhere: true to register models trained by another tool)"
            )
        if self.estimator is not None and self.function is not None:
            raise ValueError(
                f"both `estimator` ({self.estimator!r}) and `function` ({self.function!r}) "
                "are set: give exactly one of them"
            )
        for field, metric in (("metric", self.metric), ("tune.metric", self._tune_metric)):
            if metric is not None:
                self._check_metric(tuple(field.split(".")), metric)
        if self.format is ArtifactFormat.ONNX:
            raise FieldProblem(
                ("format",),
                self.format.value,
                "training saves joblib or skops (and converts to ONNX itself when it can); "
                "an ONNX file of your own is registered with `refit models register FILE.onnx`",
            )
        if self.holdout.split is SplitKind.STRATIFIED and self.task is not Task.CLASSIFICATION:
            raise FieldProblem(
                ("holdout", "split"),
                self.holdout.split.value,
                "a stratified split applies to classification only; expected random or time",
            )
        if self.contamination is not None and self.task is not Task.ANOMALY:
            raise FieldProblem(
                ("contamination",),
                self.contamination,
                f"applies to task: anomaly, not to {self.task.value}",
            )
        if self.tune is not None and self.trained_elsewhere:
            raise FieldProblem(("tune",), "...", "refit does not train: trained_elsewhere is true")
        return self

    @property
    def _tune_metric(self) -> str | None:
        return None if self.tune is None else self.tune.metric

    def _check_metric(self, where: tuple[str, ...], metric: str) -> None:
        fitting = ", ".join(metrics_of(self.task))
        if metric not in METRICS:
            raise FieldProblem(
                where, metric, f"unknown metric; expected one of {fitting} (for {self.task.value})"
            )
        if self.task not in METRICS[metric][0]:
            tasks = " or ".join(sorted(t.value for t in METRICS[metric][0]))
            raise FieldProblem(
                where,
                metric,
                f"a {tasks} metric, but model.task is {self.task.value}; expected one of {fitting}",
            )

    @property
    def code_paths(self) -> dict[str, str]:
        """The fields that name the project's own code, by field (`model.function`,
        `model.features`, `model.postprocess`), those that are set: a run imports them from
        the project folder."""
        named = {
            "model.function": self.function,
            "model.features": self.features,
            "model.postprocess": self.postprocess,
        }
        return {field: path for field, path in named.items() if path is not None}

    @property
    def metric_name(self) -> str:
        return self.metric or DEFAULT_METRIC[self.task]

    @property
    def tune_metric(self) -> str:
        """The metric tuning ranks trials by."""
        return self._tune_metric or self.metric_name

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric_name][1]

    @property
    def supervised(self) -> bool:
        return self.task in SUPERVISED

    @property
    def split_kind(self) -> SplitKind:
        if self.holdout.split is not None:
            return self.holdout.split
        return SplitKind.STRATIFIED if self.task is Task.CLASSIFICATION else SplitKind.RANDOM
