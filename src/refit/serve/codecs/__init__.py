"""The wire formats of the server's protocols, one codec each, over one inference core.

A codec reads a request's body into checked columns, writes `Predictions` as its protocol's
answer, and writes a `Failure` (`refit.serve.failures`) as its protocol's error:

- `refit`: refit's own routes, `{"error": {"code", "message", "problems"?}}`;
- `v2`: the Open Inference Protocol (KServe V2), `{"error": "..."}`;
- `mlflow`: MLflow's scoring protocol (SageMaker's), `{"error_code", "message"}`.

Every JSON body is written by orjson (`JSONBody`). A clustering's distances and an anomaly
detector's score (`Predictions.scores`), and rows a version's `postprocess` withheld
(`Predictions.withheld`), are read by `scores_of` and `withheld_rows`, the same for every codec.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
from starlette.responses import Response

from refit.predictions import Predictions


class JSONBody(Response):
    """JSON by orjson, several times faster than the standard library. A body that echoes a
    lone surrogate (JSON lets a client send one; UTF-8 cannot encode it) is escaped to ASCII
    by the standard library instead."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except orjson.JSONEncodeError:
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def withheld_rows(predictions: Predictions) -> list[int]:
    """The rows whose answer was withheld, in order (none: an empty list)."""
    withheld = predictions.withheld
    if withheld is None or not withheld.any():
        return []
    rows: list[int] = np.flatnonzero(withheld).tolist()
    return rows


def scores_of(predictions: Predictions) -> list[Any] | None:
    """Each row's distances as `{cluster: distance}` (a clustering's), or its score (an
    anomaly detector's), JSON-ready; None without them."""
    scores = predictions.scores
    if scores is None:
        return None
    if scores.ndim == 1:
        values: list[Any] = scores.tolist()
        return values
    classes = predictions.classes
    return [dict(zip(classes, row, strict=True)) for row in scores.tolist()]


def scores_field(predictions: Predictions) -> str:
    """The field of `scores_of` in an answer: `distances` or `score`."""
    return (
        "score" if predictions.scores is not None and predictions.scores.ndim == 1 else "distances"
    )


def blanked(values: list[Any] | None, rows: list[int]) -> list[Any] | None:
    """`values` with the entries of `rows` made null (in place)."""
    if values is not None:
        for row in rows:
            values[row] = None
    return values
