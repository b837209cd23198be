"""Fixtures of the server's tests: trained example projects, and more versions made cheaply.

Training runs once per session per example; each test gets a fresh copy of the project.
"""

from __future__ import annotations

import functools
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from contract import Answer, check_response
from refit.data.ingest import run_ingest
from refit.examples import create_project
from refit.project import load_project
from refit.registry import ModelVersionRow
from refit.serve import follower
from refit.services import Services, open_services
from refit.train.promotion import promote_version
from refit.train.run import run_training
from serving import move_production

UNREACHABLE_GATE = {"REFIT_GATE__MIN": "2"}
"""No model reaches a score of 2: training registers v1 and leaves production unset."""


def trained_once(root: Path, example: str, environ: dict[str, str], promoted: bool) -> Path:
    create_project(root, example)
    with open_services(load_project(root, environ)) as services:
        ingested = run_ingest(services.project, services.registry, services.store)
        assert ingested.status == "accepted", ingested.message
        assert run_training(services).promoted is promoted
    return root


@contextmanager
def opened_copy(template: Path, root: Path) -> Iterator[Services]:
    shutil.copytree(template, root)
    with open_services(load_project(root)) as services:
        yield services


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def documented_responses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every response an app gives in process must be one its own OpenAPI document allows:
    its status for that path and method, its content type, its body's schema, its required
    headers (see tests/contract.py). One that is not fails the test that received it."""
    send = httpx.ASGITransport.handle_async_request

    async def checked(self: httpx.ASGITransport, request: httpx.Request) -> httpx.Response:
        response = await send(self, request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        body = b"".join([part async for part in response.stream])
        answer = Answer(
            request.method, request.url.path, response.status_code, response.headers, body
        )
        check_response(self.app, answer)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=httpx.ByteStream(body),
            extensions=response.extensions,
        )

    monkeypatch.setattr(httpx.ASGITransport, "handle_async_request", checked)


@pytest.fixture(autouse=True)
def quick_swaps(monkeypatch: pytest.MonkeyPatch) -> None:
    """No full garbage collection after each swap: it frees nothing a test looks at, and it
    takes ~0.2 s over the test process's heap, most of every test's time (the one test of it
    calls the real one)."""
    monkeypatch.setattr(follower, "_settle_heap", lambda: None)


@pytest.fixture(scope="session")
def classifier_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A breast-cancer project (30 float inputs, classes benign/malignant) with v1 trained
    and nothing in production."""
    root = tmp_path_factory.mktemp("template") / "p"
    return trained_once(root, "breast-cancer", UNREACHABLE_GATE, promoted=False)


@pytest.fixture(scope="session")
def regressor_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A diabetes project (floats and the category `sex`; a regression) whose v1 holds
    production."""
    return trained_once(tmp_path_factory.mktemp("template") / "p", "diabetes", {}, promoted=True)


@pytest.fixture
def unpromoted(classifier_template: Path, tmp_path: Path) -> Iterator[Services]:
    """Open services of a fresh breast-cancer project: v1 exists, nothing holds production."""
    with opened_copy(classifier_template, tmp_path / "p") as opened:
        yield opened


@pytest.fixture
def services(unpromoted: Services) -> Services:
    """Open services of a fresh breast-cancer project whose v1 holds production."""
    promote_version(
        unpromoted.registry, unpromoted.project.spec.name, 1, "test", store=unpromoted.store
    )
    return unpromoted


@pytest.fixture
def regressor(regressor_template: Path, tmp_path: Path) -> Iterator[Services]:
    """Open services of a fresh diabetes project whose v1 holds production."""
    with opened_copy(regressor_template, tmp_path / "p") as opened:
        yield opened


@pytest.fixture
def add_version(unpromoted: Services) -> Callable[..., int]:
    """`add_version(**columns)`: register a copy of v1 with some columns changed (e.g.
    `signature=`, `artifact_uri=`), or `artifact=b"..."` to store and point at new bytes.
    Returns the new version number. The copy shares v1's artifact unless told otherwise, and
    is served natively unless given `onnx=` (v1's ONNX file is not a copy of new bytes)."""
    registry, store = unpromoted.registry, unpromoted.store
    name = unpromoted.project.spec.name

    def add(artifact: bytes | None = None, **changes: Any) -> int:
        first = registry.get_version(name, 1)
        columns = {c.key: getattr(first, c.key) for c in ModelVersionRow.__table__.columns}
        for generated in ("id", "version", "run_id", "created_at"):
            columns.pop(generated)
        columns["onnx"] = None
        if artifact is not None:
            ref = store.put(artifact, kind="models", suffix=".joblib")
            columns.update(artifact_uri=ref.uri, artifact_sha256=ref.sha256, artifact_size=ref.size)
        columns.update(changes)
        run = registry.start_run(uuid.uuid4().hex, name, first.snapshot_id, "test")
        return registry.register_version(run.id, ModelVersionRow(**columns)).version

    return add


@pytest.fixture
def force_production(unpromoted: Services) -> Callable[[int], None]:
    """`force_production(version)`: move production to `version` with no artifact check (see
    `serving.move_production`)."""
    return functools.partial(move_production, unpromoted.registry, unpromoted.project.spec.name)
