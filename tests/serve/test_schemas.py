"""The API's JSON Schemas come from the served signature, so /docs shows the real fields."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]
import pytest
from openapi_spec_validator import validate

from refit.serve.app import create_app
from refit.serve.schemas import openapi_components
from refit.serve.state import ServerState
from refit.services import Services
from refit.signature import InputColumn, Output, Signature
from refit.spec import FeatureType, Task

INPUTS = [
    InputColumn("amount", FeatureType.FLOAT, nullable=False, min=0, max=100),
    InputColumn("seats", FeatureType.INT, nullable=True, min=1),
    InputColumn("active", FeatureType.BOOL, nullable=False),
    InputColumn("plan", FeatureType.CATEGORY, nullable=False, values=["basic", "pro"]),
]
CLASSIFIER = Signature(INPUTS, Output(Task.CLASSIFICATION, "string", ["no", "yes"], True))
REGRESSOR = Signature(INPUTS, Output(Task.REGRESSION, "float"))


def resolved(components: dict[str, Any], name: str) -> dict[str, Any]:
    """A schema of `components`, with its references resolvable by jsonschema."""
    return {**components[name], "components": {"schemas": components}}


def test_a_record_has_the_signature_fields_with_their_types_and_limits() -> None:
    record = openapi_components(CLASSIFIER)["Record"]
    assert record["properties"] == {
        "amount": {"type": "number", "minimum": 0, "maximum": 100},
        "seats": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
        "active": {"type": "boolean"},
        "plan": {"type": "string", "enum": ["basic", "pro"]},
    }
    assert record["required"] == ["amount", "seats", "active", "plan"]
    assert record["additionalProperties"] is False


@pytest.mark.parametrize(
    ("record", "valid"),
    [
        ({"amount": 1.5, "seats": None, "active": True, "plan": "pro"}, True),
        ({"amount": 1.5, "seats": 2, "active": False, "plan": "basic"}, True),
        ({"amount": 1.5, "seats": 2, "active": False}, False),
        ({"amount": "1.5", "seats": 2, "active": False, "plan": "pro"}, False),
        ({"amount": 101, "seats": 2, "active": False, "plan": "pro"}, False),
        ({"amount": 1, "seats": 2.5, "active": False, "plan": "pro"}, False),
        ({"amount": 1, "seats": 2, "active": 1, "plan": "pro"}, False),
        ({"amount": 1, "seats": 2, "active": True, "plan": "gold"}, False),
        ({"amount": 1, "seats": 2, "active": True, "plan": "pro", "x": 1}, False),
    ],
)
def test_the_record_schema_refuses_what_the_server_refuses(
    record: dict[str, Any], valid: bool
) -> None:
    components = openapi_components(CLASSIFIER)
    errors = list(
        jsonschema.Draft202012Validator(resolved(components, "Record")).iter_errors(record)
    )
    assert (not errors) is valid
    batch = {"records": [record]}
    errors = list(
        jsonschema.Draft202012Validator(resolved(components, "Records")).iter_errors(batch)
    )
    assert (not errors) is valid


def test_a_classifier_answers_its_classes_and_probabilities() -> None:
    components = openapi_components(CLASSIFIER)
    one = components["Prediction"]["properties"]
    assert one["prediction"] == {"type": "string", "enum": ["no", "yes"]}
    assert one["probabilities"] == {"type": "object", "additionalProperties": {"type": "number"}}
    many = components["Predictions"]["properties"]
    assert many["predictions"] == {"type": "array", "items": one["prediction"]}
    assert many["probabilities"]["items"] == one["probabilities"]


def test_a_regressor_answers_numbers_and_no_probabilities() -> None:
    components = openapi_components(REGRESSOR)
    properties = dict(components["Prediction"]["properties"])
    assert properties.pop("id")["type"] == "string"  # the request's id
    assert properties == {
        "model": {"type": "string"},
        "version": {"type": "integer"},
        "prediction": {"type": "number"},
    }
    assert "probabilities" not in components["Predictions"]["properties"]


def test_before_a_model_is_served_a_record_is_any_object() -> None:
    record = openapi_components(None)["Record"]
    assert record["type"] == "object"
    assert "properties" not in record
    assert "/v1/models" in record["description"]


@pytest.mark.anyio
async def test_the_openapi_document_shows_the_served_fields_once_a_model_is_loaded(
    services: Services,
) -> None:
    state = ServerState.open(services)
    app = create_app(state)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://refit") as client:
        before = (await client.get("/openapi.json")).json()
        assert "properties" not in before["components"]["schemas"]["Record"]

        assert await state.follower.check()
        document = (await client.get("/openapi.json")).json()
        validate(document)
        schemas = document["components"]["schemas"]
        fields = schemas["Record"]["properties"]
        assert len(fields) == 30
        assert fields["mean_radius"] == {"anyOf": [{"type": "number"}, {"type": "null"}]}
        assert schemas["Prediction"]["properties"]["prediction"]["enum"] == [
            "benign",
            "malignant",
        ]

        paths = document["paths"]
        for path, schema in [
            ("/predict", "Record"),
            ("/v1/models/{name}/predict", "Record"),
            ("/predict/batch", "Records"),
            ("/v1/models/{name}/predict/batch", "Records"),
        ]:
            post = paths[path]["post"]
            body = post["requestBody"]["content"]["application/json"]["schema"]
            assert body == {"$ref": f"#/components/schemas/{schema}"}
            answer = post["responses"]["200"]["content"]["application/json"]["schema"]
            assert answer["$ref"].startswith("#/components/schemas/Prediction")

        docs = await client.get("/docs")
        assert docs.status_code == 200 and "/openapi.json" in docs.text
