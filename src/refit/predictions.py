"""What a predictor takes and gives, whatever runs it: checked columns in, arrays out.

    predictions = predictor.predict(columns)      # Columns -> Predictions
    predictions.labels                            # ndarray [N]
    predictions.probabilities                     # ndarray [N, C] or None; C = classes

A server's protocols (refit's routes, Open Inference V2, MLflow's `/invocations`) each write
these arrays in their own wire shape; nothing before that holds a per-row dict or list.
Flavors (`refit.flavors`) make the predictors; the server runs them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from refit.signature import InputColumn
from refit.spec import FeatureType

Columns = list[list[Any]]
"""Checked input values, one list per signature input (in signature order), one item per row;
None is a missing value. Cheap to concatenate across requests, which micro-batching does."""

Array = np.ndarray[Any, Any]


class MatrixColumns(list[list[Any]]):
    """`Columns` of float features that were checked as one matrix, and keep it: `matrix`,
    the read-only float64 `[rows, features]` array (C order) of the same values, none
    missing. A predictor that feeds its model a matrix takes this one rather than building
    it again from the lists."""

    __slots__ = ("matrix",)

    def __init__(self, matrix: Array) -> None:
        super().__init__(matrix.T.tolist())
        matrix.flags.writeable = False  # what was checked is what the model gets
        self.matrix = matrix


def joined(parts: Sequence[Columns]) -> Columns:
    """The `Columns` of several requests' rows, `parts` one after the other (as micro-batching
    predicts them): a single part as it is; `MatrixColumns` when every part is one."""
    if len(parts) == 1:
        return parts[0]
    matrices = [part.matrix for part in parts if isinstance(part, MatrixColumns)]
    if len(matrices) == len(parts):
        return MatrixColumns(np.concatenate(matrices))
    merged: Columns = [[] for _ in parts[0]]
    for part in parts:
        for column, values in zip(merged, part, strict=True):
            column.extend(values)
    return merged


@dataclass(frozen=True, eq=False)
class Predictions:
    """A batch's answers in row order:

    - `labels` ([N]): classes, a regressor's values, cluster ids (int), or an anomaly
      detector's flags (bool, true: an anomaly);
    - `probabilities` ([N, C] float64, rounded to 6 decimals) whose columns are `classes`: a
      classifier's, or a mixture model's membership of each cluster;
    - `scores`: a clustering's distances to each cluster's centre ([N, C], columns `classes`),
      or an anomaly detector's score ([N]: higher is more anomalous; above 0 is flagged);
    - `withheld` ([N] bool): rows whose answer `model.postprocess` withheld (None: none was);
      a withheld row's other values mean nothing and are never sent.
    """

    labels: Array
    probabilities: Array | None = None
    classes: tuple[str, ...] = ()
    scores: Array | None = None
    withheld: Array | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Predictions):
            return NotImplemented
        mine, theirs = self.probabilities, other.probabilities
        same_proba = (mine is None) == (theirs is None) and (
            mine is None or theirs is None or np.array_equal(mine, theirs)
        )
        return (
            self.classes == other.classes
            and self.label_list() == other.label_list()
            and same_proba
            and _same(self.scores, other.scores)
            and _same(self.withheld, other.withheld)
        )

    def rows(self, start: int, stop: int) -> Predictions:
        """The answers of rows `start` to `stop` (views, not copies)."""
        return Predictions(
            self.labels[start:stop],
            _part(self.probabilities, start, stop),
            self.classes,
            _part(self.scores, start, stop),
            _part(self.withheld, start, stop),
        )

    def label_list(self) -> list[Any]:
        """The labels as JSON-ready Python values (numpy scalars become Python ones)."""
        labels: list[Any] = self.labels.tolist()
        return labels

    def probability_maps(self) -> list[dict[str, float]] | None:
        """Each row's probabilities as `{class: probability}`, or None without them."""
        if self.probabilities is None:
            return None
        classes = self.classes
        return [dict(zip(classes, row, strict=True)) for row in self.probabilities.tolist()]


def _same(mine: Array | None, theirs: Array | None) -> bool:
    if mine is None or theirs is None:
        return mine is None and theirs is None
    return bool(np.array_equal(mine, theirs))


def _part(values: Array | None, start: int, stop: int) -> Array | None:
    return None if values is None else values[start:stop]


