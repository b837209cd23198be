"""Who may call what: API keys with scopes, and the `Host` names a server answers to.

    access = Access.from_spec(spec.serve, os.environ)
    app.add_middleware(AccessMiddleware, access=access, routes=app.routes)
    document_access(openapi_document, access)

Every route needs a key of scope `predict`, but those of `ROUTE_ACCESS`: the health probes
are open, `/metrics` and the API's documentation are as `serve.metrics_access` and
`serve.docs_access` say, the dashboard's page and assets (which hold no data) are open, and a
route that changes state declares `admin` there. A path no
route serves is left to the router (its 404). Without configured keys nothing is guarded, and
`refit.apikeys.check_exposure` keeps such a server on loopback unless `serve.auth: none` is said.

A key is sent as `Authorization: Bearer KEY` or `X-API-Key: KEY`, never in the URL (proxies
and access logs keep URLs); its sha256 is compared in constant time with every configured hash.
On loopback, a request whose `Host` is not a loopback name is refused (421), so that a web page
of another site cannot reach the server through a name it resolves to 127.0.0.1 (DNS
rebinding).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote_plus

from fastapi.routing import iter_route_contexts
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from refit.apikeys import HELD, KeyHash, hash_key, is_loopback, server_keys
from refit.apikeys import Scope as KeyScope
from refit.serve.codecs import refit
from refit.serve.failures import Failure
from refit.spec import ServeSpec

Guard = Literal["open", "metrics", "docs", "predict", "admin"]

ROUTE_ACCESS: dict[str, Guard] = {
    "/health/live": "open",
    "/health/ready": "open",
    "/health": "open",
    "/ping": "open",
    "/v2/health/live": "open",
    "/v2/health/ready": "open",
    "/metrics": "metrics",
    "/openapi.json": "docs",
    "/docs": "docs",
    "/docs/oauth2-redirect": "docs",
    "/docs/static": "docs",
    "/redoc": "docs",
    "/ui": "open",  # the page and its assets hold no data; what they read needs `predict`
    "/ui/static": "open",
}
"""The guard of each route (by its path template) that is not `predict`: the one place a route
declares who may call it."""

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
"""The `Host` names a server on loopback answers to, unless `serve.allowed_hosts` says others."""

REALM = 'Bearer realm="refit"'
# The names a key might be given under in a query string: refused, whatever their value.
_KEY_PARAMETERS = frozenset({"api_key", "apikey", "api-key", "key", "token", "access_token"})


@dataclass(frozen=True)
class Access:
    """What a server asks of a request: the configured keys, the scope `/metrics` and the docs
    need (None: open), and the `Host` names it answers to (None: any)."""

    keys: tuple[KeyHash, ...] = ()
    metrics: KeyScope | None = None
    docs: KeyScope | None = None
    allowed_hosts: frozenset[str] | None = None

    @classmethod
    def from_spec(cls, serve: ServeSpec, environ: Mapping[str, str]) -> Access:
        """The access rules of `serve`, with the keys of `REFIT_API_KEY_HASHES` added."""
        keys = server_keys(serve, environ)
        return cls(
            keys=keys,
            metrics=_scope(serve.metrics_access),
            docs=_scope(serve.docs_access),
            allowed_hosts=allowed_hosts(serve),
        )

    def needed(self, guard: Guard) -> KeyScope | None:
        """The scope a route of `guard` needs, or None when it is open."""
        if not self.keys or guard == "open":
            return None
        if guard == "metrics":
            return self.metrics
        if guard == "docs":
            return self.docs
        return KeyScope(guard)

    def scopes_of(self, key: str) -> frozenset[KeyScope]:
        """The scopes `key` holds (none when it is no configured key).

        Its hash is compared with every configured one, with no early exit, so the time taken
        says nothing of which hash, or how much of one, matched.
        """
        digest = hash_key(key)
        held: set[KeyScope] = set()
        for configured in self.keys:
            if hmac.compare_digest(digest, configured.digest):
                held |= HELD[configured.scope]
        return frozenset(held)


def allowed_hosts(serve: ServeSpec) -> frozenset[str] | None:
    """The `Host` names a server of `serve` answers to; None: any."""
    if serve.allowed_hosts is not None:
        names = frozenset(_host_name(name) for name in serve.allowed_hosts)
        return None if "*" in names else names
    return LOOPBACK_NAMES if is_loopback(serve.host) else None


def _scope(access: str) -> KeyScope | None:
    return None if access == "open" else KeyScope(access)


def _host_name(host: str) -> str:
    """The name of a `Host` header's value, without its port: `[::1]:8000` -> `::1`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


_SEEN_PATHS = 1024
"""Paths whose guard is remembered (the routes' own, and the models' names in them)."""


