"""Every error of every route has its protocol's one shape.

The routes are read from the app itself, so a new route is covered without editing this file.
Each is sent every kind of bad request that can be made in process: a wrong method, an
unknown model or version, no key, a key in the URL, a key without the route's scope, a Host
the server does not answer to, a wrong or missing Content-Type, a body that is not JSON, not
the route's shape or over the size limit, values the model cannot take; then the same routes
of a server with nothing in production (503), and of one whose model answers what cannot be
written (500). Every error that comes back must have the shape of the route's protocol:

- refit's own routes: `{"error": {"code": str, "message": str, "problems"?: [...]}}`;
- the Open Inference Protocol (`/v2...`): `{"error": str}`;
- MLflow's (`/invocations`, `/ping`, `/health`, `/version`): `{"error_code": str, "message":
  str}`, but a 415 of `/invocations` in plain text, as MLflow answers it.

And every error status that an operation of `/openapi.json` documents must have been
provoked for it, unless `NOT_IN_PROCESS` says why it cannot be (the connection layer answers
before the app; those answers are checked on a real server with raw sockets below).
"""

from __future__ import annotations

import io
import json
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from refit.apikeys import Scope, key_line, new_key, parse_key_line
from refit.serve.app import create_app
from refit.serve.auth import LOOPBACK_NAMES, ROUTE_ACCESS, Access
from refit.serve.schemas import CONNECTION_REFUSALS
from refit.serve.state import ServerState
from refit.services import Services
from refit.train.promotion import promote_version
from serving import Server, example_records, make_project, serving

pytestmark = pytest.mark.anyio

NAME = "breast-cancer"
MAX_BYTES = 16 * 1024
MAX_ROWS = 8
PREDICT, ADMIN = new_key(), new_key()
ACCESS = Access(
    keys=(
        parse_key_line(key_line(Scope.PREDICT, "client", PREDICT)),
        parse_key_line(key_line(Scope.ADMIN, "ops", ADMIN)),
    ),
    metrics=Scope.ADMIN,  # so that /metrics and the docs have a 403 to provoke
    docs=Scope.ADMIN,
    allowed_hosts=LOOPBACK_NAMES,
)
BASE_URL = "http://127.0.0.1:8000"
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")

MLFLOW_PATHS = frozenset({"/invocations", "/ping", "/health", "/version"})
ERROR_SCHEMA = {"refit": "Error", "v2": "V2Error", "mlflow": "MlflowError"}
"""The component schema each protocol's errors are documented with."""
ACCESS_STATUSES = frozenset({401, 403, 421})
"""Answered by the access middleware, before any route runs."""


def protocol_of(template: str) -> str:
    """The protocol a route (by its path template) speaks."""
    if template == "/v2" or template.startswith("/v2/"):
        return "v2"
    return "mlflow" if template in MLFLOW_PATHS else "refit"


# --- what was received, and its shape ---------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One answer to one provoking request."""

    template: str
    method: str
    path: str
    status: int
    content_type: str
    body: bytes
    why: str

    def __str__(self) -> str:
        return f"{self.method} {self.path} ({self.why}) -> {self.status} {self.body[:200]!r}"


def shape_problems(protocol: str, answer: Received) -> list[str]:
    """What is wrong with the shape of an error `answer` of a route of `protocol`."""
    if protocol == "mlflow" and answer.status == 415 and answer.template == "/invocations":
        if not answer.content_type.startswith("text/plain"):
            return [f"content type {answer.content_type!r}, not text/plain"]
        return [] if answer.method == "HEAD" or answer.body.strip() else ["an empty message"]
    if answer.content_type != "application/json":
        return [f"content type {answer.content_type!r}, not application/json"]
    if answer.method == "HEAD":
        return [] if answer.body == b"" else ["a body to a HEAD request"]
    body = json.loads(answer.body)
    if protocol == "v2":
        ok = isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str)
        return [] if ok else ['not {"error": str}']
    if protocol == "mlflow":
        ok = isinstance(body, dict) and set(body) == {"error_code", "message"}
        ok = ok and all(isinstance(body[key], str) for key in ("error_code", "message"))
        return [] if ok else ['not {"error_code": str, "message": str}']
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return ['not {"error": {...}}']
    error = body["error"]
    problems = []
    if not {"code", "message"} <= set(error) <= {"code", "message", "problems"}:
        problems.append(f"error keys {sorted(error)}")
    if not all(isinstance(error.get(key), str) for key in ("code", "message")):
        problems.append("code or message not a string")
    if "problems" in error:
        listed = error["problems"]
        fields = {"field", "problem", "received", "expected"}
        if not isinstance(listed, list) or not all(
            isinstance(p, dict)
            and {"field", "problem"} <= set(p) <= fields
            and isinstance(p["field"], str)
            and isinstance(p["problem"], str)
            for p in listed
        ):
            problems.append("problems not a list of {field, problem, received?, expected?}")
    return problems


