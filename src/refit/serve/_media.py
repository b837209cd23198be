"""The content types the prediction routes read, one rule for every protocol.

    mime = content_type(request.headers.get("content-type"), (JSON_TYPE,), "/predict")

A route reads only the types it documents: a browser's cross-site form can send
`application/x-www-form-urlencoded`, `multipart/form-data` or `text/plain` without asking
first, so none of them reaches a model. A charset other than UTF-8 (the only one JSON and
refit's CSV take) and any other parameter are refused, and so is a body with no Content-Type.
Each refusal is an `UnsupportedMediaType` (415) saying what to send.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request

from refit.errors import RequestError
from refit.serve._numbers import shown

JSON_TYPE = "application/json"


class UnsupportedMediaType(RequestError):
    """A content type a route does not read (415)."""

    status = 415
    code = "unsupported_media_type"


def _either(types: Sequence[str]) -> str:
    return types[0] if len(types) == 1 else f"{', '.join(types[:-1])} or {types[-1]}"


def content_type(
    header: str | None, accepted: Sequence[str], route: str, hint: str = "send it without them"
) -> str:
    """The MIME type of a Content-Type `header`, in lower case, if `accepted` lists it; any
    parameter but `charset` is refused, with `hint` saying what to do instead."""
    send = f"{route} reads {_either(accepted)}, in UTF-8 (charset=utf-8, or none)"
    if not header or not header.strip():
        raise UnsupportedMediaType(f"the request has no Content-Type; {send}")
    mime, *parameters = (part.strip() for part in header.split(";"))
    mime = mime.lower()
    if mime not in accepted:
        raise UnsupportedMediaType(f"the Content-Type is {shown(header)}; {send}")
    values = {
        key.strip().lower(): value.strip().strip('"')
        for key, _, value in (p.partition("=") for p in parameters if p)
    }
    charset = values.pop("charset", "utf-8")
    if charset.lower() != "utf-8":
        raise UnsupportedMediaType(f"the charset is {shown(charset)}; {send}")
    if values:
        named = ", ".join(shown(name) for name in sorted(values)[:10])
        raise UnsupportedMediaType(f"unrecognized content type parameters: {named}. {send}; {hint}")
    return mime


def route_path(request: Request) -> str:
    """The path template of the route `request` reached (`/v1/models/{name}/predict`): what a
    message names, rather than the client's own path."""
    route = request.scope.get("route")
    return str(route.path) if route is not None else request.url.path
