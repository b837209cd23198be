"""Predictors: loaded, verified, warmed-up models in a server's memory.

`load_predictor` is the only way a model version gets into a server: fetch the artifact,
check its sha256, deserialise it, check its signature, and call it on a sample built from that
signature. Any failing step refuses the version with a `RefitError` naming the step. A version
whose ONNX conversion passed its parity check at registration is served by ONNX Runtime
(`runtime: onnx`), which answers a row in tens of microseconds instead of a millisecond;
otherwise, or if its ONNX file cannot be loaded, by its native artifact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from refit.artifacts import ArtifactStore
from refit.errors import ArtifactError, RefitError
from refit.flavors import load_model
from refit.flavors.onnx import OnnxModel
from refit.registry import ModelVersionRow
from refit.registry.tables import utcnow
from refit.serve.records import Columns, columns_of, frame_of
from refit.serve.redaction import for_clients
from refit.signature import Signature, sample_frame
from refit.spec import ArtifactFormat, Task


@dataclass(frozen=True)
class Predictions:
    """Predictions for a batch of rows, as JSON-ready Python values, in row order."""

    labels: list[Any]
    probabilities: list[dict[str, float]] | None = None


class Predictor(Protocol):
    """Anything that predicts on checked input columns (`refit.serve.records.Columns`).
    Wrappers, such as the micro-batcher, are Predictors too."""

    def predict(self, columns: Columns) -> Predictions: ...


class NonFiniteOutputError(Exception):
    """The model answered NaN, an infinity or nothing for some rows, which no client may be
    sent as a prediction; `rows` are their indices in the call."""

    def __init__(self, rows: list[int], what: str) -> None:
        super().__init__(f"the model answered {what} for {len(rows)} row(s)")
        self.rows = rows
        self.what = what


def check_finite(labels: np.ndarray[Any, Any], proba: np.ndarray[Any, Any] | None) -> None:
    """Raise `NonFiniteOutputError` unless every row's label and probabilities are values."""
    rows = len(labels)
    if not rows:
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
    if bad.any():
        raise NonFiniteOutputError(np.flatnonzero(bad).tolist(), what)


def _null(value: Any) -> bool:
    return value is None or value != value


def _plain(values: np.ndarray[Any, Any]) -> list[Any]:
    labels: list[Any] = values.tolist()  # numpy scalars become Python ones
    return labels


class SklearnPredictor:
    """A scikit-learn style model: `predict`, and `predict_proba` for classifiers."""

    runtime = "native"

    def __init__(self, model: Any, signature: Signature) -> None:
        self.model = model
        self.inputs = signature.inputs
        output = signature.output
        self.proba = output.task is Task.CLASSIFICATION and output.probabilities
        self.classes = [str(c) for c in output.classes or []]
        from sklearn.pipeline import Pipeline  # loaded already: the model was unpickled

        self.final, self.head = model, None
        if isinstance(model, Pipeline) and hasattr(model[-1], "predict_proba"):
            # The pipeline's own class runs its steps, as its predict would (a subclass may
            # skip some, as imbalanced-learn's skips samplers).
            self.final, self.head = model[-1], model[:-1]

    def predict(self, columns: Columns) -> Predictions:
        frame = frame_of(self.inputs, columns)
        if not self.proba:
            values = np.asarray(self.model.predict(frame))
            check_finite(values, None)
            return Predictions(_plain(values))
        # A pipeline's steps before the estimator run once for both answers, as each of
        # Pipeline.predict and Pipeline.predict_proba would run them.
        final, features = self.final, frame
        if self.head is not None:
            features = self.head.transform(features)
        values = np.asarray(final.predict(features))
        proba = np.asarray(final.predict_proba(features), dtype=float).round(6)
        check_finite(values, proba)
        rows = [dict(zip(self.classes, row, strict=True)) for row in proba.tolist()]
        return Predictions(_plain(values), rows)


class OnnxPredictor:
    """An ONNX model run by ONNX Runtime: fed one matrix of the columns (numbers only), or each
    column to its own input (categories as text)."""

    runtime = "onnx"

    def __init__(self, onnx: OnnxModel, signature: Signature) -> None:
        self.onnx = onnx
        output = signature.output
        self.proba = output.task is Task.CLASSIFICATION and output.probabilities
        self.classes = [str(c) for c in output.classes or []]
        self.regression = output.task is Task.REGRESSION
        self.dtype = np.float32 if onnx.float32 else np.float64

    def predict(self, columns: Columns) -> Predictions:
        if self.onnx.texts:  # categories: each feature to its own input
            labels, proba = self.onnx.run_columns(columns)
        else:  # None becomes NaN, which the converted imputers treat as missing
            matrix = np.array(columns, dtype=self.dtype).T
            labels, proba = self.onnx.run(np.ascontiguousarray(matrix))
        labels = np.asarray(labels)
        proba = None if proba is None else np.asarray(proba, dtype=np.float64)
        check_finite(labels, proba if self.proba else None)
        if self.regression:
            return Predictions(np.asarray(labels, dtype=np.float64).tolist())
        if not self.proba or proba is None:
            return Predictions(_plain(labels))
        rows = proba.round(6).tolist()
        return Predictions(_plain(labels), [dict(zip(self.classes, r, strict=True)) for r in rows])


