"""The API's documentation: its OpenAPI document, and the pages that show it, served offline.

    add_docs(app)                                   # /docs, /redoc and their assets
    document = openapi_document(app, [signature])   # what /openapi.json answers

Swagger UI (`/docs`) and ReDoc (`/redoc`) load their scripts and styles from `/docs/static/`,
files of the installed `fastapi-offline` package (Swagger UI 5, ReDoc 2), so the pages work
on a machine without internet access. The document lists every response each route gives:
FastAPI's own `{"detail": [...]}` validation error, which no route of refit answers, is taken
out, every GET operation has its HEAD twin (the headers of the GET, without the body), every
response a route gives has its `X-Request-Id` header, and every operation lists what the
connection layer answers before any route (408, 414, 431, and a 503 where the route has none).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from refit.serve._logging import MAX_REQUEST_ID, REQUEST_ID_HEADER
from refit.serve.schemas import CONNECTION_REFUSALS, UNKNOWN_PATH, openapi_components
from refit.signature import Signature

DOCS, REDOC, STATIC = "/docs", "/redoc", "/docs/static"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
_ASSETS = ("fastapi_offline", "static")
_FASTAPI_VALIDATION = ("ValidationError", "HTTPValidationError")
REQUEST_ID = {
    "description": "The request's id, in its log lines too: the client's own `X-Request-Id` "
    f"when it is at most {MAX_REQUEST_ID} letters, digits and `._:-`, else a new one.",
    "required": True,
    "schema": {"type": "string", "maxLength": MAX_REQUEST_ID},
}


def add_docs(app: FastAPI) -> None:
    """Serve Swagger UI at /docs and ReDoc at /redoc from local assets; the app must be made
    with `docs_url=None, redoc_url=None` (FastAPI's own pages load them from a CDN)."""
    app.mount(STATIC, StaticFiles(packages=[_ASSETS]), name="docs-static")

    def urls(request: Request) -> tuple[str, str]:
        root = request.scope.get("root_path", "")
        return f"{root}{app.openapi_url}", f"{root}{STATIC}"

    @app.get(DOCS, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        openapi, static = urls(request)
        return get_swagger_ui_html(
            openapi_url=openapi,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=OAUTH2_REDIRECT,
            swagger_js_url=f"{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{static}/swagger-ui.css",
            swagger_favicon_url=f"{static}/favicon.png",
            # No badge that sends the document to swagger.io's online validator.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(OAUTH2_REDIRECT, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        openapi, static = urls(request)
        return get_redoc_html(
            openapi_url=openapi,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{static}/redoc.standalone.js",
            redoc_favicon_url=f"{static}/favicon.png",
            with_google_fonts=False,
        )


def openapi_document(
    app: FastAPI,
    signatures: Sequence[Signature | None],
    max_rows: int | None = None,
    withholds: Sequence[bool] = (),
) -> dict[str, Any]:
    """The OpenAPI document of `app` while it serves a version of each of `signatures` (None:
    none yet), one per model; with several, a record or prediction is any of theirs.
    `max_rows` is the server's `serve.max_batch_rows`; `withholds[i]`: the version served of
    model `i` may withhold answers (its `postprocess`)."""
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION:
        schemas.pop(name, None)
    schemas.update(_components(signatures, max_rows, withholds))
    components.setdefault("responses", {})["UnknownPath"] = dict(UNKNOWN_PATH)
    components.setdefault("headers", {})["RequestId"] = REQUEST_ID
    responses = [components["responses"]["UnknownPath"]]
    for item in document["paths"].values():
        for operation in item.values():
            _drop_fastapi_validation(operation["responses"])
            responses.extend(operation["responses"].values())
    request_id = {REQUEST_ID_HEADER: {"$ref": "#/components/headers/RequestId"}}
    for response in responses:  # a new dict: FastAPI shares the declared ones between routes
        response["headers"] = {**response.get("headers", {}), **request_id}
    for item in document["paths"].values():  # no request id here: no request was read
        for operation in item.values():
            for status, refusal in CONNECTION_REFUSALS.items():
                operation["responses"].setdefault(str(status), copy.deepcopy(refusal))
    for item in document["paths"].values():
        if "get" in item:
            item["head"] = _head(item["get"])
    return document


_PER_MODEL = ("Record", "Records", "Prediction", "Predictions", "FeedbackItem")
"""The schemas drawn from a model's signature."""


def _components(
    signatures: Sequence[Signature | None], max_rows: int | None, withholds: Sequence[bool]
) -> dict[str, Any]:
    first, *others = [
        openapi_components(signature, max_rows, i < len(withholds) and withholds[i])
        for i, signature in enumerate(signatures)
    ]
    for name in _PER_MODEL if others else ():
        each = [{k: v for k, v in c[name].items() if k != "title"} for c in (first, *others)]
        first[name] = {"title": name, "anyOf": each}
    return first


def _drop_fastapi_validation(responses: dict[str, Any]) -> None:
    # FastAPI documents a 422 for every route with parameters; refit's routes read their
    # path parameters as plain strings, and their bodies themselves, so it never happens.
    schema = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema")
    if schema == {"$ref": "#/components/schemas/HTTPValidationError"}:
        del responses["422"]


def _head(get: dict[str, Any]) -> dict[str, Any]:
    head = copy.deepcopy(get)
    head["operationId"] = f"{get['operationId'].removesuffix('_get')}_head"
    head["summary"] = f"{get.get('summary', '')} (headers only)".lstrip()
    head["responses"].pop("405", None)  # HEAD is taken wherever GET is
    for response in head["responses"].values():
        response.pop("content", None)
    return head
