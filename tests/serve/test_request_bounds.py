"""What a request may be, in process, on every protocol: bodies bounded before they are parsed
and checked in linear work that stops at the problem cap, numbers a client writes read with
bounds (never a 500), one reading of every JSON object (a key given twice is a 400), and only
the documented content types."""

from __future__ import annotations

import difflib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from refit.errors import InputError, MalformedBodyError, TooLargeError
from refit.serve import records as records_module
from refit.serve._json import parse_json
from refit.serve._numbers import MAX_COUNT, client_count
from refit.serve.app import create_app
from refit.serve.records import MAX_PROBLEMS, RecordReader
from refit.serve.state import ServerState
from refit.services import Services
from refit.signature import InputColumn, Output, Signature
from refit.spec import FeatureType, Task

pytestmark = pytest.mark.anyio

JSON = {"content-type": "application/json"}
INFER = "/v2/models/breast-cancer/infer"
SIGNATURE = Signature(
    inputs=[InputColumn(f"feature_{i}", FeatureType.FLOAT) for i in range(3)],
    output=Output(Task.REGRESSION, "float"),
)


def reader() -> RecordReader:
    return RecordReader(SIGNATURE, max_rows=100)


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    state = ServerState.open(services)
    assert await state.follower.check()
    transport = httpx.ASGITransport(create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://refit") as opened:
        yield opened


@pytest.fixture
def record(services: Services) -> dict[str, Any]:
    from refit.examples import example_rows

    row = example_rows("breast-cancer").drop(columns="diagnosis").iloc[0]
    return {str(k): float(v) for k, v in row.items()}


# --- bounded before parsing, linear after -----------------------------------------------------


def test_a_record_of_far_more_fields_than_the_model_is_refused_before_it_is_parsed() -> None:
    body = json.dumps({f"k{i}": 1 for i in range(5000)}).encode()
    with pytest.raises(TooLargeError, match="more than 1027 values"):
        parse_json(body, reader().max_record_separators)
    # Commas inside strings are no values: a record of long texts with commas still parses.
    texts = json.dumps({"feature_0": "a," * 3000, "feature_1": 1, "feature_2": 2}).encode()
    assert parse_json(texts, reader().max_record_separators)["feature_1"] == 1


def test_a_batch_beside_many_unknown_fields_names_only_the_first_few() -> None:
    body = {"records": [{"feature_0": 1}], **{f"k{i:05d}": 1 for i in range(20_000)}}
    with pytest.raises(InputError) as raised:
        reader().many(body)
    assert len(raised.value.problems) == MAX_PROBLEMS
    assert raised.value.problems[0].field == "k00000"


def test_a_record_wider_than_the_model_has_its_values_left_unread() -> None:
    with pytest.raises(InputError) as raised:
        reader().one({"feature_0": "x", "feature_1": "y", "feature_2": 3, "extra": 1})
    assert [(p.field, p.problem) for p in raised.value.problems] == [("extra", "unknown field")]


def test_a_long_unknown_name_is_cut_short_and_compared_with_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compared: list[str] = []
    close = difflib.get_close_matches

    def counted(word: str, *args: Any, **kwargs: Any) -> list[str]:
        compared.append(word)
        return close(word, *args, **kwargs)

    monkeypatch.setattr(records_module.difflib, "get_close_matches", counted)
    long = "feature_" + "x" * 100_000
    with pytest.raises(InputError) as raised:
        reader().one({"feature_0": 1, "feature_1": 2, "feature_2": 3, long: 4, "featur_1": 5})
    fields = [p.field for p in raised.value.problems]
    assert max(map(len, fields)) <= 200
    assert compared == ["featur_1"]  # the long name resembles no input: no did-you-mean


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/invocations", "text/csv", b"feature\n" + b"\n" * 400_000),
        (
            "/invocations",
            "application/json",
            json.dumps({"dataframe_split": {"columns": ["a"], "data": [1] * 400_000}}).encode(),
        ),
        ("/invocations", "application/json", json.dumps({"instances": [[1]] * 400_000}).encode()),
        ("/predict/batch", "application/json", json.dumps({"records": [{}] * 400_000}).encode()),
        (INFER, "application/json", json.dumps({"inputs": [{"name": "a"}] * 400_000}).encode()),
    ],
    ids=["csv-blank-lines", "split-rows", "instances", "records", "v2-inputs"],
)
async def test_a_body_of_more_values_than_a_batch_can_hold_is_refused_at_once(
    client: httpx.AsyncClient, path: str, content_type: str, body: bytes
) -> None:
    response = await client.post(path, content=body, headers={"content-type": content_type})
    assert response.status_code == 413, response.text
    assert "holds more than" in response.text, response.text  # before it is parsed
    assert "serve.max_batch_rows" in response.text


async def test_a_csv_of_too_many_rows_is_refused_before_its_rows_are_checked(
    client: httpx.AsyncClient,
) -> None:
    body = b"a,b,c,d,e\n" + b"1\n" * 20_000  # every row of the wrong width
    response = await client.post("/invocations", content=body, headers={"content-type": "text/csv"})
    assert response.status_code == 413, response.text
    assert "the batch has 20000 rows" in response.text


async def test_rows_of_the_wrong_width_are_named_up_to_the_cap(client: httpx.AsyncClient) -> None:
    body = json.dumps({"instances": [[1]] * 5000}).encode()
    response = await client.post("/invocations", content=body, headers=JSON)
    assert response.status_code == 400
    assert response.json()["message"].startswith(f"{MAX_PROBLEMS} problems")


