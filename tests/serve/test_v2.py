"""The Open Inference Protocol (KServe V2) REST routes, in process: health, metadata, both
tabular layouts of an inference request, and every error as `{"error": "..."}`."""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI

from refit import __version__
from refit.examples import example_rows
from refit.serve.app import create_app
from refit.serve.state import ServerState
from refit.services import Services

JSON = {"content-type": "application/json"}
pytestmark = pytest.mark.anyio

NAME = "breast-cancer"
MAX_ROWS = 8
MAX_BYTES = 64 * 1024
INFER = f"/v2/models/{NAME}/infer"


@cache
def inputs() -> pd.DataFrame:
    """The dataset's input columns, in the signature's order (the dataset's own)."""
    return example_rows(NAME).drop(columns="diagnosis")


def rows(indices: list[int]) -> list[list[float]]:
    values: list[list[float]] = inputs().iloc[indices].to_numpy().tolist()
    return values


def records(indices: list[int]) -> list[dict[str, Any]]:
    parsed: list[dict[str, Any]] = json.loads(inputs().iloc[indices].to_json(orient="records"))
    return parsed


def tensor(indices: list[int], name: str = "predict", datatype: str = "FP32") -> dict[str, Any]:
    """One [N, 30] input, nested, as MLServer's and KServe's sklearn examples send it."""
    return {
        "name": name,
        "shape": [len(indices), inputs().shape[1]],
        "datatype": datatype,
        "data": rows(indices),
    }


def columns(indices: list[int]) -> list[dict[str, Any]]:
    """One input per feature: MLServer's "pd" layout."""
    frame = inputs().iloc[indices]
    return [
        {"name": name, "shape": [len(indices)], "datatype": "FP64", "data": frame[name].tolist()}
        for name in frame.columns
    ]


