"""The OpenAPI document is the truth about every route, its pages work offline, and HEAD
works wherever GET does. (Every response of the server's tests is checked against the
document by tests/serve/conftest.py; these tests check the document and the checker.)"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from openapi_spec_validator import validate

from contract import Answer, Contract, check_response
from refit.serve.app import create_app
from refit.serve.metrics import CONTENT_TYPE
from refit.serve.state import ServerState
from refit.services import Services

pytestmark = pytest.mark.anyio

NAME = "breast-cancer"
PARAMETERS = {"name": NAME, "version": "1"}


@pytest.fixture
async def app(services: Services) -> FastAPI:
    """The app of a breast-cancer server with v1 loaded."""
    state = ServerState.open(services)
    assert await state.follower.check()
    return create_app(state)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://refit") as opened:
        yield opened


def routes(app: FastAPI, *, documented: bool) -> list[tuple[str, str]]:
    """(method, path) of every route of the app, with its path parameters filled in."""
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if getattr(route, "include_in_schema", False) is not documented:
            continue
        for method in sorted(getattr(route, "methods", None) or ()):
            found.append((method, getattr(route, "path", "").format(**PARAMETERS)))
    return found


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    served = await client.get("/openapi.json")
    assert served.status_code == 200
    body: dict[str, Any] = served.json()
    return body


# --- the document ---------------------------------------------------------------------------


async def test_the_document_is_valid_openapi_before_and_after_a_model_is_loaded(
    unpromoted: Services,
) -> None:
    state = ServerState.open(unpromoted)
    transport = httpx.ASGITransport(create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://refit") as client:
        validate((await client.get("/openapi.json")).json())


async def test_every_route_and_method_is_documented_with_head_beside_get(
    app: FastAPI, document: dict[str, Any]
) -> None:
    contract = Contract(document)
    listed = routes(app, documented=True)
    assert len(listed) > 20
    for method, path in listed:
        template = contract.template(path)
        assert template is not None, f"{path} is not in the document"
        item = document["paths"][template]
        assert method.lower() in item, f"{method} {template} is not in the document"
        if method == "GET":
            assert "head" in item, f"HEAD {template} is not in the document"
        assert "405" in item[method.lower()]["responses"], f"{method} {template}: no 405"
    operations = sum(len(item) for item in document["paths"].values())
    assert operations == len(listed) + sum(method == "GET" for method, _ in listed)


MLFLOW = {"/invocations", "/ping", "/health", "/version"}


async def test_errors_are_documented_in_each_protocols_shape_not_fastapis(
    document: dict[str, Any],
) -> None:
    text = json.dumps(document)
    assert "HTTPValidationError" not in text and '"detail"' not in text
    checked = 0
    for template, item in document["paths"].items():
        shape = "V2Error" if template.startswith("/v2") else "Error"
        if template in MLFLOW:
            shape = "MlflowError"
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if status in {"400", "405", "413", "422", "500"} and method != "head":
                    media = response["content"]["application/json"]
                    assert media["schema"] == {"$ref": f"#/components/schemas/{shape}"}
                    checked += 1
    assert checked > 30
    [(kind, media)] = document["paths"]["/invocations"]["post"]["responses"]["415"][
        "content"
    ].items()
    assert (kind, media["schema"]) == ("text/plain", {"type": "string"})


async def test_each_response_documents_the_one_content_type_it_is_sent_as(
    document: dict[str, Any],
) -> None:
    for template, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                kinds = list(response.get("content", {}))
                assert len(kinds) == (method != "head"), f"{method} {template} {status}: {kinds}"
    assert list(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == [
        CONTENT_TYPE
    ]
    assert list(document["paths"]["/version"]["get"]["responses"]["200"]["content"]) == [
        "text/plain"
    ]


# --- the checker refuses what the document does not say -------------------------------------


def answer(
    method: str, path: str, status: int, body: Any, headers: dict[str, str] | None = None
) -> Answer:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    kind = "text/plain" if isinstance(body, bytes) else "application/json"
    given = {"content-type": kind, "x-request-id": "r1", **(headers or {})}
    return Answer(method, path, status, {k: v for k, v in given.items() if v}, raw)


def refit_error(code: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": "why"}}


JSON = {"content-type": "application/json"}
WRONG = {
    "status": (answer("POST", "/predict", 418, refit_error("x")), "documents only"),
    "fastapi-422": (answer("POST", "/predict", 422, {"detail": []}), "not the body"),
    "no-retry-after": (answer("POST", "/predict", 503, refit_error("x")), "Retry-After"),
    "no-request-id": (
        answer("GET", "/health/live", 200, {"status": "live"}, {"x-request-id": ""}),
        "requires X-Request-Id",
    ),
    "content-type": (answer("POST", "/predict", 400, b"bad"), "not 'text/plain'"),
    "no-allow": (answer("GET", "/predict", 405, refit_error("x")), "Allow"),
    "method": (answer("DELETE", "/predict", 200, {}), "only its 405"),
    "allow": (answer("GET", "/predict", 405, refit_error("x"), {"allow": "GET"}), "Allow ['GET']"),
    "path": (answer("GET", "/nowhere", 200, {}), "not documented"),
    "fastapi-404": (answer("GET", "/nowhere", 404, {"detail": "Not Found"}), "not the body"),
    "ping": (answer("GET", "/ping", 200, b"ok", JSON), "not the body"),
    "v2": (answer("POST", f"/v2/models/{NAME}/infer", 400, refit_error("x")), "not the body"),
    "mlflow": (answer("POST", "/invocations", 400, {"error": "x"}), "not the body"),
    "head": (answer("HEAD", "/health/live", 200, {"status": "live"}), "no body"),
}


@pytest.mark.parametrize("case", list(WRONG))
async def test_the_checker_refuses_what_the_document_does_not_say(
    document: dict[str, Any], case: str
) -> None:
    wrong, words = WRONG[case]
    with pytest.raises(AssertionError, match=re.escape(words)):
        Contract(document).check(wrong)


async def test_the_checker_takes_what_the_document_says(document: dict[str, Any]) -> None:
    contract = Contract(document)
    contract.check(answer("POST", "/predict", 503, refit_error("x"), {"retry-after": "1"}))
    contract.check(answer("GET", "/predict", 405, refit_error("x"), {"allow": "POST"}))
    contract.check(answer("GET", "/nowhere", 404, refit_error("not_found")))
    contract.check(answer("GET", "/ping", 200, b"\n", JSON))
    contract.check(answer("HEAD", "/health/live", 200, b""))


# --- the docs pages -------------------------------------------------------------------------

ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_load_only_assets_the_server_serves(
    client: httpx.AsyncClient, page: str
) -> None:
    html = await client.get(page)
    assert html.status_code == 200
    assert html.headers["content-type"].startswith("text/html")
    assert "://" not in html.text, "the page loads something from another host"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assert any(asset.endswith(".js") for asset in assets), assets
    for asset in assets:
        assert asset.startswith("/docs/static/"), asset
        served = await client.get(asset)
        assert served.status_code == 200, asset
        kind = ASSET_TYPES[asset[asset.rindex(".") :]]
        assert served.headers["content-type"].startswith(kind), asset
        assert len(served.content) > 1000, asset
        head = await client.head(asset)
        assert (head.status_code, head.content) == (200, b""), asset
        assert head.headers["content-length"] == str(len(served.content)), asset
    assert "/openapi.json" in html.text
    redirect = await client.get("/docs/oauth2-redirect")
    assert redirect.status_code == 200 and "://" not in redirect.text


# --- HEAD -----------------------------------------------------------------------------------


@pytest.mark.parametrize("documented", [True, False], ids=["api", "docs"])
async def test_head_answers_every_get_route_with_its_headers_and_no_body(
    app: FastAPI, client: httpx.AsyncClient, documented: bool
) -> None:
    paths = [path for method, path in routes(app, documented=documented) if method == "GET"]
    assert paths
    for path in paths:
        got = await client.get(path)
        head = await client.head(path)
        assert (head.status_code, head.content) == (got.status_code, b""), path
        assert head.headers["content-type"] == got.headers["content-type"], path
        if path != "/metrics":  # the counts change with each request
            assert head.headers["content-length"] == got.headers["content-length"], path


async def test_head_on_a_route_without_get_is_refused_like_any_other_method(
    client: httpx.AsyncClient,
) -> None:
    for path in ["/predict", f"/v2/models/{NAME}/infer", "/invocations"]:
        refused = await client.head(path)
        assert (refused.status_code, refused.content) == (405, b""), path
        assert refused.headers["allow"] == "POST"


@pytest.mark.parametrize("path", ["/health/live", f"/v1/models/{NAME}", "/v2/health/live", "/ping"])
async def test_a_405_on_a_get_route_allows_head_too(client: httpx.AsyncClient, path: str) -> None:
    refused = await client.post(path)
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, HEAD"


# --- over a real socket ---------------------------------------------------------------------


@contextmanager
def listening(app: FastAPI) -> Iterator[str]:
    """`app` served by uvicorn in a thread on a free port of 127.0.0.1, with its lifespan."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_over_http_every_answer_is_documented_and_head_has_the_length_of_get(
    services: Services,
) -> None:
    app = create_app(ServerState.open(services, poll_interval=0.05))
    answers: list[Answer] = []

    def record(response: httpx.Response) -> None:
        request = response.request
        body = response.read()
        answers.append(
            Answer(request.method, request.url.path, response.status_code, response.headers, body)
        )

    batch = json.loads((services.project.root / "batch.json").read_text())
    with (
        listening(app) as url,
        httpx.Client(base_url=url, trust_env=False, event_hooks={"response": [record]}) as http,
    ):
        deadline = time.monotonic() + 20
        while http.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "no model was loaded"
            time.sleep(0.05)
        paths = [path for method, path in routes(app, documented=True) if method == "GET"]
        for path in [*paths, "/docs", "/docs/static/swagger-ui.css"]:
            got, head = http.get(path), http.head(path)
            assert (head.status_code, head.content) == (got.status_code, b""), path
            if path != "/metrics":
                assert head.headers["content-length"] == str(len(got.content)), path
        assert http.post("/predict/batch", json=batch).status_code == 200
        assert http.post("/predict", json={"records": []}).status_code == 422
        assert http.get("/predict").status_code == 405
        assert http.head("/predict").status_code == 405
        assert http.get("/no/such/page").status_code == 404
        assert (
            http.post("/invocations", content=b"a,b", headers={"content-type": "x/y"}).status_code
            == 415
        )
        assert http.post(f"/v2/models/{NAME}/infer", json={}).status_code == 400
    for answer in answers:
        check_response(app, answer)
    assert len(answers) > 2 * len(paths)