@dataclass
class LoadedModel:
    """A version in memory, ready to answer: its predictor and what it is."""

    name: str
    version: int
    signature: Signature
    predictor: Predictor
    metrics: dict[str, Any]
    metric: str
    snapshot_id: str
    artifact_sha256: str
    runtime: str = "native"
    onnx: str | None = None
    """Why ONNX is not used, when it is not (as a client may read it)."""
    onnx_error: str | None = None
    """The full error of an ONNX artifact that failed to load, served natively instead."""
    loaded_at: datetime = field(default_factory=utcnow)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "runtime": self.runtime,
            "onnx": self.onnx,
            "loaded_at": self.loaded_at.isoformat(),
            "snapshot_id": self.snapshot_id,
            "metric": self.metric,
            "metrics": self.metrics,
            "artifact_sha256": self.artifact_sha256,
            "signature": self.signature.to_dict(),
        }


def load_predictor(
    row: ModelVersionRow, store: ArtifactStore, contract: Signature | None = None
) -> LoadedModel:
    """Fetch, verify, load, check and warm up a version; refuse it at the first failure.

    `contract` is the input signature the server already answers with: a version whose
    inputs differ is refused, since clients were promised the served schema.
    """
    where = f"{row.name} v{row.version}"
    signature = Signature.from_dict(row.signature)
    if contract is not None and _inputs(signature) != _inputs(contract):
        raise RefitError(
            f"{where} takes different inputs ({', '.join(signature.names)}) from the ones "
            f"this server answers with ({', '.join(contract.names)}); restart the server to "
            "serve the new schema"
        )
    onnx_note: str | None = None
    onnx_error: str | None = None
    predictor: SklearnPredictor | OnnxPredictor | None = None
    onnx = row.onnx or {"status": "not converted (registered before ONNX export)"}
    if row.flavor == "onnx":  # the user's own ONNX model: its artifact is the ONNX file
        data = store.get(row.artifact_uri, row.artifact_sha256)
        classes = signature.output.classes if signature.output.task is Task.CLASSIFICATION else None
        try:
            predictor = OnnxPredictor(OnnxModel(data, signature.names, classes), signature)
        except RefitError as exc:
            raise ArtifactError(f"{where} cannot be loaded: {exc}") from exc
    elif onnx.get("status") == "ok":
        try:
            data = store.get(onnx["uri"], onnx["sha256"])
            classes = signature.output.classes
            predictor = OnnxPredictor(OnnxModel(data, signature.names, classes), signature)
        except RefitError as exc:
            # Served natively all the same, but counted and reported like any load failure:
            # a damaged ONNX file is a damaged artifact.
            onnx_error = f"{where}'s ONNX artifact failed to load: {exc}"
            onnx_note = (
                f"its ONNX artifact failed to load ({for_clients(str(exc))}); served natively"
            )
    else:
        onnx_note = str(onnx.get("status"))
    if predictor is None:
        data = store.get(row.artifact_uri, row.artifact_sha256)
        try:
            model = load_model(data, ArtifactFormat(row.format), row.flavor)
        except RefitError:
            raise
        except Exception as exc:
            raise ArtifactError(f"{where} cannot be loaded: {type(exc).__name__}: {exc}") from exc
        predictor = SklearnPredictor(model, signature)
    sample = columns_of(sample_frame(signature, n=3), signature.names)
    try:
        warm = predictor.predict(sample)
    except Exception as exc:
        raise RefitError(
            f"{where} failed its warm-up on a sample built from its signature: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if len(warm.labels) != len(sample[0]):
        raise RefitError(f"{where} gave {len(warm.labels)} predictions for {len(sample[0])} rows")
    return LoadedModel(
        name=row.name,
        version=row.version,
        signature=signature,
        predictor=predictor,
        metrics=dict(row.metrics),
        metric=row.metric,
        snapshot_id=row.snapshot_id,
        artifact_sha256=row.artifact_sha256,
        runtime=predictor.runtime,
        onnx=onnx_note,
        onnx_error=onnx_error,
    )


def _inputs(signature: Signature) -> list[tuple[str, str, bool]]:
    return [(c.name, c.type.value, c.nullable) for c in signature.inputs]
