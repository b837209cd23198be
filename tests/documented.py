"""Every response a real refit server gives the end-to-end and reliability tests must be one
its own OpenAPI document allows (tests/contract.py), as in-process responses are
(tests/serve/conftest.py). Their conftest.py files import `documented_responses`.

The document is fetched from the server that answered (once per address, again when a server
on that address changed what it serves); the docs pages and their assets are not documented on
purpose and are not checked. A response that breaks the contract is recorded, since it may be
received in a client thread that swallows errors, and fails the test at its end.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from contract import Answer, Contract, contract_of

UNDOCUMENTED = ("/docs", "/redoc", "/openapi.json")


class _Contracts:
    def __init__(self) -> None:
        self.by_address: dict[str, Contract] = {}
        self.broken: list[str] = []

    def fetch(self, address: str) -> Contract:
        with httpx.Client(trust_env=False, timeout=10.0) as plain:
            document = plain.get(f"{address}/openapi.json").raise_for_status().json()
        self.by_address[address] = contract_of(document)
        return self.by_address[address]

    def check(self, address: str, answer: Answer) -> None:
        if answer.path.startswith(UNDOCUMENTED):
            return
        try:
            contract = self.by_address.get(address) or self.fetch(address)
            try:
                contract.check(answer)
            except AssertionError:
                self.fetch(address).check(answer)  # the server may serve another model now
        except (AssertionError, httpx.HTTPError) as exc:
            self.broken.append(f"{type(exc).__name__}: {exc}")


@pytest.fixture(autouse=True)
def documented_responses(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Check every response of every httpx client in the test against the served document."""
    contracts = _Contracts()
    send = httpx.HTTPTransport.handle_request

    def checked(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        response = send(self, request)
        if request.url.host not in ("127.0.0.1", "localhost"):
            return response
        body = response.read()
        url = request.url
        answer = Answer(request.method, url.path, response.status_code, response.headers, body)
        contracts.check(f"{url.scheme}://{url.host}:{url.port}", answer)
        return response

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", checked)
    yield
    assert not contracts.broken, contracts.broken[:5]
