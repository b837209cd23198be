"""A model's signature: the input columns it takes and the output it gives.

It is recorded with every model version as JSON (`to_dict` / `from_dict`), types the server's
request and response bodies, and yields a small valid input (`sample_frame`) to warm a loaded
model up before it answers requests. Example of `to_dict()`::

    {"inputs": [{"name": "tenure", "type": "float", "nullable": true, "values": null,
                 "min": 0.0, "max": null},
                {"name": "plan", "type": "category", "nullable": false,
                 "values": ["basic", "pro"], "min": null, "max": null}],
     "output": {"task": "classification", "type": "bool", "classes": [false, true],
                "probabilities": true, "scores": null}}

A clustering's output is `{"task": "clustering", "type": "int", "classes": [0, 1, 2],
"probabilities": false, "scores": "distances"}` (k-means: the cluster ids, and each row's
distance to each centre); an anomaly detector's is `{"task": "anomaly", "type": "bool",
"classes": null, "probabilities": false, "scores": "score"}` (the flag, and the score).

A category column lists its `values` only when the spec declares them: the categories seen in
training are not a contract, and the pipeline takes unseen ones.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from refit.errors import StoreError
from refit.spec import DataSpec, FeatureType, Task

OUTPUT_TYPES = ("float", "int", "bool", "string")
DISTANCES = "distances"
"""`Output.scores` of a clustering that gives each row's distance to each cluster centre."""
ANOMALY_SCORE = "score"
"""`Output.scores` of an anomaly detector: each row's score, higher is more anomalous."""
SCORES = (DISTANCES, ANOMALY_SCORE)


@dataclass(frozen=True)
class InputColumn:
    """One input column, e.g. `InputColumn("plan", FeatureType.CATEGORY, values=["a", "b"])`."""

    name: str
    type: FeatureType
    nullable: bool = True
    values: list[str] | None = None
    """The allowed categories of a category column, when the spec declares them."""
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Output:
    """What the model gives, e.g. `Output(Task.CLASSIFICATION, "string", ["no", "yes"], True)`."""

    task: Task
    type: str
    """The type of a prediction: one of `OUTPUT_TYPES`."""
    classes: list[Any] | None = None
    """A classifier's classes, in the order of its probability columns."""
    probabilities: bool = False
    """Whether the model gives class probabilities (`predict_proba`); for a clustering, each
    cluster's membership (a mixture model)."""
    scores: str | None = None
    """`distances` (a clustering's distance to each cluster centre, by `classes`), `score` (an
    anomaly detector's score, higher is more anomalous), or None."""


@dataclass(frozen=True)
class Signature:
    """What a model takes and gives; round-trips through JSON."""

    inputs: list[InputColumn]
    output: Output

    @property
    def names(self) -> list[str]:
        return [column.name for column in self.inputs]

    def requiring(self, names: Collection[str]) -> Signature:
        """This signature with the inputs `names` not nullable (a null there is refused)."""
        inputs = [replace(c, nullable=False) if c.name in names else c for c in self.inputs]
        return replace(self, inputs=inputs)

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        for column in raw["inputs"]:
            column["type"] = str(column["type"])
        raw["output"]["task"] = str(raw["output"]["task"])
        return raw

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Signature:
        try:
            inputs = [
                InputColumn(**{**column, "type": FeatureType(column["type"])})
                for column in raw["inputs"]
            ]
            output = Output(**{**raw["output"], "task": Task(raw["output"]["task"])})
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"a stored model signature is malformed: {exc!r}") from exc
        if output.type not in OUTPUT_TYPES:
            raise StoreError(f"a stored model signature has an unknown output type {output.type!r}")
        if output.scores is not None and output.scores not in SCORES:
            raise StoreError(f"a stored model signature has unknown scores {output.scores!r}")
        return cls(inputs=inputs, output=output)