class AccessMiddleware:
    """Refuses a request whose `Host` is not allowed (421), that carries a key in its URL or
    none (401), or whose key lacks the route's scope (403), before any route runs."""

    def __init__(self, app: ASGIApp, access: Access, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.access = access
        self.routes = routes  # the app's list, complete once the first request comes
        self._guards: tuple[re.Pattern[str], list[Guard]] | None = None
        self._seen: dict[str, Guard] = {}  # the guard of each path met, up to _SEEN_PATHS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await refusal(scope, receive, send)

    def _refusal(self, scope: Scope) -> Response | None:
        headers = _headers(scope)
        hosts = self.access.allowed_hosts
        host = headers.get(b"host")
        # A request without Host (HTTP/1.0) comes from no browser, and so from no rebinding.
        if hosts is not None and host is not None and _host_name(_text(host)) not in hosts:
            return _refused(
                421,
                "misdirected_request",
                "this server does not answer to the Host this request names; give one of its "
                "allowed hosts (serve.allowed_hosts)",
            )
        query = scope.get("query_string", b"")
        in_url = _key_in_url(query)
        if in_url:
            # The server's access log reads the request's own scope: it shows the URL so.
            scope["query_string"] = _masked(query)
        needed = self.access.needed(self._guard(scope["path"]))
        if needed is None:
            return None
        if in_url:
            return _refused(
                401,
                "unauthorized",
                "an API key is never taken from the URL (it would be logged): send it in the "
                "header `Authorization: Bearer KEY` or `X-API-Key: KEY`",
                {"WWW-Authenticate": REALM},
            )
        key = _presented_key(headers)
        if key is None:
            return _refused(
                401,
                "unauthorized",
                "this route needs an API key: send it in the header `Authorization: Bearer "
                "KEY` or `X-API-Key: KEY`",
                {"WWW-Authenticate": REALM},
            )
        held = self.access.scopes_of(key)
        if not held:
            return _refused(
                401,
                "unauthorized",
                "the API key is not one this server takes",
                {"WWW-Authenticate": f'{REALM}, error="invalid_token"'},
            )
        if needed not in held:
            return _refused(403, "forbidden", f"this route needs a key of scope {needed.value!r}")
        return None

    def _guard(self, path: str) -> Guard:
        known = self._seen.get(path)
        if known is not None:
            return known
        if self._guards is None:
            self._guards = _compile(self.routes)
        pattern, guards = self._guards
        match = pattern.match(path)
        if match is None or match.lastgroup is None:
            guard: Guard = "open"  # no route serves it: the router answers 404
        else:
            guard = guards[int(match.lastgroup[1:])]
        if len(self._seen) < _SEEN_PATHS:  # bounded: a path is the client's to choose
            self._seen[path] = guard
        return guard


def _compile(routes: Sequence[BaseRoute]) -> tuple[re.Pattern[str], list[Guard]]:
    """One pattern for every route's path, its groups named by position, and their guards."""
    parts: list[str] = []
    guards: list[Guard] = []
    for context in iter_route_contexts(routes):  # with those of included routers
        template = context.path
        if not isinstance(template, str):
            continue
        route = context.original_route
        pieces = re.split(r"(\{[^}]+\})", template)
        pattern = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in pieces)
        if isinstance(route, Mount):
            pattern += "(?:/.*)?"
        parts.append(f"(?P<r{len(guards)}>{pattern})")
        guards.append(ROUTE_ACCESS.get(template, "predict"))
    return re.compile(f"^(?:{'|'.join(parts)})$", re.DOTALL), guards


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers the checks read (the first of each name)."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in (b"host", b"authorization", b"x-api-key") and name not in found:
            found[name] = value
    return found


def _presented_key(headers: dict[bytes, bytes]) -> str | None:
    authorization = headers.get(b"authorization")
    if authorization is not None:
        scheme, _, key = _text(authorization).strip().partition(" ")
        if scheme.lower() == "bearer" and key.strip():
            return key.strip()
    key_header = headers.get(b"x-api-key")
    if key_header is not None and key_header.strip():
        return _text(key_header).strip()
    return None


def _key_in_url(query: bytes) -> bool:
    if not query:
        return False
    for pair in query.split(b"&"):
        name = unquote_plus(_text(pair.split(b"=", 1)[0])).lower()
        if name in _KEY_PARAMETERS:
            return True
    return False


def _masked(query: bytes) -> bytes:
    """`query` with the value of each parameter that may carry a key replaced by `***`."""
    pairs = []
    for pair in query.split(b"&"):
        name = pair.split(b"=", 1)[0]
        if unquote_plus(_text(name)).lower() in _KEY_PARAMETERS:
            pair = name + b"=***"
        pairs.append(pair)
    return b"&".join(pairs)


def _text(value: bytes) -> str:
    return value.decode("latin-1")


def _refused(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return refit.error(Failure(status, code, message, headers=headers))


def document_access(document: dict[str, Any], access: Access) -> None:
    """Write into an OpenAPI `document` what `access` asks: the two ways to send a key, and on
    each guarded operation its security and its 401 and 403; on every operation, the 421 of a
    Host this server does not answer to."""
    guarded = False
    for template, item in document["paths"].items():
        needed = access.needed(ROUTE_ACCESS.get(template, "predict"))
        for method, operation in item.items():
            responses = operation["responses"]
            if needed is not None:
                guarded = True
                operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
                responses["401"] = _documented(401, UNAUTHORIZED_HEADERS, method)
                responses["403"] = _documented(403, {}, method, needed)
            if access.allowed_hosts is not None:
                responses["421"] = _documented(421, {}, method)
    if guarded:
        document.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES


SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key, `Authorization: Bearer KEY` (`refit keys create`).",
    },
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The same API key, as `X-API-Key: KEY`.",
    },
}
UNAUTHORIZED_HEADERS = {
    "WWW-Authenticate": {
        "description": "How to authenticate: `Bearer`.",
        "required": True,
        "schema": {"type": "string"},
    }
}
_WHY = {
    401: "`unauthorized`: no API key, one this server does not take, or one sent in the URL",
    403: "`forbidden`: the API key lacks the scope this route needs",
    421: "`misdirected_request`: the request's Host is not one this server answers to",
}


def _documented(
    status: int, headers: dict[str, Any], method: str, needed: KeyScope | None = None
) -> dict[str, Any]:
    why = _WHY[status] + (f" ({needed.value})" if needed is not None else "")
    response: dict[str, Any] = {"description": why}
    if headers:
        response["headers"] = headers
    if method != "head":
        schema = {"$ref": "#/components/schemas/Error"}
        response["content"] = {"application/json": {"schema": schema}}
    return response
