"""The project spec: `refit.yaml` as typed pydantic models.

Every problem is reported with the field path, the value received and what was expected;
`refit.project` reads the file, applies environment overrides and validates it with these.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from refit._spec_data import (
    BUCKET_NAME,
    CsvSource,
    DataSpec,
    Feature,
    FeatureType,
    ParquetSource,
    SnapshotMode,
    SnapshotPolicy,
    Source,
    SpecModel,
    SqlSource,
)
from refit._spec_monitor import MonitorSpec
from refit._spec_problems import FieldProblem
from refit.apikeys import MAX_KEYS, parse_key_line
from refit.schedule import parse_schedule

SPEC_FILE = "refit.yaml"

__all__ = [
    "BUCKET_NAME",
    "SPEC_FILE",
    "CsvSource",
    "DataSpec",
    "Feature",
    "FeatureType",
    "MonitorSpec",
    "ParquetSource",
    "SnapshotMode",
    "SnapshotPolicy",
    "Source",
    "SqlSource",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+$")
_FUNCTION_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


# --- model and gate -------------------------------------------------------------------------


class Task(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


#: metric name -> (task, higher is better)
METRICS: dict[str, tuple[Task, bool]] = {
    "accuracy": (Task.CLASSIFICATION, True),
    "f1": (Task.CLASSIFICATION, True),
    "roc_auc": (Task.CLASSIFICATION, True),
    "log_loss": (Task.CLASSIFICATION, False),
    "rmse": (Task.REGRESSION, False),
    "mae": (Task.REGRESSION, False),
    "r2": (Task.REGRESSION, True),
}
DEFAULT_METRIC = {Task.CLASSIFICATION: "roc_auc", Task.REGRESSION: "rmse"}


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


class ModelSpec(SpecModel):
    task: Task
    estimator: str | None = None
    """Import path of a scikit-learn estimator, e.g. `sklearn.ensemble.RandomForestClassifier`."""
    function: str | None = None
    """`module:function` called as `function(X, y, params)` that returns a fitted model."""
    params: dict[str, Any] = Field(default_factory=dict)
    metric: str | None = None
    """The metric the gate compares; default roc_auc (classification) or rmse (regression)."""
    holdout: Holdout = Holdout()
    format: ArtifactFormat = ArtifactFormat.JOBLIB
    trusted_types: list[str] = Field(default_factory=list, max_length=1000)
    """Dotted type names (`mypackage.MyScaler`) a skops artifact may hold beyond the built-in
    list (scikit-learn, NumPy, SciPy and plain containers), when saved and when loaded."""
    trained_elsewhere: bool = False
    """Versions come only from `refit models register FILE` (no estimator, no function):
    refit scores, gates, serves and watches them, and never trains."""

    @field_validator("estimator")
    @classmethod
    def _estimator_path(cls, value: str | None) -> str | None:
        if value is not None and not _IMPORT_PATH.match(value):
            raise ValueError("expected an import path such as sklearn.linear_model.Ridge")
        return value

    @field_validator("trusted_types")
    @classmethod
    def _type_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _IMPORT_PATH.match(name):
                raise ValueError(f"{name!r} is not a dotted type name such as mypackage.MyScaler")
        return value

    @field_validator("function")
    @classmethod
    def _function_path(cls, value: str | None) -> str | None:
        if value is not None and not _FUNCTION_PATH.match(value):
            raise ValueError("expected module:function, such as my_project.train:fit")
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
        if self.metric is not None:
            fitting = ", ".join(m for m, (task, _) in METRICS.items() if task is self.task)
            if self.metric not in METRICS:
                raise FieldProblem(
                    ("metric",),
                    self.metric,
                    f"unknown metric; expected one of {fitting} (for {self.task.value})",
                )
            if METRICS[self.metric][0] is not self.task:
                raise FieldProblem(
                    ("metric",),
                    self.metric,
                    f"a {METRICS[self.metric][0].value} metric, but model.task is "
                    f"{self.task.value}; expected one of {fitting}",
                )
        if self.format is ArtifactFormat.ONNX:
            raise FieldProblem(
                ("format",),
                self.format.value,
                "training saves joblib or skops (and converts to ONNX itself when it can); "
                "an ONNX file of your own is registered with `refit models register FILE.onnx`",
            )
        if self.holdout.split is SplitKind.STRATIFIED and self.task is Task.REGRESSION:
            raise FieldProblem(
                ("holdout", "split"),
                self.holdout.split.value,
                "a stratified split applies to classification only; expected random or time",
            )
        return self

    @property
    def metric_name(self) -> str:
        return self.metric or DEFAULT_METRIC[self.task]

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric_name][1]

    @property
    def split_kind(self) -> SplitKind:
        if self.holdout.split is not None:
            return self.holdout.split
        return SplitKind.STRATIFIED if self.task is Task.CLASSIFICATION else SplitKind.RANDOM


class GateSpec(SpecModel):
    """When a newly trained version (challenger) replaces production (champion)."""

    min: float | None = None
    """Floor for metrics where higher is better: the challenger must reach it."""
    max: float | None = None
    """Ceiling for metrics where lower is better (rmse, mae, log_loss)."""
    min_improvement: float = Field(default=0.0, ge=0)
    """How much better than the champion the challenger must be, in metric units: more than
    this (a tie keeps production), or at least this with `promote_ties`."""
    promote_ties: bool = False
    """Promote a challenger whose improvement equals `min_improvement` (with 0: one that ties
    production, such as a retrain on the same data)."""


# --- schedule and storage -------------------------------------------------------------------


def _check_schedule(value: str | None) -> str | None:
    if value is not None:
        parse_schedule(value)  # the scheduler's own grammar: what it accepts, it can run
    return value


class Schedule(SpecModel):
    ingest: str | None = "1m"
    train: str | None = "5m"
    monitor: str | None = "5m"
    """How often `refit monitor` judges the logged predictions (drift, live quality)."""
    metrics_port: int | None = Field(default=9464, ge=0, le=65535)
    """Where `refit scheduler` serves its Prometheus `/metrics`, on `serve.host` (0: a free
    port the system chooses; `off` or None: nowhere)."""
    lease_timeout: float = Field(default=30.0, ge=1.0, le=86400.0)
    """Seconds a scheduler's hold on a running job outlives it: a scheduler killed mid-job
    blocks that job this long before another scheduler takes it over (renewed every third)."""

    _checked = field_validator("ingest", "train", "monitor")(_check_schedule)

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _port_or_off(cls, value: Any) -> Any:
        # YAML reads `off` (and `no`, `false`) as False, which would pass for port 0.
        if value is False or value == "off":
            return None
        if value is True or (isinstance(value, str) and not value.strip().isdigit()):
            raise ValueError("expected a port number (0 to 65535) or off")
        return value


class S3Options(SpecModel):
    endpoint_url: str | None = None
    """For S3-compatible stores (MinIO, Ceph, ...); AWS when absent."""
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None


class Storage(SpecModel):
    metadata_url: str = "sqlite:///.refit/refit.db"
    """The registry's database: SQLite (a path relative to the project) or PostgreSQL."""
    artifacts_url: str = ".refit/artifacts"
    """A folder (relative to the project) or `s3://bucket/prefix`."""
    s3: S3Options = S3Options()

    @field_validator("metadata_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql")):
            raise ValueError("expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")
        return value