# --- numbers a client writes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("9" * 5000, ["5000 digits", str(MAX_COUNT)]),
        ("\N{SUPERSCRIPT TWO}", ["digits 0-9"]),
        ("-1", ["digits 0-9"]),
        ("1e3", ["digits 0-9"]),
    ],
)
def test_a_count_is_read_with_bounds(text: str, words: list[str]) -> None:
    with pytest.raises(MalformedBodyError) as raised:
        client_count(text, "Content-Length")
    assert all(word in raised.value.message for word in words), raised.value.message
    assert "Content-Length" in raised.value.message
    assert len(raised.value.message) < 300


def test_a_count_with_leading_zeros_is_its_value() -> None:
    assert client_count("0" * 5000 + "42", "Content-Length") == 42


async def test_a_v2_shape_of_4300_digits_is_a_400(client: httpx.AsyncClient) -> None:
    shape = "[" + "9" * 4300 + ", 30]"
    body = f'{{"inputs": [{{"name": "x", "shape": {shape}, "datatype": "FP64", "data": [1]}}]}}'
    response = await client.post(INFER, content=body.encode(), headers=JSON)
    assert response.status_code == 400, response.text
    assert "inputs[0].shape[0]" in response.json()["error"]


async def test_a_binary_header_length_of_5000_digits_is_a_400(client: httpx.AsyncClient) -> None:
    headers = {**JSON, "Inference-Header-Content-Length": "9" * 5000}
    response = await client.post(INFER, content=b'{"inputs": []}', headers=headers)
    assert response.status_code == 400, response.text
    assert "Inference-Header-Content-Length" in response.json()["error"]


async def test_a_content_length_of_5000_digits_is_a_400(client: httpx.AsyncClient) -> None:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"9" * 5000)],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("refit", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await transport.app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert b"Content-Length" in sent[1]["body"]


# --- one reading of each object ----------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1, "a": 2}',
        b'{"a" : 1, "b": "x:y", "a" : 2}',
        b'{"records": [{"a": 1}, {"b": 1, "b": NaN}]}',
        b'{"k\\\\": 1, "k\\\\": 2}',
    ],
    ids=["plain", "spaced-with-colons-in-text", "nested-nan", "escaped-backslash"],
)
def test_a_key_given_twice_is_refused_naming_it(body: bytes) -> None:
    with pytest.raises(MalformedBodyError, match="given twice in one object"):
        parse_json(body)


def test_keys_of_different_objects_may_repeat() -> None:
    body = b'{"records": [{"a": 1, "t": "x\\":y"}, {"a": 2, "t": "u:v"}], "b": {"a": {}}}'
    assert parse_json(body)["records"][1]["a"] == 2


@pytest.mark.parametrize("path", ["/predict", "/predict/batch", INFER, "/invocations"])
async def test_every_route_refuses_a_key_given_twice(
    client: httpx.AsyncClient, record: dict[str, Any], path: str
) -> None:
    one = json.dumps(record)[:-1] + ', "mean_radius": 99.0}'
    body = {
        "/predict": one,
        "/predict/batch": f'{{"records": [{one}]}}',
        "/invocations": f'{{"dataframe_records": [{one}]}}',
        INFER: '{"inputs": [{"name": "x", "name": "y", "shape": [1, 30], "datatype": "FP64", '
        f'"data": {json.dumps(list(record.values()))}}}]}}',
    }[path]
    response = await client.post(path, content=body.encode(), headers=JSON)
    assert response.status_code == 400, response.text
    assert "given twice" in response.text


# --- content types ----------------------------------------------------------------------------

REFUSED = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json; charset=latin-1",
    "application/json; format=pandas-split",
    None,
]


@pytest.mark.parametrize(
    "path", ["/predict", "/predict/batch", "/v1/models/breast-cancer/predict", INFER]
)
@pytest.mark.parametrize("content_type", REFUSED)
async def test_a_prediction_route_refuses_other_content_types(
    client: httpx.AsyncClient, record: dict[str, Any], path: str, content_type: str | None
) -> None:
    body = json.dumps({"records": [record]} if "batch" in path else record).encode()
    headers = {} if content_type is None else {"content-type": content_type}
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 415, response.text
    message = response.json()["error"]
    text = message["message"] if isinstance(message, dict) else message
    assert "application/json" in text and "UTF-8" in text, text
    if isinstance(message, dict):
        assert message["code"] == "unsupported_media_type"


@pytest.mark.parametrize("content_type", ["application/json; charset=UTF-8", "Application/JSON"])
async def test_json_in_utf_8_is_read_whatever_its_case(
    client: httpx.AsyncClient, record: dict[str, Any], content_type: str
) -> None:
    response = await client.post(
        "/predict", content=json.dumps(record), headers={"content-type": content_type}
    )
    assert response.status_code == 200, response.text


async def test_binary_tensor_data_may_come_without_a_content_type(
    client: httpx.AsyncClient, record: dict[str, Any]
) -> None:
    import numpy as np

    blob = np.array([list(record.values())], dtype="<f8").tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [1, 30],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        }
    ).encode()
    for headers in ({}, {"content-type": "application/octet-stream"}):
        headers = {**headers, "Inference-Header-Content-Length": str(len(head))}
        response = await client.post(INFER, content=head + blob, headers=headers)
        assert response.status_code == 200, response.text
    text = {"content-type": "text/plain", "Inference-Header-Content-Length": str(len(head))}
    assert (await client.post(INFER, content=head + blob, headers=text)).status_code == 415
