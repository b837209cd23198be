"""The JSON Schemas of a prediction's answer on refit's routes, by what the model gives: a
label, and a classifier's or mixture's probabilities, a clustering's distances, an anomaly
detector's score, rows withheld by the version's `postprocess` (see `refit.serve.codecs.refit`).
"""

from __future__ import annotations

from typing import Any

from refit.signature import ANOMALY_SCORE, DISTANCES

_MAP = {"type": "object", "additionalProperties": {"type": "number"}}
_WHAT = {
    "distances": "The distance to each cluster's centre, by cluster id.",
    "score": "The anomaly score: higher is more anomalous; above 0 is flagged.",
}


def answer_properties(
    label: dict[str, Any],
    proba: bool,
    scores: str | None,
    withholds: bool,
    answer_id: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The properties of a record's answer and of a batch's (`Prediction`, `Predictions`)
    whose label is `label`, with `probabilities`, `scores` (`distances` or `score`), and
    withheld rows when the version `withholds`."""
    fields: dict[str, dict[str, Any]] = {}
    if proba:
        fields["probabilities"] = _MAP
    if scores == DISTANCES:
        fields["distances"] = _MAP
    elif scores == ANOMALY_SCORE:
        fields["score"] = {"type": "number"}
    if withholds:
        label = {"anyOf": [label, {"type": "null"}]}
    one: dict[str, Any] = {
        "model": {"type": "string"},
        "version": {"type": "integer"},
        "id": answer_id,
        "prediction": label,
    }
    many: dict[str, Any] = {**one}
    del many["prediction"]
    many["predictions"] = {"type": "array", "items": label}
    for name, schema in fields.items():
        said = {"description": _WHAT[name]} if name in _WHAT else {}
        one[name] = {**schema, **said}
        item = {"anyOf": [schema, {"type": "null"}]} if withholds else schema
        plural = "scores" if name == "score" else name
        many[plural] = {"type": "array", "items": item, **said}
    if withholds:
        one["withheld"] = {
            "const": True,
            "description": "The version's postprocess withheld this answer: `prediction` "
            "is null, and nothing else of it is given.",
        }
        many["withheld"] = {
            "type": "array",
            "items": {"type": "integer", "minimum": 0},
            "description": "The rows (from 0) whose answer was withheld: their entries are "
            "null. Only when a row is withheld.",
        }
    return one, many
