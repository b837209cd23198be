"""JSON Schemas of the prediction API, generated from the served version's signature, so that
`/docs` and `/openapi.json` show the real fields, their types and the output."""

from __future__ import annotations

from typing import Any

from refit.signature import InputColumn, Signature
from refit.spec import FeatureType

_JSON_TYPES = {
    FeatureType.FLOAT: "number",
    FeatureType.INT: "integer",
    FeatureType.BOOL: "boolean",
    FeatureType.CATEGORY: "string",
}
_OUTPUT_TYPES = {"float": "number", "int": "integer", "bool": "boolean", "string": "string"}


def _field(column: InputColumn) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": _JSON_TYPES[column.type]}
    if column.values is not None:
        schema["enum"] = list(column.values)
    if column.min is not None:
        schema["minimum"] = column.min
    if column.max is not None:
        schema["maximum"] = column.max
    if column.nullable:
        return {"anyOf": [schema, {"type": "null"}]}
    return schema


def openapi_components(signature: Signature | None) -> dict[str, Any]:
    """`components.schemas` entries: Record, Records, Prediction, Predictions."""
    if signature is None:
        record: dict[str, Any] = {
            "type": "object",
            "description": "The model's input fields (none is served yet: see /v1/models).",
        }
        label: dict[str, Any] = {}
        proba = False
    else:
        record = {
            "type": "object",
            "properties": {c.name: _field(c) for c in signature.inputs},
            "required": signature.names,
            "additionalProperties": False,
        }
        label = {"type": _OUTPUT_TYPES[signature.output.type]}
        if signature.output.classes:
            label["enum"] = signature.output.classes
        proba = signature.output.probabilities
    probabilities = {"type": "object", "additionalProperties": {"type": "number"}}
    one: dict[str, Any] = {
        "model": {"type": "string"},
        "version": {"type": "integer"},
        "prediction": label,
    }
    many: dict[str, Any] = {
        "model": {"type": "string"},
        "version": {"type": "integer"},
        "predictions": {"type": "array", "items": label},
    }
    if proba:
        one["probabilities"] = probabilities
        many["probabilities"] = {"type": "array", "items": probabilities}
    return {
        "Record": {"title": "Record", **record},
        "Records": {
            "title": "Records",
            "type": "object",
            "properties": {
                "records": {"type": "array", "items": {"$ref": "#/components/schemas/Record"}}
            },
            "required": ["records"],
            "additionalProperties": False,
        },
        "Prediction": {"title": "Prediction", "type": "object", "properties": one},
        "Predictions": {"title": "Predictions", "type": "object", "properties": many},
    }
