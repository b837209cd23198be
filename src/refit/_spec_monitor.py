"""The spec's `monitor` section: what the server logs of what it serves, and how the monitor
role judges it (drift, live quality) and when it asks for training."""

from __future__ import annotations

from pydantic import Field, field_validator

from refit._spec_data import SpecModel
from refit.schedule import parse_duration


def _check_duration(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)  # the one grammar of durations (that of intervals)
    return value


class MonitorSpec(SpecModel):
    """Prediction logging (by the server) and the monitor's judgement (by `refit monitor`)."""

    log: bool = True
    """Log a sample of what the server answers (inputs, outputs, request ids) to the artifact
    store, off the request path."""
    sample: float = Field(default=1.0, ge=0.0, le=1.0)
    """The fraction of requests logged (each request wholly or not at all)."""
    buffer_rows: int = Field(default=20_000, ge=1, le=10_000_000)
    """Rows a worker holds for logging per model; past it new rows are dropped and counted."""
    flush_rows: int = Field(default=5_000, ge=1, le=10_000_000)
    """A worker writes its buffered rows as one Parquet file once this many are waiting..."""
    flush_seconds: float = Field(default=10.0, gt=0, le=86_400)
    """... or this many seconds after the oldest of them arrived."""
    retention: str = "30d"
    """How long logged predictions and feedback are kept; the monitor deletes older files."""

    window: str = "1h"
    """The monitor compares the inputs logged over this last period with the training data..."""
    window_rows: int | None = Field(default=None, ge=1, le=10_000_000)
    """... or only the most recent this many rows of it."""
    min_rows: int = Field(default=100, ge=1)
    """Fewer logged rows in the window than this: no verdict on drift."""
    p_value: float = Field(default=0.01, gt=0, lt=1)
    """A feature drifts only when its test (Kolmogorov-Smirnov, chi-squared) is below this..."""
    min_effect: float = Field(default=0.1, gt=0)
    """... and its effect size passes this: the Wasserstein distance over the training spread
    (numbers) or the Jensen-Shannon distance (categories)."""
    psi_threshold: float = Field(default=0.2, gt=0)
    """A population stability index above this also counts as an effect."""
    max_missing_increase: float = Field(default=0.1, gt=0, le=1)
    """A feature whose share of missing values rises by more than this drifts."""
    max_unseen_share: float = Field(default=0.05, gt=0, le=1)
    """A category feature whose share of values never seen in training passes this drifts."""
    retrain_on_drift: bool = False
    """Ask for a training run when a feature drifts (recorded with the report as its cause)."""

    min_labels: int = Field(default=30, ge=1)
    """Labelled rows (from feedback) a version needs before its live quality is judged."""
    min_quality: float | None = None
    """Ask for a training run when a version's live metric passes below this (above it for
    rmse, mae, log_loss)."""
    max_quality_drop: float | None = Field(default=None, gt=0)
    """Ask for a training run when the live metric is worse than the holdout's by more."""

    _durations = field_validator("retention", "window")(_check_duration)
