"""API keys and allowed hosts in process: every guarded route of the document refuses a
request without a key, the docs and metrics follow their settings, and the constant-time
comparison finds a key wherever it is among many."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from refit.apikeys import Scope, check_exposure, hash_key, key_line, new_key, parse_key_line
from refit.errors import SpecError
from refit.serve.app import create_app
from refit.serve.auth import LOOPBACK_NAMES, ROUTE_ACCESS, Access
from refit.serve.state import ServerState
from refit.services import Services
from refit.spec import ServeSpec

pytestmark = pytest.mark.anyio

PREDICT, ADMIN = new_key(), new_key()
KEYS = (
    parse_key_line(key_line(Scope.PREDICT, "client", PREDICT)),
    parse_key_line(key_line(Scope.ADMIN, "ops", ADMIN)),
)


@pytest.fixture
async def served(services: Services) -> ServerState:
    state = ServerState.open(services)
    assert await state.follower.check()
    return state


async def answers(state: ServerState, access: Access, base_url: str = "http://127.0.0.1:8000"):
    transport = httpx.ASGITransport(create_app(state, access=access))
    return httpx.AsyncClient(transport=transport, base_url=base_url)


def _path(template: str) -> str:
    return template.replace("{name}", "breast-cancer").replace("{version}", "1")


async def test_every_guarded_route_of_the_document_needs_a_key(served: ServerState) -> None:
    access = Access(keys=KEYS)
    async with await answers(served, access) as client:
        document = (await client.get("/openapi.json")).json()
        guarded = 0
        for template, item in document["paths"].items():
            open_route = ROUTE_ACCESS.get(template) in ("open", "metrics")
            for method, operation in item.items():
                response = await client.request(method.upper(), _path(template))
                if open_route:
                    assert response.status_code not in (401, 403), (method, template)
                    assert "security" not in operation
                    continue
                guarded += 1
                assert response.status_code == 401, (method, template, response.text)
                assert response.headers["www-authenticate"] == 'Bearer realm="refit"'
                if method != "head":
                    assert response.json()["error"]["code"] == "unauthorized"
                keyed = await client.request(
                    method.upper(), _path(template), headers={"X-API-Key": PREDICT}
                )
                assert keyed.status_code not in (401, 403), (method, template)
        assert guarded >= 20


@pytest.mark.parametrize(
    ("docs", "key", "status"),
    [("open", None, 200), ("predict", None, 401), ("admin", PREDICT, 403), ("admin", ADMIN, 200)],
)
async def test_docs_and_metrics_follow_their_settings(
    served: ServerState, docs: str, key: str | None, status: int
) -> None:
    access = Access.from_spec(
        ServeSpec(
            keys=[key_line(Scope.PREDICT, "c", PREDICT), key_line(Scope.ADMIN, "o", ADMIN)],
            docs_access=docs,
            metrics_access=docs,
        ),  # type: ignore[arg-type]
        {},
    )
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    async with await answers(served, access) as client:
        for path in ("/openapi.json", "/docs", "/redoc", "/docs/static/swagger-ui.css", "/metrics"):
            assert (await client.get(path, headers=headers)).status_code == status, path


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:8000", 200),
        ("localhost", 200),
        ("LOCALHOST:1234", 200),
        ("[::1]:8000", 200),
        ("evil.example", 421),
        ("evil.example:8000", 421),
        ("127.0.0.1.evil.example", 421),
    ],
)
async def test_a_loopback_server_answers_only_to_loopback_names(
    served: ServerState, host: str, status: int
) -> None:
    access = Access(allowed_hosts=LOOPBACK_NAMES)
    async with await answers(served, access) as client:
        response = await client.get("/health/live", headers={"Host": host})
    assert response.status_code == status
    if status == 421:
        assert response.json()["error"]["code"] == "misdirected_request"
        assert "evil" not in response.text


def test_the_allowed_hosts_follow_the_address_and_the_setting() -> None:
    assert Access.from_spec(ServeSpec(host="127.0.0.1"), {}).allowed_hosts == LOOPBACK_NAMES
    assert Access.from_spec(ServeSpec(host="::1"), {}).allowed_hosts == LOOPBACK_NAMES
    assert Access.from_spec(ServeSpec(host="0.0.0.0", auth="none"), {}).allowed_hosts is None
    given = ServeSpec(host="127.0.0.1", allowed_hosts=["refit.internal:8000", "localhost"])
    assert Access.from_spec(given, {}).allowed_hosts == {"refit.internal", "localhost"}
    assert Access.from_spec(ServeSpec(allowed_hosts=["*"]), {}).allowed_hosts is None


def test_a_key_is_found_wherever_it_is_among_many() -> None:
    keys = [new_key() for _ in range(50)]
    lines = [key_line(Scope.PREDICT, f"k{i}", key) for i, key in enumerate(keys)]
    access = Access(keys=tuple(parse_key_line(line) for line in lines))
    for key in (keys[0], keys[25], keys[-1]):
        assert access.scopes_of(key) == {Scope.PREDICT}
    assert access.scopes_of(new_key()) == frozenset()
    assert access.scopes_of("") == frozenset()
    assert hash_key(keys[0]).hex() in lines[0]


@pytest.mark.parametrize(
    ("serve", "environ", "refused"),
    [
        (ServeSpec(host="0.0.0.0"), {}, True),
        (ServeSpec(host="10.1.2.3"), {}, True),
        (ServeSpec(host="127.0.0.1"), {}, False),
        (ServeSpec(host="localhost"), {}, False),
        (ServeSpec(host="0.0.0.0", auth="none"), {}, False),
        (ServeSpec(host="0.0.0.0", keys=[key_line(Scope.PREDICT, "c", PREDICT)]), {}, False),
        (
            ServeSpec(host="0.0.0.0"),
            {"REFIT_API_KEY_HASHES": key_line(Scope.PREDICT, "c", PREDICT)},
            False,
        ),
    ],
)
def test_without_keys_a_server_listens_on_loopback_only(
    serve: ServeSpec, environ: dict[str, Any], refused: bool
) -> None:
    if refused:
        with pytest.raises(SpecError, match=r"serve\.auth: none") as raised:
            check_exposure(serve, environ)
        assert "refit keys create" in raised.value.message
        assert "127.0.0.1" in raised.value.message
    else:
        check_exposure(serve, environ)


def test_bad_hash_lines_are_told_without_their_value() -> None:
    with pytest.raises(SpecError, match="REFIT_API_KEY_HASHES, line 2") as raised:
        Access.from_spec(
            ServeSpec(), {"REFIT_API_KEY_HASHES": f"{key_line(Scope.ADMIN, 'o', ADMIN)},{PREDICT}"}
        )
    assert PREDICT not in raised.value.message
    with pytest.raises(SpecError, match="auth is none"):
        Access.from_spec(
            ServeSpec(auth="none"), {"REFIT_API_KEY_HASHES": key_line(Scope.ADMIN, "o", ADMIN)}
        )