class Predictor(Protocol):
    """Anything that predicts on checked input columns. Wrappers, such as the micro-batcher,
    are Predictors too. `quick` says a call on a few rows takes microseconds (ONNX Runtime):
    cheaper run where the request is than handed to a thread."""

    quick: bool

    def predict(self, columns: Columns) -> Predictions: ...


Fetch = Callable[[str, str], bytes]
"""`fetch(uri, sha256)`: an artifact's bytes from the store, checked against its sha256."""


@dataclass(frozen=True)
class Ready:
    """What a flavor's `serve` gives: a warmed-up predictor and how it runs. `runtime` names
    what runs it (for `/v1/models`); `note` says, as a client may read it, why a faster runtime
    is not used; `error` is the full error of an artifact that failed to load while another of
    the same version serves instead (counted and reported like any load failure)."""

    predictor: Predictor
    runtime: str
    note: str | None = None
    error: str | None = None


class NonFiniteOutputError(Exception):
    """The model answered NaN, an infinity or nothing for some rows, which no client may be
    sent as a prediction; `rows` are their indices in the call."""

    def __init__(self, rows: list[int], what: str) -> None:
        super().__init__(f"the model answered {what} for {len(rows)} row(s)")
        self.rows = rows
        self.what = what


def check_finite(labels: Array, proba: Array | None, scores: Array | None = None) -> None:
    """Raise `NonFiniteOutputError` unless every row's label, probabilities and scores (a
    clustering's distances, an anomaly detector's score) are values."""
    rows = len(labels)
    if not rows:
        return
    kind = labels.dtype.kind
    if kind in "fc":
        fine = bool(np.isfinite(labels).all())
    else:
        fine = kind != "O" or not any(map(_null, labels.flat))
    # One pass when all is well (NaN and infinities make the sum of probabilities NaN or
    # infinite); the rows at fault are found only when something is not.
    if (
        fine
        and (proba is None or math.isfinite(proba.sum()))
        and (scores is None or math.isfinite(scores.sum()))
    ):
        return
    bad = np.zeros(rows, dtype=bool)
    what = "NaN or an infinity as its prediction"
    if labels.dtype.kind in "fc":
        bad |= ~np.isfinite(labels).reshape(rows, -1).all(axis=1)
    elif labels.dtype.kind == "O":  # None, or a NaN among labels of another type
        bad |= np.fromiter(map(_null, labels.flat), bool, labels.size).reshape(rows, -1).any(axis=1)
        what = "no value (null or NaN) as its prediction"
    if proba is not None and not np.isfinite(proba).all():
        unusable = ~np.isfinite(proba).reshape(rows, -1).all(axis=1)
        if not bad.any():
            what = "NaN or an infinity among its probabilities"
        bad |= unusable
    if scores is not None and not np.isfinite(scores).all():
        unusable = ~np.isfinite(scores).reshape(rows, -1).all(axis=1)
        if not bad.any():
            what = "NaN or an infinity among its scores"
        bad |= unusable
    if bad.any():
        raise NonFiniteOutputError(np.flatnonzero(bad).tolist(), what)


def _null(value: Any) -> bool:
    return value is None or value != value


def columns_of(frame: pd.DataFrame, names: list[str]) -> Columns:
    """The `Columns` of a DataFrame's `names` (pandas' missing values become None)."""
    return [[None if pd.isna(v) else v for v in frame[name].tolist()] for name in names]


def frame_of(inputs: list[InputColumn], columns: Columns) -> pd.DataFrame:
    """The typed DataFrame of checked `columns` for the signature's `inputs`."""
    if all(c.type is FeatureType.FLOAT for c in inputs):
        # One float64 block instead of a Series per column: several times faster per request.
        if isinstance(columns, MatrixColumns):  # a copy: the model may write to its input
            matrix = columns.matrix.copy()
        else:
            matrix = np.array(columns, dtype=np.float64).T.reshape(len(columns[0]), len(inputs))
        return pd.DataFrame(matrix, columns=[c.name for c in inputs], copy=False)
    return pd.DataFrame({c.name: _series(c, v) for c, v in zip(inputs, columns, strict=True)})


def _series(column: InputColumn, values: list[Any]) -> pd.Series[Any]:
    if column.type is FeatureType.FLOAT:
        return pd.Series(values, dtype="float64")
    if column.type is FeatureType.INT:
        return pd.Series(values, dtype="Int64" if column.nullable else "int64")
    if column.type is FeatureType.BOOL:
        return pd.Series(values, dtype="boolean")
    return pd.Series([np.nan if v is None else v for v in values], dtype=object)
