"""The `data` section of the project spec: features, sources and the snapshot policy.

`refit.spec` holds the whole spec and re-exports these; import them from there.
"""

from __future__ import annotations

import codecs
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from refit._spec_problems import FieldProblem


class SpecModel(BaseModel):
    """The base of every section of the spec."""

    # Numbers become text in text fields: `values: [1, 2]`, or an all-digit password read from
    # an environment variable (override values are parsed as YAML).
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


# --- data -----------------------------------------------------------------------------------


class FeatureType(StrEnum):
    """The type of a feature column."""

    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    CATEGORY = "category"

    @property
    def numeric(self) -> bool:
        return self in (FeatureType.FLOAT, FeatureType.INT)


class Feature(SpecModel):
    """One input column of the model. In YAML, `age: float` is short for `age: {type: float}`."""

    type: FeatureType
    nullable: bool = True
    """Whether a missing value is allowed (it is then imputed by the pipeline)."""
    min: float | None = None
    """Smallest allowed value (numeric features)."""
    max: float | None = None
    """Largest allowed value (numeric features)."""
    values: list[str] | None = None
    """The allowed categories (category features); any value when absent."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _bounds_fit_type(self) -> Feature:
        for bound in ("min", "max"):
            value = getattr(self, bound)
            if value is not None and not self.type.numeric:
                raise FieldProblem(
                    (bound,),
                    value,
                    f"{bound} applies to numeric features (float, int), not to {self.type.value}",
                )
        if self.values is not None and self.type is not FeatureType.CATEGORY:
            raise FieldProblem(
                ("values",),
                self.values,
                f"values apply to category features only, not to {self.type.value}",
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise FieldProblem(
                ("min",), self.min, f"greater than max ({self.max:g}): expected min <= max"
            )
        return self


BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
"""S3's rule for a bucket name."""


def _check_file_path(value: str) -> str:
    """A local path (relative to the project), or `s3://bucket/prefix/`, `s3://bucket/key`,
    `s3://bucket/prefix/*.csv`."""
    if not value.strip():
        raise ValueError("expected a file, a folder or a glob, locally or as s3://bucket/prefix/")
    scheme, sep, rest = value.partition("://")
    if not sep:
        return value
    if scheme != "s3":
        raise ValueError(
            f"{scheme}:// is not supported: expected a local path or s3://bucket/prefix/"
        )
    if not BUCKET_NAME.match(rest.split("/", 1)[0]):
        raise ValueError("expected s3://BUCKET/prefix/ with a bucket name (3-63 of a-z 0-9 . -)")
    return value


class CsvSource(SpecModel):
    """CSV files: one file, a folder (every `*.csv` in it) or a glob, locally or in S3
    (`s3://bucket/prefix/`). New files are picked up."""

    kind: Literal["csv"]
    path: str
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    """The character between fields (`;`, `\\t`, `|`)."""
    quotechar: str = Field(default='"', min_length=1, max_length=1)
    """The character that quotes a field holding the delimiter or a line break."""
    decimal: str = Field(default=".", min_length=1, max_length=1)
    """The decimal mark of numbers (`,` for `1,5`)."""
    encoding: str = "utf-8"
    """The files' text encoding (`latin-1`, `cp1252`, `utf-16`, ...)."""
    na_values: list[str] = []
    """Texts that mean a missing value besides an empty field, e.g. `[n/a, NA, "-"]`."""

    _path = field_validator("path")(_check_file_path)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError("not a text encoding Python knows (e.g. utf-8, latin-1)") from None
        return value

    @model_validator(mode="after")
    def _distinct_marks(self) -> CsvSource:
        if self.decimal in (self.delimiter, self.quotechar):
            raise FieldProblem(
                ("decimal",), self.decimal, "the decimal mark must differ from the delimiter"
            )
        if self.quotechar == self.delimiter:
            raise FieldProblem(
                ("quotechar",), self.quotechar, "the quote character must differ from the delimiter"
            )
        return self


class ParquetSource(SpecModel):
    """Parquet files: one file, a folder (every `*.parquet` in it) or a glob, locally or in S3."""

    kind: Literal["parquet"]
    path: str

    _path = field_validator("path")(_check_file_path)


class SqlSource(SpecModel):
    """A SQL query over a SQLAlchemy URL, read incrementally through a watermark column."""

    kind: Literal["sql"]
    url: SecretStr
    """SQLAlchemy URL of the database to read, e.g. `postgresql+psycopg://user:pw@host/db`."""
    query: str
    """A SELECT; refit wraps it to read only rows past the watermark."""
    watermark: str | None = None
    """An increasing column (id or timestamp); each ingest reads the rows past the last value."""


Source = Annotated[CsvSource | ParquetSource | SqlSource, Field(discriminator="kind")]


class SnapshotMode(StrEnum):
    CUMULATIVE = "cumulative"
    """Every valid row ingested so far."""
    WINDOW = "window"
    """The last `rows` rows and/or the last `days` days (by `data.time_column`)."""
    LATEST = "latest"
    """Only the newest batch (for sources that export the full dataset each time)."""


class SnapshotPolicy(SpecModel):
    mode: SnapshotMode = SnapshotMode.CUMULATIVE
    rows: int | None = Field(default=None, gt=0)
    days: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _window_has_a_size(self) -> SnapshotPolicy:
        if self.mode is SnapshotMode.WINDOW and self.rows is None and self.days is None:
            raise FieldProblem(
                ("mode",), self.mode.value, "a window snapshot needs `rows` or `days` (or both)"
            )
        for size in ("rows", "days"):
            value = getattr(self, size)
            if self.mode is not SnapshotMode.WINDOW and value is not None:
                raise FieldProblem(
                    (size,), value, f"{size} applies to mode: window, not to {self.mode.value}"
                )
        return self


class DataSpec(SpecModel):
    source: Source
    target: str | None = None
    """The column the model learns to predict (classification, regression), or an anomaly
    task's label (true or 1: an anomaly); a clustering has none."""
    features: dict[str, Feature] = Field(min_length=1)
    time_column: str | None = None
    """A timestamp column: used by time-based holdout splits and by `days` windows."""
    snapshot: SnapshotPolicy = SnapshotPolicy()
    max_reject_rate: float = Field(default=0.1, ge=0, le=1)
    """A batch with a larger share of invalid rows is refused as a whole."""
    drop_duplicates: bool = False
    """Drop a new row equal to a row of the snapshot or to an earlier row of its batch."""

    @model_validator(mode="after")
    def _columns_are_distinct(self) -> DataSpec:
        if self.target is not None and self.target in self.features:
            raise FieldProblem(
                ("target",),
                self.target,
                "the target is also listed in data.features; a model cannot learn from it",
            )
        if self.time_column is not None and self.time_column in self.features:
            raise FieldProblem(
                ("time_column",),
                self.time_column,
                "the time column is also listed in data.features",
            )
        if self.snapshot.days is not None and self.time_column is None:
            raise FieldProblem(
                ("snapshot", "days"),
                self.snapshot.days,
                "a window of days needs data.time_column (the column the days are counted by)",
            )
        return self