@asynccontextmanager
async def connect(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://refit") as client:
        yield client


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the breast-cancer server with v1 loaded."""
    state = ServerState.open(services, max_body_bytes=MAX_BYTES, max_batch_rows=MAX_ROWS)
    assert await state.follower.check()
    async with connect(create_app(state)) as opened:
        yield opened


def v2_error(response: httpx.Response, status: int) -> str:
    """The message of a V2 error, checked to be exactly `{"error": "..."}`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    message: str = body["error"]
    return message


def output(body: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [o for o in body["outputs"] if o["name"] == name]
    return found


async def reference(client: httpx.AsyncClient, indices: list[int]) -> dict[str, Any]:
    """What refit's own batch route answers for the same rows."""
    response = await client.post("/predict/batch", json={"records": records(indices)})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


# --- health and metadata ---------------------------------------------------------------------


async def test_health_and_metadata_of_a_ready_server(client: httpx.AsyncClient) -> None:
    live = await client.get("/v2/health/live")
    assert (live.status_code, live.json()) == (200, {"live": True})
    ready = await client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    for path in (f"/v2/models/{NAME}/ready", f"/v2/models/{NAME}/versions/1/ready"):
        model = await client.get(path)
        assert (model.status_code, model.json()) == (200, {"name": NAME, "ready": True})

    server = await client.get("/v2")
    assert server.status_code == 200
    assert server.json() == {"name": "refit", "version": __version__, "extensions": []}


async def test_model_metadata_lists_one_input_per_feature_and_the_outputs(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(f"/v2/models/{NAME}")
    assert response.status_code == 200, response.text
    metadata = response.json()
    assert metadata["name"] == NAME
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "refit_sklearn"
    assert metadata["inputs"] == [
        {"name": name, "datatype": "FP64", "shape": [-1]} for name in inputs().columns
    ]
    assert metadata["outputs"] == [
        {"name": "predict", "datatype": "BYTES", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]},
    ]
    versioned = await client.get(f"/v2/models/{NAME}/versions/1")
    assert (versioned.status_code, versioned.json()) == (200, metadata)


async def test_before_a_model_is_served_the_server_is_live_but_not_ready(
    unpromoted: Services,
) -> None:
    state = ServerState.open(unpromoted)
    assert not await state.follower.check()
    async with connect(create_app(state)) as client:
        assert (await client.get("/v2/health/live")).status_code == 200
        ready = await client.get("/v2/health/ready")
        assert (ready.status_code, ready.json()) == (503, {"ready": False})
        model = await client.get(f"/v2/models/{NAME}/ready")
        assert (model.status_code, model.json()) == (503, {"name": NAME, "ready": False})
        assert (await client.get("/v2")).status_code == 200

        metadata = await client.get(f"/v2/models/{NAME}")
        assert "not ready" in v2_error(metadata, 503)
        infer = await client.post(INFER, json={"inputs": [tensor([0])]})
        assert "no version holds production" in v2_error(infer, 503)
        assert infer.headers["retry-after"] == "1"
        # An unknown model is unknown whether or not one is ready.
        assert "'churn'" in v2_error(await client.get("/v2/models/churn/ready"), 404)


# --- inference: both layouts -----------------------------------------------------------------


async def test_an_mlserver_style_tensor_is_answered_in_row_order(
    client: httpx.AsyncClient,
) -> None:
    labels = example_rows(NAME)["diagnosis"]
    picked = [*labels.index[labels == "benign"][:2], *labels.index[labels == "malignant"][:2]]
    expected = await reference(client, picked)
    assert len(set(expected["predictions"])) == 2, "the rows must be told apart"

    # The request of MLServer's sklearn example: one FP32 input named "predict".
    response = await client.post(INFER, json={"inputs": [tensor(picked)]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["model_name", "model_version", "id", "outputs"]
    assert (body["model_name"], body["model_version"]) == (NAME, "1")
    assert uuid.UUID(body["id"])  # generated, as MLServer does, when the request has none
    assert output(body, "predict") == {
        "name": "predict",
        "shape": [4],
        "datatype": "BYTES",
        "data": expected["predictions"],
    }
    proba = output(body, "predict_proba")
    assert (proba["shape"], proba["datatype"]) == ([4, 2], "FP64")
    flat = [p for row in expected["probabilities"] for p in (row["benign"], row["malignant"])]
    assert proba["data"] == pytest.approx(flat, abs=1e-6)

    # KServe's example names its input "input-0"; the name of a single tensor does not matter.
    kserve = await client.post(INFER, json={"inputs": [tensor(picked, name="input-0")]})
    assert kserve.json()["outputs"] == body["outputs"]


async def test_flat_and_nested_data_give_the_same_answer(client: httpx.AsyncClient) -> None:
    nested = tensor([0, 1, 2], datatype="FP64")
    flat = {**nested, "data": [value for row in nested["data"] for value in row]}
    first = await client.post(INFER, json={"inputs": [nested]})
    second = await client.post(INFER, json={"inputs": [flat]})
    assert first.status_code == second.status_code == 200
    assert first.json()["outputs"] == second.json()["outputs"]
    assert output(first.json(), "predict")["shape"] == [3]


async def test_one_input_per_feature_with_or_without_the_pd_content_type(
    client: httpx.AsyncClient,
) -> None:
    picked = [3, 0, 7]
    by_tensor = (await client.post(INFER, json={"inputs": [tensor(picked)]})).json()["outputs"]
    for request in (
        {"parameters": {"content_type": "pd"}, "inputs": columns(picked)},
        {"inputs": list(reversed(columns(picked)))},  # named after the features: any order
        {"inputs": [{**c, "shape": [3, 1]} for c in columns(picked)]},  # [N, 1] columns
    ):
        response = await client.post(INFER, json=request)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"] == by_tensor


async def test_a_regressor_answers_fp64_predictions_from_typed_columns(
    regressor: Services,
) -> None:
    state = ServerState.open(regressor)
    assert await state.follower.check()
    batch = json.loads((regressor.project.root / "batch.json").read_text())["records"]
    frame = pd.DataFrame(batch)
    async with connect(create_app(state)) as client:
        expected = (await client.post("/predict/batch", json={"records": batch})).json()
        inputs_ = [
            {
                "name": name,
                "shape": [len(frame)],
                "datatype": "BYTES" if name == "sex" else "FP64",
                "data": frame[name].tolist(),
            }
            for name in frame.columns
        ]
        response = await client.post(
            "/v2/models/diabetes/infer",
            json={"parameters": {"content_type": "pd"}, "inputs": inputs_},
        )
        assert response.status_code == 200, response.text
        [predict] = response.json()["outputs"]  # a regressor has no predict_proba
        assert (predict["name"], predict["datatype"], predict["shape"]) == ("predict", "FP64", [3])
        assert predict["data"] == pytest.approx(expected["predictions"])

        # Mixed types fit one BYTES tensor: its JSON values are checked feature by feature.
        mixed = {
            "name": "input-0",
            "shape": list(frame.shape),
            "datatype": "BYTES",
            "data": frame.to_numpy().tolist(),
        }
        by_tensor = await client.post("/v2/models/diabetes/infer", json={"inputs": [mixed]})
        assert by_tensor.status_code == 200, by_tensor.text
        assert by_tensor.json()["outputs"] == [predict]

        # A BYTES tensor in binary: each string prefixed by its length in 4 bytes.
        sex = [value.encode() for value in frame["sex"]]
        blob = b"".join(struct.pack("<I", len(value)) + value for value in sex)
        size = {"binary_data_size": len(blob)}
        mixed_binary = [
            {**i, "data": None, "parameters": size} if i["name"] == "sex" else i for i in inputs_
        ]
        header = {"parameters": {"content_type": "pd"}, "inputs": mixed_binary}
        in_binary = await client.post("/v2/models/diabetes/infer", **binary(header, blob))
        assert in_binary.status_code == 200, in_binary.text
        assert in_binary.json()["outputs"] == [predict]

        proba = await client.post(
            "/v2/models/diabetes/infer",
            json={"inputs": [mixed], "outputs": [{"name": "predict_proba"}]},
        )
        assert "regression" in v2_error(proba, 400) and "predict_proba" in proba.json()["error"]


async def test_the_id_is_echoed_and_the_outputs_filter_is_honoured(
    client: httpx.AsyncClient,
) -> None:
    request = {"id": "req-42", "inputs": [tensor([0, 1])]}
    proba_only = await client.post(INFER, json={**request, "outputs": [{"name": "predict_proba"}]})
    assert proba_only.status_code == 200, proba_only.text
    assert proba_only.json()["id"] == "req-42"
    assert [o["name"] for o in proba_only.json()["outputs"]] == ["predict_proba"]

    both = await client.post(
        INFER,
        json={**request, "outputs": [{"name": "predict_proba"}, {"name": "predict"}]},
    )
    assert [o["name"] for o in both.json()["outputs"]] == ["predict_proba", "predict"]

    # tritonclient asks for outputs with binary_data parameters; they are answered as JSON.
    triton = {"name": "predict", "parameters": {"binary_data": False}}
    labels = await client.post(INFER, json={**request, "outputs": [triton]})
    assert [o["name"] for o in labels.json()["outputs"]] == ["predict"]

    unknown = await client.post(INFER, json={**request, "outputs": [{"name": "transform"}]})
    message = v2_error(unknown, 400)
    assert "'transform'" in message and "'predict', 'predict_proba'" in message


async def test_an_id_with_a_lone_surrogate_is_echoed_as_escaped_json(
    client: httpx.AsyncClient,
) -> None:
    body = json.dumps({"id": "@", "inputs": [tensor([0])]}).replace('"@"', '"\\ud800"')
    response = await client.post(INFER, content=body.encode(), headers=JSON)
    assert response.status_code == 200, response.text
    assert b'"id":"\\ud800"' in response.content


async def test_versioned_paths_answer_only_for_the_served_version(
    client: httpx.AsyncClient,
) -> None:
    served = await client.post(
        f"/v2/models/{NAME}/versions/1/infer", json={"inputs": [tensor([0])]}
    )
    assert served.status_code == 200, served.text
    assert served.json()["model_version"] == "1"
    for method, path in [
        ("POST", f"/v2/models/{NAME}/versions/2/infer"),
        ("GET", f"/v2/models/{NAME}/versions/2"),
        ("GET", f"/v2/models/{NAME}/versions/2/ready"),
    ]:
        response = await client.request(method, path, json={"inputs": [tensor([0])]})
        message = v2_error(response, 404)
        assert "version 2" in message and "serves version 1" in message


def binary(header: dict[str, Any], *blobs: bytes) -> dict[str, Any]:
    """httpx arguments of a request of the binary tensor data extension (tritonclient's
    default): a JSON header, then the raw tensors."""
    head = json.dumps(header).encode()
    return {
        "content": head + b"".join(blobs),
        "headers": {"Inference-Header-Content-Length": str(len(head))},
    }


async def test_binary_tensor_data_is_read_as_tritonclient_sends_it(
    client: httpx.AsyncClient,
) -> None:
    matrix = np.asarray(rows([0, 19, 1]), dtype=np.float32)
    matrix[1, 3] = np.nan  # binary's missing value: JSON's null
    data = matrix.tolist()
    data[1][3] = None
    as_json = {"inputs": [{**tensor([0, 19, 1]), "data": data}]}
    expected = await client.post(INFER, json=as_json)
    assert expected.status_code == 200, expected.text

    header = {
        "inputs": [
            {
                "name": "INPUT0",
                "shape": list(matrix.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": matrix.nbytes},
            }
        ],
        "outputs": [{"name": "predict", "parameters": {"binary_data": True}}],
    }
    response = await client.post(INFER, **binary(header, matrix.tobytes()))
    assert response.status_code == 200, response.text
    # The outputs come back as JSON, which tritonclient reads as well.
    assert response.json()["outputs"] == [output(expected.json(), "predict")]

    extra = await client.post(INFER, **binary(header, matrix.tobytes(), b"\0"))
    assert "1 bytes of binary data belong to no input" in v2_error(extra, 400)
    cut = await client.post(INFER, **binary(header, matrix.tobytes()[:-4]))
    assert "binary_data_size 360" in v2_error(cut, 400)
    odd = {"inputs": [{**header["inputs"][0], "parameters": {"binary_data_size": 3}}]}
    assert "not a multiple of 4" in v2_error(await client.post(INFER, **binary(odd, b"abc")), 400)
    lying = await client.post(
        INFER, content=b"{}", headers={"Inference-Header-Content-Length": "99"}
    )
    assert "the body has 2 bytes" in v2_error(lying, 400)


# --- the request's own fault -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        pytest.param(b'{"inputs": [', ["not valid JSON"], id="not-json"),
        pytest.param(b"[]", ['{"inputs": [...]}'], id="a-list"),
        pytest.param(b"{}", ["inputs: Field required"], id="no-inputs"),
        pytest.param(b'{"inputs": []}', ["inputs", "at least 1"], id="empty-inputs"),
        pytest.param(
            b'{"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FLOAT", "data": []}]}',
            ["inputs[0].datatype"],
            id="unknown-datatype",
        ),
        pytest.param(
            b'{"inputs": [{"name": "x", "shape": [1, -30], "datatype": "FP32", "data": []}]}',
            ["inputs[0].shape[1]", "greater than or equal to 0"],
            id="negative-dimension",
        ),
        pytest.param(
            b'{"inputs": [{"name": "x", "shape": ["1"], "datatype": "FP32", "data": []}]}',
            ["inputs[0].shape[0]", "integer"],
            id="text-dimension",
        ),
        pytest.param(
            b'{"id": 7, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}',
            ["id: Input should be a valid string"],
            id="numeric-id",
        ),
    ],
)
async def test_a_malformed_request_is_a_400_error(
    client: httpx.AsyncClient, body: bytes, words: list[str]
) -> None:
    message = v2_error(await client.post(INFER, content=body, headers=JSON), 400)
    assert all(word in message for word in words), message


async def test_a_tensor_of_the_wrong_shape_or_size_is_a_400_error(
    client: httpx.AsyncClient,
) -> None:
    narrow = {**tensor([0]), "shape": [1, 29], "data": rows([0])[0][:29]}
    message = v2_error(await client.post(INFER, json={"inputs": [narrow]}), 400)
    assert "[1, 29]" in message and "[N, 30]" in message

    short = {**tensor([0, 1]), "data": rows([0])}
    message = v2_error(await client.post(INFER, json={"inputs": [short]}), 400)
    assert "holds 60 values" in message and "has 30" in message

    booleans = {**tensor([0]), "datatype": "BOOL"}
    message = v2_error(await client.post(INFER, json={"inputs": [booleans]}), 400)
    assert "wrong datatype" in message and "BOOL" in message and "FP64" in message


async def test_a_bad_value_is_named_by_row_column_and_feature(client: httpx.AsyncClient) -> None:
    bad = tensor([0, 1])
    bad["data"][1][2] = "wide"
    message = v2_error(await client.post(INFER, json={"inputs": [bad]}), 400)
    assert message.startswith("1 problem with the input: ")
    assert 'predict[1][2] (mean_perimeter): wrong type, received "wide"' in message
    assert "expected a number or null" in message

    by_column = columns([0, 1])
    by_column[0]["data"][1] = None  # nullable: a null is a missing value, not an error
    by_column[1]["data"][0] = "thick"
    message = v2_error(await client.post(INFER, json={"inputs": by_column}), 400)
    assert 'mean_texture[0]: wrong type, received "thick"' in message


async def test_unknown_and_missing_features_are_named(client: httpx.AsyncClient) -> None:
    misspelt = columns([0])
    misspelt[0]["name"] = "mean_raduis"
    request = {"parameters": {"content_type": "pd"}, "inputs": misspelt}
    message = v2_error(await client.post(INFER, json=request), 400)
    assert message.startswith("2 problems with the input: ")
    assert "mean_raduis: unknown field, expected no such field (did you mean mean_radius?)" in (
        message
    )
    assert "mean_radius: missing" in message

    twice = [*columns([0]), columns([0])[0]]
    message = v2_error(await client.post(INFER, json={"inputs": twice}), 400)
    assert "mean_radius: given twice" in message


async def test_limits_and_wrong_methods_answer_in_the_v2_shape(
    client: httpx.AsyncClient,
) -> None:
    over = await client.post(INFER, json={"inputs": [tensor(list(range(MAX_ROWS + 1)))]})
    assert f"at most {MAX_ROWS}" in v2_error(over, 413)

    big = json.dumps({"inputs": [tensor([0])], "id": "x" * MAX_BYTES}).encode()
    assert str(MAX_BYTES) in v2_error(await client.post(INFER, content=big, headers=JSON), 413)

    wrong = await client.get(INFER)
    v2_error(wrong, 405)
    assert wrong.headers["allow"] == "POST"
    assert "'churn'" in v2_error(await client.post("/v2/models/churn/infer", json={}), 404)
