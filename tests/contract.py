"""The served OpenAPI document as a contract on every response a test receives.

`check_response(app, method, path, status, headers, body)` fails the test (AssertionError)
when the app's own document has no such path, no such method at it (unless the answer is the
path's documented 405), no such status for the operation, no such content type, a body that
breaks the documented schema, or lacks a required header. A path the document does not list
must get the documented `UnknownPath` answer; only the routes kept out of the document on
purpose (the docs pages and their assets) are not checked. tests/serve/conftest.py calls it on
every in-process response, so a route cannot answer what its documentation does not say.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.routing import iter_route_contexts
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from starlette.routing import BaseRoute, Match

JSON_TYPE = re.compile(r"^application/(.+\+)?json$")
METHODS = {"get", "head", "post", "put", "delete", "patch", "options"}


@dataclass(frozen=True)
class Answer:
    """What a request got: the status, headers and raw body."""

    method: str
    path: str
    status: int
    headers: Mapping[str, str]
    body: bytes

    def __str__(self) -> str:
        text = self.body[:300].decode("utf-8", "replace")
        return f"{self.method} {self.path} answered {self.status} {text!r}"


class Contract:
    """An OpenAPI 3.1 document, checked to be valid, and the responses it allows."""

    def __init__(self, document: dict[str, Any]) -> None:
        validate(document)
        self.document = document
        self.paths: list[tuple[re.Pattern[str], str]] = []
        for template in document["paths"]:
            parts = re.split(r"(\{[^}]+\})", template)
            pattern = "".join(
                "[^/]+" if part.startswith("{") else re.escape(part) for part in parts
            )
            self.paths.append((re.compile(f"^{pattern}$"), template))

    def template(self, path: str) -> str | None:
        """The documented path template that `path` is an instance of, if any."""
        matched = [template for pattern, template in self.paths if pattern.match(path)]
        assert len(matched) <= 1, f"{path} matches several documented paths: {matched}"
        return matched[0] if matched else None

    def check(self, answer: Answer) -> None:
        """Fail unless the document allows `answer`."""
        template = self.template(answer.path)
        if template is None:
            response = self.document["components"]["responses"]["UnknownPath"]
            assert answer.status == 404, f"{answer}: the path is not documented"
            self._check_response(answer, response, "components.responses.UnknownPath")
            return
        item = self.document["paths"][template]
        operation = item.get(answer.method.lower())
        if operation is None:
            where = f"{template}: no {answer.method} operation"
            assert answer.status == 405, f"{answer}: {where}, so only its 405 is allowed"
            methods = [m for m in item if m in METHODS - {"head"}]  # HEAD is GET's twin
            for method in methods:
                assert "405" in item[method]["responses"], f"{template} {method}: no 405"
            response = item[methods[0]]["responses"]["405"]
            self._check_response(answer, response, f"{template} {methods[0]} 405")
            allowed = sorted(m.strip() for m in answer.headers.get("allow", "").split(","))
            documented = sorted(m.upper() for m in item if m in METHODS)
            assert allowed == documented, f"{answer}: Allow {allowed}, documented {documented}"
            return
        responses = operation["responses"]
        status = str(answer.status)
        for key in (status, f"{status[0]}XX", "default"):
            if key in responses:
                where = f"{template} {answer.method.lower()} {key}"
                self._check_response(answer, responses[key], where)
                return
        documented = ", ".join(responses)
        raise AssertionError(f"{answer}: {template} documents only {documented}")

    def _check_response(self, answer: Answer, response: dict[str, Any], where: str) -> None:
        response = self._resolve(response)
        for name, header in response.get("headers", {}).items():
            if self._resolve(header).get("required"):
                assert name.lower() in answer.headers, f"{answer}: {where} requires {name}"
        content: dict[str, Any] = response.get("content", {})
        if not content or answer.method == "HEAD":
            assert answer.body == b"", f"{answer}: {where} documents no body"
            return
        given = answer.headers.get("content-type", "")
        essence = given.split(";")[0].strip().lower()
        media = [key for key in content if key.split(";")[0].strip().lower() == essence]
        assert media, f"{answer}: {where} documents {', '.join(content)}, not {given!r}"
        schema = content[media[0]].get("schema", {})
        text = answer.body.decode("utf-8")
        instance: Any = text
        if JSON_TYPE.match(essence):
            try:
                instance = json.loads(text)
            except ValueError:
                instance = text  # not JSON: only a documented string schema takes it
        validator = OAS31Validator({**schema, "components": self.document.get("components", {})})
        problems = [
            f"{'/'.join(map(str, error.absolute_path)) or 'the body'}: {error.message}"
            for error in validator.iter_errors(instance)
        ]
        assert not problems, f"{answer}: not the body {where} documents: {problems[:5]}"

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        if ref is None:
            return node
        target: Any = self.document
        for part in ref.removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        resolved: dict[str, Any] = target
        return resolved


_contracts: dict[str, Contract] = {}


def contract_of(document: dict[str, Any]) -> Contract:
    """The contract of `document`, validated once per distinct document."""
    key = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
    if key not in _contracts:
        _contracts[key] = Contract(document)
    return _contracts[key]


def undocumented_route(routes: list[BaseRoute], method: str, path: str) -> bool:
    """Whether `path` is served by a route kept out of the document (the docs pages)."""
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for context in iter_route_contexts(routes):
        route = context.original_route  # refit's routers have no prefix
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return not getattr(route, "include_in_schema", False)
    return False


def check_response(app: Any, answer: Answer) -> None:
    """Fail unless the OpenAPI document of `app` allows `answer` (see the module docstring)."""
    if undocumented_route(app.routes, answer.method, answer.path):
        return
    contract_of(app.openapi()).check(answer)
