"""Prediction logs and feedback written as a server writes them (`refit.prediction_logs`):
a Parquet file put in the artifact store, then indexed in the registry."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from refit.flavors import load_model
from refit.prediction_logs import (
    FEEDBACK_SCHEMA,
    PREDICTION,
    PROBABILITIES,
    input_column,
    label_text,
    predictions_schema,
    to_parquet,
)
from refit.registry.monitoring import FEEDBACK, PREDICTIONS, add_log
from refit.registry.tables import ModelVersionRow, PredictionLogRow, utcnow
from refit.services import Services
from refit.signature import Signature
from refit.spec import ArtifactFormat


def predict(services: Services, version: ModelVersionRow, rows: pd.DataFrame) -> Any:
    """The version's model, loaded from the store as a server loads it."""
    signature = Signature.from_dict(version.signature)
    model = load_model(
        services.store.get(version.artifact_uri, version.artifact_sha256),
        ArtifactFormat(version.format),
        version.flavor,
        signature,
        services.project.spec.model.trusted_types,
    )
    X = rows[signature.names]
    labels = np.asarray(model.predict(X))
    proba = np.asarray(model.predict_proba(X)) if signature.output.probabilities else None
    return labels, proba


def log_predictions(
    services: Services,
    version: ModelVersionRow,
    rows: pd.DataFrame,
    *,
    at: datetime | None = None,
    spread: timedelta = timedelta(seconds=10),
    request_ids: Sequence[str] | None = None,
) -> list[str]:
    """Log what `version` answers to `rows` (one request per row, answered over `spread`
    ending at `at`); returns the request ids."""
    signature = Signature.from_dict(version.signature)
    end = at or utcnow()
    n = len(rows)
    ids = list(request_ids) if request_ids is not None else [uuid.uuid4().hex for _ in range(n)]
    moments = [end - spread * (1 - i / max(n - 1, 1)) for i in range(n)]
    labels, proba = predict(services, version, rows)
    columns: dict[str, Any] = {
        "request_id": ids,
        "row": [0] * n,
        "at": moments,
        "version": [version.version] * n,
    }
    for column in signature.inputs:
        values = rows[column.name].astype(object).where(rows[column.name].notna(), None)
        columns[input_column(column.name)] = values.tolist()
    if signature.output.classes is not None:
        columns[PREDICTION] = [label_text(v) for v in labels]
        if proba is not None:
            columns[PROBABILITIES] = proba.tolist()
    else:
        columns[PREDICTION] = [float(v) for v in labels]
    table = pa.Table.from_pydict(columns, schema=predictions_schema(signature))
    _index(services, table, PREDICTIONS, version.version, moments[0], moments[-1])
    return ids


def log_feedback(
    services: Services, ids: Sequence[str], values: Sequence[Any], at: datetime | None = None
) -> None:
    moment = at or utcnow()
    table = pa.Table.from_pydict(
        {
            "request_id": list(ids),
            "row": [0] * len(ids),
            "at": [moment] * len(ids),
            "value": [label_text(v) for v in values],
        },
        schema=FEEDBACK_SCHEMA,
    )
    _index(services, table, FEEDBACK, None, moment, moment)


def _index(
    services: Services,
    table: pa.Table,
    kind: str,
    version: int | None,
    first: datetime,
    last: datetime,
) -> PredictionLogRow:
    ref = services.store.put(to_parquet(table), kind="logs", suffix=".parquet")
    return add_log(
        services.registry,
        PredictionLogRow(
            name=services.project.spec.name,
            kind=kind,
            version=version,
            instance="test",
            first_at=first,
            last_at=last,
            rows=table.num_rows,
            uri=ref.uri,
            sha256=ref.sha256,
            size_bytes=ref.size,
        ),
    )
