"""No 500 from an input: every number a client writes (V2 shapes and binary sizes,
`Inference-Header-Content-Length`, `Content-Length`, integers in JSON and CSV) is read with
bounds, and a number past them is a 4xx naming the field, against a real server.

Before, a V2 shape of a 4,300-digit number and a header of 5,000 digits answered 500 (Python's
limit on the digits of an int's text)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from serving import Server, example_records, make_project, serving

pytestmark = pytest.mark.slow

INFER = "/v2/models/breast-cancer/infer"
JSON = {"content-type": "application/json"}
RECORD = example_records(1)[0]
BINARY_HEAD = (
    b'{"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP64", '
    b'"parameters": {"binary_data_size": ' + b"9" * 4300 + b"}}]}"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    project = make_project(tmp_path_factory.mktemp("numbers") / "project")
    with serving(project, workers=1) as running:
        running.converge(1, workers=1)
        yield running


def v2_shape(dimension: str) -> bytes:
    data = list(RECORD.values())
    return (
        f'{{"inputs": [{{"name": "x", "shape": [{dimension}, 30], "datatype": "FP64", '
        f'"data": {data}}}]}}'
    ).encode()


def raw(server: Server, request: bytes) -> bytes:
    """The answer of a request written byte for byte (no client library checks it first)."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


@pytest.mark.parametrize(
    ("what", "path", "body", "headers", "named"),
    [
        ("V2 shape of 4,300 digits", INFER, v2_shape("9" * 4300), JSON, "inputs[0].shape[0]"),
        ("V2 shape past 2**53", INFER, v2_shape(str(2**53 + 1)), JSON, "inputs[0].shape[0]"),
        (
            "Inference-Header-Content-Length of 5,000 digits",
            INFER,
            v2_shape("1"),
            {**JSON, "Inference-Header-Content-Length": "9" * 5000},
            "Inference-Header-Content-Length",
        ),
        (
            "Inference-Header-Content-Length in other digits",
            INFER,
            v2_shape("1"),
            {**JSON, "Inference-Header-Content-Length": "\N{SUPERSCRIPT TWO}".encode("latin-1")},
            "Inference-Header-Content-Length",
        ),
        (
            "binary_data_size of 4,300 digits",
            INFER,
            BINARY_HEAD + b"\0",
            {**JSON, "Inference-Header-Content-Length": str(len(BINARY_HEAD))},
            "binary_data_size",
        ),
        (
            "JSON integer of 5,000 digits",
            "/predict",
            f'{{"mean_radius": {"9" * 5000}}}'.encode(),
            JSON,
            "digits",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 60 else None,
)
def test_a_number_past_its_bounds_is_a_4xx_naming_it(
    server: Server, what: str, path: str, body: bytes, headers: dict[str, Any], named: str
) -> None:
    response = server.http.post(path, content=body, headers=headers)
    assert response.status_code == 400, f"{what}: {response.status_code} {response.text[:300]}"
    assert named in response.text, response.text[:300]
    assert len(response.content) < 4096, f"{what}: the answer repeats the number whole"


def test_a_csv_cell_of_4300_digits_is_a_problem_of_its_field(server: Server) -> None:
    header = ",".join(RECORD)
    cells = ",".join(["9" * 4300, *(str(v) for v in list(RECORD.values())[1:])])
    response = server.http.post(
        "/invocations", content=f"{header}\n{cells}\n", headers={"content-type": "text/csv"}
    )
    assert response.status_code == 400, response.text[:300]
    assert "too large for a 64-bit float" in response.json()["message"]


def test_a_content_length_of_5000_digits_is_refused_and_the_server_goes_on(
    server: Server,
) -> None:
    answer = raw(
        server,
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n{}",
    )
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer[:300]
    assert server.http.post("/predict", json=RECORD).status_code == 200
    assert httpx.get(f"{server.url}/health/live", timeout=5).status_code == 200