RouteAccess = Literal["open", "predict", "admin"]
"""Who may call a route: anyone, or a key holding that scope."""

LogFormat = Literal["text", "json"]
"""How a server writes its log lines: uvicorn's text, or one JSON object per line."""


class ServeSpec(SpecModel):
    """How `refit serve` runs (command-line options override these)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    poll_interval: float = Field(default=2.0, gt=0)
    """Seconds between two looks at which version holds production."""
    max_batch_rows: int = Field(default=10_000, ge=1)
    """The most records one batch request may carry."""
    max_body_bytes: int = Field(default=10 * 2**20, ge=1024)
    """The largest request body accepted."""
    max_batch_size: int = Field(default=64, ge=1)
    """The most rows micro-batching gathers into one call of the model."""
    max_batch_delay_ms: float = Field(default=0.0, ge=0, le=100)
    """How long a call may wait for more rows; 0: only what arrived during the last call."""
    max_queue_rows: int = Field(default=4096, ge=1)
    """Rows waiting beyond this are refused at once with 503 and Retry-After."""
    extra_fields: Literal["reject", "ignore"] = "reject"
    """A request's fields that are no input of the model: refused (422), or ignored."""
    allow_pickle: bool = True
    """false: refuse versions saved as a pickle (joblib), which runs code when loaded."""
    auth: Literal["keys", "none"] = "keys"
    """`keys`: every route but health needs an API key once one is configured, and with none
    the server listens on loopback only; `none`: no keys, on any address."""
    keys: list[str] = Field(default_factory=list, max_length=MAX_KEYS)
    """Hash lines of the API keys (`SCOPE NAME sha256:HEX`), as `refit keys create` prints."""
    metrics_access: RouteAccess = "open"
    """Who may read /metrics: `open`, or keys of scope `predict` or `admin`."""
    docs_access: RouteAccess = "open"
    """Who may read /docs, /redoc and /openapi.json: `open`, or keys of a scope."""
    allowed_hosts: list[str] | None = Field(default=None, max_length=100)
    """The `Host` names a request may carry (any port; `*`: any); default 127.0.0.1, localhost
    and ::1 when listening on loopback, any otherwise."""
    log_format: LogFormat = "text"
    """The server's log lines on stderr: uvicorn's text, or one JSON object per line."""
    access_log: bool = True
    """Log one line per answered request."""

    drain_delay: float = Field(default=5.0, ge=0, le=300)
    """Seconds a server keeps accepting and answering after SIGTERM (readiness false, every
    answer `Connection: close`) so that load balancers stop sending before it stops listening."""
    grace_period: float = Field(default=25.0, gt=0, le=3600)
    """Seconds it then waits for the requests in flight before it cancels them and exits."""

    max_header_bytes: int = Field(default=32 * 2**10, ge=1024, le=2**20)
    """The largest request line and headers together; more is refused with 431."""
    max_url_bytes: int = Field(default=8 * 2**10, ge=256, le=2**20)
    """The longest request URL (path and query); longer is refused with 414."""
    header_timeout: float = Field(default=10.0, gt=0, le=3600)
    """Seconds from a request's first byte to the end of its headers; later is closed (408)."""
    body_timeout: float = Field(default=30.0, gt=0, le=3600)
    """Seconds a request body may pause between two reads; longer is closed (408)."""
    keep_alive_timeout: float = Field(default=5.0, gt=0, le=3600)
    """Seconds an open connection may wait for its next (or first) request before it is closed."""
    max_connections: int = Field(default=512, ge=1, le=1_000_000)
    """Open connections per worker; past it the one idle longest is closed for a new one."""
    max_running_requests: int = Field(default=16, ge=1, le=100_000)
    """Requests per worker run at once; more wait unread in their connections (probes never)."""

    @field_validator("keys")
    @classmethod
    def _hash_lines(cls, lines: list[str]) -> list[str]:
        for number, line in enumerate(lines):
            try:
                parse_key_line(line)
            except ValueError as exc:
                raise FieldProblem((str(number),), "a value not shown", str(exc)) from None
        return lines

    @model_validator(mode="after")
    def _keys_or_none(self) -> ServeSpec:
        if self.auth == "none" and self.keys:
            raise FieldProblem(
                ("auth",),
                self.auth,
                "serve.keys are configured, and `none` would ignore them: remove serve.keys, "
                "or auth: none",
            )
        return self


class Spec(SpecModel):
    """A whole `refit.yaml`."""

    name: str
    data: DataSpec
    model: ModelSpec
    gate: GateSpec = GateSpec()
    schedule: Schedule = Schedule()
    serve: ServeSpec = ServeSpec()
    monitor: MonitorSpec = MonitorSpec()
    storage: Storage = Storage()

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("expected lowercase letters, digits, - and _ (it is used in URLs)")
        return value

    @model_validator(mode="after")
    def _gate_fits_metric(self) -> Spec:
        higher = self.model.higher_is_better
        metric = self.model.metric_name
        if higher and self.gate.max is not None:
            raise FieldProblem(
                ("gate", "max"),
                self.gate.max,
                f"a ceiling does not apply to {metric} (higher is better): use gate.min",
            )
        if not higher and self.gate.min is not None:
            raise FieldProblem(
                ("gate", "min"),
                self.gate.min,
                f"a floor does not apply to {metric} (lower is better): use gate.max",
            )
        if self.model.split_kind is SplitKind.TIME and self.data.time_column is None:
            raise FieldProblem(
                ("model", "holdout", "split"),
                SplitKind.TIME.value,
                "a time split needs data.time_column (the column the rows are ordered by)",
            )
        return self
