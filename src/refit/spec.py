"""The project spec: `refit.yaml` as typed pydantic models.

Every problem is reported with the field path, the value received and what was expected;
`refit.project` reads the file, applies environment overrides and validates it with these.
"""

from __future__ import annotations

import re
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
from refit._spec_model import (
    DEFAULT_METRIC,
    LABELLED_METRICS,
    METRICS,
    SUPERVISED,
    UNLABELLED_ANOMALY_METRIC,
    ArtifactFormat,
    Holdout,
    ModelSpec,
    ParamSpace,
    Sampler,
    SplitKind,
    Task,
    TuneSpec,
    metrics_of,
)
from refit._spec_monitor import MonitorSpec
from refit._spec_problems import FieldProblem
from refit.apikeys import MAX_KEYS, parse_key_line
from refit.schedule import parse_schedule

SPEC_FILE = "refit.yaml"

__all__ = [
    "BUCKET_NAME",
    "DEFAULT_METRIC",
    "LABELLED_METRICS",
    "METRICS",
    "SPEC_FILE",
    "SUPERVISED",
    "ArtifactFormat",
    "CsvSource",
    "DataSpec",
    "Feature",
    "FeatureType",
    "Holdout",
    "ModelSpec",
    "MonitorSpec",
    "ParamSpace",
    "ParquetSource",
    "Sampler",
    "SnapshotMode",
    "SnapshotPolicy",
    "Source",
    "SplitKind",
    "SqlSource",
    "Task",
    "TuneSpec",
    "metrics_of",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


# --- gate -------------------------------------------------------------------------------------


GateTest = Literal["paired", "bootstrap", "none"]
"""How the gate compares challenger and champion: with an interval, or by point values."""


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
    production, such as a retrain on the same data); with a paired test: one whose interval
    reaches `min_improvement` (not clearly worse than it)."""
    test: GateTest = "paired"
    """How the challenger's and the champion's metric on the same holdout rows are compared:
    `paired` (an interval of the difference: McNemar for accuracy, DeLong for a binary roc_auc,
    the paired bootstrap over rows otherwise), `bootstrap` (always the bootstrap), `none` (the
    point values)."""
    confidence: float = Field(default=0.95, ge=0.5, lt=1)
    """The interval's confidence (two-sided): promotion needs its lower end (the upper for
    rmse, mae, log_loss) past `min_improvement`."""
    resamples: int = Field(default=1000, ge=100, le=100_000)
    """Bootstrap resamples of the holdout rows."""
    seed: int = 0
    """The bootstrap's seed: a decision computed again gives the same interval."""


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

    @model_validator(mode="before")
    @classmethod
    def _unlabelled_anomaly_metric(cls, raw: Any) -> Any:
        # An anomaly task's default metric needs a label; without data.target it is one that
        # judges the detector by its own scores.
        if not isinstance(raw, dict):
            return raw
        model, data = raw.get("model"), raw.get("data")
        if (
            isinstance(model, dict)
            and model.get("task") == Task.ANOMALY.value
            and model.get("metric") is None
            and isinstance(data, dict)
            and data.get("target") is None
        ):
            return {**raw, "model": {**model, "metric": UNLABELLED_ANOMALY_METRIC}}
        return raw

    @model_validator(mode="after")
    def _gate_fits_metric(self) -> Spec:
        task = self.model.task
        if task in SUPERVISED and self.data.target is None:
            raise FieldProblem(
                ("data", "target"),
                None,
                f"model.task {task.value} learns a target: name the column it predicts",
            )
        if task is Task.CLUSTERING and self.data.target is not None:
            raise FieldProblem(
                ("data", "target"),
                self.data.target,
                "a clustering learns no target: remove data.target (or list it in features)",
            )
        if self.data.target is None:
            for where, metric in (
                (("model", "metric"), self.model.metric_name),
                (("model", "tune", "metric"), self.model.tune_metric),
            ):
                if metric in LABELLED_METRICS:
                    raise FieldProblem(
                        where,
                        metric,
                        f"{metric} compares answers with a label, and data.target is not set: "
                        f"name the label column, or use one of "
                        f"{', '.join(m for m in metrics_of(task) if m not in LABELLED_METRICS)}",
                    )
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