# --- the document -----------------------------------------------------------------------------


class Document:
    """What `/openapi.json` says of each operation's responses."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.paths: dict[str, Any] = document["paths"]

    def response(self, template: str, method: str, status: int) -> dict[str, Any] | None:
        """The documented response; a HEAD's is its GET's (with the content a GET has)."""
        item = self.paths.get(template)
        if item is None:
            return None
        method = "get" if method == "HEAD" else method.lower()
        operation = item.get(method)
        if operation is None:  # a method the path does not take: its 405
            operation = next(iter(item.values()))
        found: dict[str, Any] | None = operation["responses"].get(str(status))
        return found

    def is_error(self, template: str, method: str, status: int) -> bool:
        """Whether an answer of `status` is an error rather than a status report (a 503
        "not ready" of a readiness probe, the 404 of MLflow's `/ping`)."""
        if status < 400:
            return False
        response = self.response(template, method, status)
        if response is None:
            return True  # undocumented routes (the docs pages): every 4xx and 5xx is an error
        return self.error_schema(response) is not None or "text/plain" in response.get(
            "content", {}
        )

    @staticmethod
    def error_schema(response: dict[str, Any]) -> str | None:
        schema = response.get("content", {}).get("application/json", {}).get("schema", {})
        name = str(schema.get("$ref", "")).rpartition("/")[2]
        return name if name in ERROR_SCHEMA.values() else None

    def error_statuses(self) -> Iterator[tuple[str, str, int, dict[str, Any]]]:
        """Each operation's documented error responses: template, METHOD, status, response."""
        for template, item in self.paths.items():
            for method, operation in item.items():
                for status, response in operation["responses"].items():
                    if self.is_error(template, method.upper(), int(status)):
                        yield template, method.upper(), int(status), response


def not_in_process(template: str, status: int, response: dict[str, Any]) -> str | None:
    """Why a documented error cannot be provoked in process, if it cannot."""
    if status in (408, 414, 431):
        return "the connection layer's; see test_connection_refusals_have_refits_shape"
    if status == 503 and response["description"] == CONNECTION_REFUSALS[503]["description"]:
        return "the connection layer's (every connection busy): tests/reliability/test_http_limits"
    if status == 403 and ROUTE_ACCESS.get(template, "predict") == "predict":
        return "every key holds the scope `predict`"
    return None


# --- provoking --------------------------------------------------------------------------------


def instance(template: str, name: str = NAME, version: str = "1") -> str:
    """A path of `template`: `{version}` is `version`, any other parameter the model's name."""
    with_version = template.replace("{version}", version)
    return re.sub(r"\{[^}]+\}", name, with_version)


def valid_body(template: str) -> bytes:
    """A request every POST route of `template`'s kind answers 200 when its model works."""
    record = example_records(1)[0]
    if template.endswith("/predict/batch"):
        body: Any = {"records": [record]}
    elif template.endswith("/predict"):
        body = record
    elif template.endswith("/infer"):
        values = list(record.values())
        tensor = {"name": "x", "shape": [1, len(values)], "datatype": "FP64", "data": values}
        body = {"inputs": [tensor]}
    elif template.endswith("/invocations"):
        body = {"dataframe_records": [record]}
    elif template.endswith("/feedback"):
        body = {"id": "request-1", "value": "benign"}
    else:
        raise AssertionError(f"no valid request body is known for POST {template}: add one here")
    return json.dumps(body).encode()


Request = tuple[str, str, str, dict[str, str], bytes | None]
"""Why, METHOD, path (with query), headers, body."""


def bad_requests(template: str, methods: set[str], mount: bool, version: str) -> Iterator[Request]:
    """Every bad request that a route of `template` taking `methods` can be sent in process."""
    key = {"X-API-Key": ADMIN}
    path = f"{template}/no-such-file.css" if mount else instance(template, version=version)
    method = "GET" if mount else sorted(methods - {"HEAD"})[0]
    body = valid_body(template) if method == "POST" else None
    json_type = {"content-type": "application/json"} if method == "POST" else {}
    other = next(m for m in METHODS if m not in methods)
    keyed = {**key, **json_type}
    yield "a method the path does not take", other, path, key, None
    if re.search(r"\{(?!version\})[^}]+\}", template):
        yield "an unknown model", method, instance(template, name="nope"), keyed, body
    if "{version}" in template:
        yield "an unknown version", method, instance(template, version="99"), keyed, body
    yield "no key", method, path, json_type, body
    yield "a key it does not take", method, path, {"X-API-Key": new_key(), **json_type}, body
    yield "a key in the URL", method, f"{path}?api_key={ADMIN}", json_type, body
    yield "a key without the scope", method, path, {"X-API-Key": PREDICT, **json_type}, body
    yield "a Host it does not answer to", method, path, {**key, "host": "evil.example"}, body
    if method != "POST":
        return
    yield "text/plain", method, path, {**key, "content-type": "text/plain"}, body
    yield "no Content-Type", method, path, key, body
    latin = {**key, "content-type": "application/json; charset=latin-1"}
    yield "a charset", method, path, latin, body
    bodies = {
        "not JSON": b"{",
        "a list": b"[]",
        "an empty object": b"{}",
        "an empty batch": b'{"records": []}',
        "a record of nothing": b'{"records": [{}]}',
        "a wrong value": json.dumps({**example_records(1)[0], "mean_radius": "big"}).encode(),
        "over the size limit": b'{"a": "' + b"x" * MAX_BYTES + b'"}',
        "over the row limit": json.dumps({"records": example_records(MAX_ROWS + 1)}).encode(),
    }
    for why, bad in bodies.items():
        yield why, method, path, keyed, bad


def good_requests(template: str, methods: set[str], mount: bool, version: str) -> Iterator[Request]:
    """The request a route answers when its model works (for a 500, and the 503s)."""
    if mount:
        return
    method = sorted(methods - {"HEAD"})[0]
    path = instance(template, version=version)
    headers = {"X-API-Key": ADMIN}
    if method == "POST":
        headers["content-type"] = "application/json"
        yield "a valid request", method, path, headers, valid_body(template)
    else:
        yield "a valid request", method, path, headers, None


Provoker = Callable[[str, set[str], bool, str], Iterator[Request]]


def routes(app: FastAPI) -> list[tuple[str, set[str], bool]]:
    """Each route of the app: its path template, its methods, and whether it is a mount."""
    found = []
    for context in iter_route_contexts(app.routes):
        if context.path is None:
            continue
        methods = set(context.methods or ())
        found.append((context.path, methods or {"GET", "HEAD"}, not context.methods))
    assert len(found) >= 20, found
    return found


async def provoke(
    app: FastAPI, provokers: tuple[Provoker, ...], version: int = 1
) -> list[Received]:
    """Send every provoker's requests to every route of `app` (and each GET's as a HEAD),
    naming `version` where a path names one."""
    answers = []
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        for template, methods, mount in routes(app):
            for provoker in provokers:
                for why, method, path, headers, body in provoker(
                    template, methods, mount, str(version)
                ):
                    for sent in [method, "HEAD"] if method == "GET" else [method]:
                        response = await client.request(sent, path, headers=headers, content=body)
                        answers.append(
                            Received(
                                template,
                                sent,
                                path,
                                response.status_code,
                                response.headers.get("content-type", ""),
                                response.content,
                                why,
                            )
                        )
    return answers


class ComplexLabels:
    """A classifier whose labels are complex numbers, which no JSON can hold: the server cannot
    write what it answers, a failure of its own (500)."""

    def predict(self, frame: Any) -> np.ndarray[Any, Any]:
        return np.full(len(frame), 1 + 1j)

    def predict_proba(self, frame: Any) -> np.ndarray[Any, Any]:
        return np.tile([0.5, 0.5], (len(frame), 1))


async def opened(services: Services) -> ServerState:
    state = ServerState.open(services, max_body_bytes=MAX_BYTES, max_batch_rows=MAX_ROWS)
    await state.follower.check()
    return state


@pytest.fixture
async def answers(
    unpromoted: Services,
    add_version: Callable[..., int],
    force_production: Callable[[int], None],
) -> AsyncIterator[tuple[Document, list[Received]]]:
    """The document of a server that serves v1, and every answer of every server to every
    provoking request: one serving v1, one with nothing in production, one whose model answers
    what cannot be written."""
    states = []
    nothing = await opened(unpromoted)
    states.append(nothing)
    received = await provoke(create_app(nothing, access=ACCESS), (good_requests,))
    promote_version(unpromoted.registry, NAME, 1, "test", store=unpromoted.store)
    served = await opened(unpromoted)
    states.append(served)
    app = create_app(served, access=ACCESS)
    received += await provoke(app, (bad_requests, good_requests))
    document = Document(app.openapi())
    artifact = io.BytesIO()
    joblib.dump(ComplexLabels(), artifact)
    force_production(add_version(artifact=artifact.getvalue()))
    broken = await opened(unpromoted)
    states.append(broken)
    assert broken.follower.current is not None and broken.follower.current.version == 2
    received += await provoke(create_app(broken, access=ACCESS), (good_requests,), version=2)
    yield document, received
    for state in states:
        await state.batcher.close()


async def test_every_error_of_every_route_has_its_protocols_shape(
    answers: tuple[Document, list[Received]],
) -> None:
    document, received = answers
    wrong = []
    for answer in received:
        protocol = protocol_of(answer.template)
        if not document.is_error(answer.template, answer.method, answer.status):
            continue
        if protocol != "refit" and answer.status in ACCESS_STATUSES:
            continue  # see test_access_refusals_have_the_shape_of_the_routes_protocol
        problems = shape_problems(protocol, answer)
        response = document.response(answer.template, answer.method, answer.status)
        if response is not None and "text/plain" not in response.get("content", {}):
            schema = document.error_schema(response)
            if schema != ERROR_SCHEMA[protocol]:
                problems.append(f"documented as {schema}, not {ERROR_SCHEMA[protocol]}")
        wrong += [f"{answer}: {problem}" for problem in problems]
    assert not wrong, "\n".join(wrong[:20])


async def test_every_documented_error_is_provoked(answers: tuple[Document, list[Received]]) -> None:
    document, received = answers
    provoked = {(a.template, a.method, a.status) for a in received}
    # A 405 is the path's: every operation of the path documents it.
    provoked |= {(t, m, 405) for t, _, s in provoked if s == 405 for m in METHODS}
    missing = [
        f"{method} {template} {status}"
        for template, method, status, response in document.error_statuses()
        if (template, method, status) not in provoked
        and not_in_process(template, status, response) is None
    ]
    assert not missing, f"documented, never provoked: {missing}"
    statuses = {status for _, _, status in provoked}
    assert {400, 401, 403, 404, 405, 413, 415, 421, 422, 500, 503} <= statuses


async def test_access_refusals_have_refits_shape_on_every_route(
    answers: tuple[Document, list[Received]],
) -> None:
    # The access checks answer before any route runs, as the connection layer does: their
    # refusals (401, 403, 421) are the server's own, in refit's shape on every route, as the
    # document and the README say.
    document, received = answers
    refused = [
        a
        for a in received
        if a.status in ACCESS_STATUSES
        and protocol_of(a.template) != "refit"
        and document.is_error(a.template, a.method, a.status)
    ]
    assert {protocol_of(a.template) for a in refused} == {"v2", "mlflow"}
    wrong = [f"{a}: {p}" for a in refused for p in shape_problems("refit", a)]
    assert not wrong, "\n".join(wrong[:20])


async def test_an_unknown_path_has_refits_shape(services: Services) -> None:
    state = await opened(services)
    transport = httpx.ASGITransport(create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        response = await client.get("/no/such/route")
    await state.batcher.close()
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    answer = Received(
        "/no/such/route",
        "GET",
        "/no/such/route",
        404,
        "application/json",
        response.content,
        "an unknown path",
    )
    assert shape_problems("refit", answer) == []


# --- the connection layer, on a real server ---------------------------------------------------

LIMITS = {
    "REFIT_SERVE__MAX_HEADER_BYTES": str(4 * 2**10),
    "REFIT_SERVE__MAX_URL_BYTES": str(2 * 2**10),
    "REFIT_SERVE__HEADER_TIMEOUT": "0.5",
}


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    project = make_project(tmp_path_factory.mktemp("error-shape") / "project")
    with serving(project, 1, env=LIMITS) as server:
        yield server


def exchange(server: Server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes on a new connection; the status, headers and body of the answer."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/predict", f"/v2/models/{NAME}/infer", "/invocations"])
def test_connection_refusals_have_refits_shape(real_server: Server, path: str) -> None:
    """408, 414 and 431 are answered before any request reaches the app, so before any route
    is known: in refit's shape on every path, as the document says (`CONNECTION_REFUSALS`)."""
    start = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
    refusals = {
        408: start,  # the headers never end
        414: f"POST {path}?{'q' * 3000} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),
        431: start + b"X-Big: " + b"b" * 6000 + b"\r\n\r\n",
    }
    for status, request in refusals.items():
        answered, headers, body = exchange(real_server, request)
        answer = Received(
            path, "POST", path, answered, headers.get("content-type", ""), body, f"a {status}"
        )
        assert answered == status, answer
        assert shape_problems("refit", answer) == [], answer
        assert headers["connection"] == "close"