def signature_for(
    model: Any,
    data: DataSpec,
    task: Task,
    y: pd.Series[Any] | np.ndarray[Any, Any] | None = None,
) -> Signature:
    """The signature of `model`, fitted on the features of `data` (and the target `y`, for
    classification and regression)."""
    inputs = [
        InputColumn(
            name=name,
            type=feature.type,
            nullable=feature.nullable,
            values=list(feature.values) if feature.values is not None else None,
            min=feature.min,
            max=feature.max,
        )
        for name, feature in data.features.items()
    ]
    if task is Task.REGRESSION:
        return Signature(inputs, Output(task=task, type="float"))
    if task is Task.ANOMALY:
        return Signature(inputs, Output(task=task, type="bool", scores=ANOMALY_SCORE))
    if task is Task.CLUSTERING:
        final = model.steps[-1][1] if hasattr(model, "steps") else model
        centres = hasattr(final, "cluster_centers_") and callable(getattr(final, "transform", None))
        output = Output(
            task=task,
            type="int",
            classes=cluster_ids(final),
            probabilities=callable(getattr(model, "predict_proba", None)),
            scores=DISTANCES if centres else None,
        )
        return Signature(inputs, output)
    classes = getattr(model, "classes_", None)
    if classes is None:
        output = Output(task=task, type=_type_of(np.asarray(y).dtype))
    else:
        array = np.asarray(classes)
        output = Output(
            task=task,
            type=_type_of(array.dtype),
            classes=[value.item() if isinstance(value, np.generic) else value for value in array],
            probabilities=hasattr(model, "predict_proba"),
        )
    return Signature(inputs, output)


def cluster_ids(estimator: Any) -> list[int] | None:
    """The ids a fitted clusterer assigns, in order: one per centre or mixture component (the
    columns of its distances or probabilities), else those it gave its training rows; None
    when it says neither."""
    for attribute in ("weights_", "cluster_centers_"):
        values = getattr(estimator, attribute, None)
        if values is not None:
            return list(range(len(values)))
    for attribute in ("subcluster_labels_", "labels_"):
        values = getattr(estimator, attribute, None)
        if values is not None:
            return [int(v) for v in np.unique(np.asarray(values))]
    return None


def anomaly_score(model: Any, X: Any) -> np.ndarray[Any, Any]:
    """Each row's anomaly score ([N] float64): minus the detector's `decision_function`, so
    that higher is more anomalous and above 0 is flagged, as `predict` gives -1 there. A
    model without `decision_function` scores minus its `predict` (1 for an anomaly, -1 not)."""
    decide = getattr(model, "decision_function", None)
    values = decide(X) if callable(decide) else model.predict(X)
    return -np.asarray(values, dtype=np.float64).reshape(-1)


def _type_of(dtype: Any) -> str:
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    return "string"


def sample_frame(signature: Signature, n: int = 3) -> pd.DataFrame:
    """`n` valid input rows, typed as validation types them, built from the signature alone."""
    columns: dict[str, pd.Series[Any]] = {}
    for column in signature.inputs:
        if column.type is FeatureType.FLOAT:
            columns[column.name] = pd.Series(_numbers(column, n), dtype="float64")
        elif column.type is FeatureType.INT:
            ints = [int(x) for x in _numbers(column, n, integers=True)]
            columns[column.name] = pd.Series(ints, dtype="Int64" if column.nullable else "int64")
        elif column.type is FeatureType.BOOL:
            columns[column.name] = pd.Series([i % 2 == 0 for i in range(n)], dtype="boolean")
        else:
            values = column.values or ["a", "b", "c"]
            picks = [values[i % len(values)] for i in range(n)]
            columns[column.name] = pd.Series(picks, dtype=object)
    return pd.DataFrame(columns, index=pd.RangeIndex(n))


def _numbers(column: InputColumn, n: int, integers: bool = False) -> list[float]:
    low, high = column.min, column.max
    if integers:
        low = None if low is None else float(math.ceil(low))
        high = None if high is None else float(math.floor(high))
    if low is None:
        low = 0.0 if high is None else min(0.0, high)
    values = [low + i for i in range(n)]
    return values if high is None else [min(v, max(high, low)) for v in values]
