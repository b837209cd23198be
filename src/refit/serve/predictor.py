"""Predictors: loaded, verified, warmed-up models in a server's memory.

`load_predictor` is the only way a model version gets into a server: fetch the artifact,
check its sha256, deserialise it, check its signature, and call it on a sample built from that
signature. Any failing step refuses the version with a `RefitError` naming the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import pandas as pd

from refit.artifacts import ArtifactStore
from refit.errors import ArtifactError, RefitError
from refit.flavors import load_model
from refit.registry import ModelVersionRow
from refit.registry.tables import utcnow
from refit.signature import Signature, sample_frame
from refit.spec import ArtifactFormat, Task


@dataclass(frozen=True)
class Predictions:
    """Predictions for a batch of rows, as JSON-ready Python values, in row order."""

    labels: list[Any]
    probabilities: list[dict[str, float]] | None = None


class Predictor(Protocol):
    """Anything that predicts on a frame of input rows. Wrappers (batching, metrics) are
    Predictors too."""

    def predict(self, frame: pd.DataFrame) -> Predictions: ...


def _plain(values: np.ndarray[Any, Any]) -> list[Any]:
    labels: list[Any] = values.tolist()  # numpy scalars become Python ones
    return labels


class SklearnPredictor:
    """A scikit-learn style model: `predict`, and `predict_proba` for classifiers."""

    def __init__(self, model: Any, signature: Signature) -> None:
        self.model = model
        self.columns = signature.names
        output = signature.output
        self.proba = output.task is Task.CLASSIFICATION and output.probabilities
        self.classes = [str(c) for c in output.classes or []]

    def predict(self, frame: pd.DataFrame) -> Predictions:
        labels = _plain(np.asarray(self.model.predict(frame)))
        if not self.proba:
            return Predictions(labels)
        proba = np.asarray(self.model.predict_proba(frame), dtype=float).round(6)
        rows = [dict(zip(self.classes, row, strict=True)) for row in proba.tolist()]
        return Predictions(labels, rows)


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
    loaded_at: datetime = field(default_factory=utcnow)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "runtime": self.runtime,
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
    data = store.get(row.artifact_uri, row.artifact_sha256)
    try:
        model = load_model(data, ArtifactFormat(row.format), row.flavor)
    except RefitError:
        raise
    except Exception as exc:
        raise ArtifactError(f"{where} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    predictor = SklearnPredictor(model, signature)
    sample = sample_frame(signature, n=3)
    try:
        warm = predictor.predict(sample)
    except Exception as exc:
        raise RefitError(
            f"{where} failed its warm-up on a sample built from its signature: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if len(warm.labels) != len(sample):
        raise RefitError(f"{where} gave {len(warm.labels)} predictions for {len(sample)} rows")
    return LoadedModel(
        name=row.name,
        version=row.version,
        signature=signature,
        predictor=predictor,
        metrics=dict(row.metrics),
        metric=row.metric,
        snapshot_id=row.snapshot_id,
        artifact_sha256=row.artifact_sha256,
    )


def _inputs(signature: Signature) -> list[tuple[str, str, bool]]:
    return [(c.name, c.type.value, c.nullable) for c in signature.inputs]
