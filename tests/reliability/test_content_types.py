"""A body reads one way only, against a real server: the prediction routes take only their
documented content types (a cross-site form cannot call them), only UTF-8, and an object that
gives a key twice is a 400 naming it (not the last value silently winning).

Before, `text/plain` and form posts to `/predict` were answered 200, and `{"a": 1, "a": 2}` was
read as `{"a": 2}`."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from serving import Server, example_records, make_project, serving

pytestmark = pytest.mark.slow

RECORD = example_records(1)[0]
ROUTES = {
    "/predict": json.dumps(RECORD),
    "/predict/batch": json.dumps({"records": [RECORD]}),
    "/v1/models/breast-cancer/predict": json.dumps(RECORD),
    "/v2/models/breast-cancer/infer": json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [1, 30], "datatype": "FP64", "data": list(RECORD.values())}
            ]
        }
    ),
    "/invocations": json.dumps({"dataframe_records": [RECORD]}),
}
CROSS_SITE = [
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=refit",
]
"""What a page of another site can make a browser send without asking the server first."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    project = make_project(tmp_path_factory.mktemp("types") / "project")
    with serving(project, workers=1) as running:
        running.converge(1, workers=1)
        yield running


def status_of_raw(server: Server, path: str, content_type: str | None, body: bytes) -> int:
    """The status of a POST written byte for byte, as a browser's form would send it."""
    host, port = server.url.removeprefix("http://").split(":")
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head.encode() + body)
        answer = connection.recv(65536)
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("path", list(ROUTES))
def test_a_cross_site_form_cannot_reach_a_model(server: Server, path: str) -> None:
    body = ROUTES[path].encode()
    for content_type in [*CROSS_SITE, None]:
        status = status_of_raw(server, path, content_type, body)
        assert status == 415, f"{path} answered {status} to Content-Type {content_type}"
        response = server.http.post(
            path,
            content=body,
            headers={} if content_type is None else {"content-type": content_type},
        )
        assert response.status_code == 415
        assert "application/json" in response.text and "UTF-8" in response.text, response.text


@pytest.mark.parametrize("path", list(ROUTES))
def test_only_utf_8_is_read(server: Server, path: str) -> None:
    body = ROUTES[path].encode()
    for charset, status in [("latin-1", 415), ("utf-16", 415), ("UTF-8", 200), ('"utf-8"', 200)]:
        headers = {"content-type": f"application/json; charset={charset}"}
        response = server.http.post(path, content=body, headers=headers)
        assert response.status_code == status, f"{path}, charset {charset}: {response.text}"


@pytest.mark.parametrize("path", list(ROUTES))
def test_a_key_given_twice_is_a_400_naming_it(server: Server, path: str) -> None:
    body = ROUTES[path].replace('"mean_radius": ', '"mean_radius": 99.0, "mean_radius": ', 1)
    if path.startswith("/v2"):
        body = body.replace('"name": "x"', '"name": "x", "name": "y"')
    response = server.http.post(
        path, content=body.encode(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, f"{path}: {response.status_code} {response.text}"
    assert "given twice" in response.text
    assert ("mean_radius" if not path.startswith("/v2") else "name") in response.text
