"""Which runtime answers: ONNX when the version's conversion passed parity, native otherwise."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from refit.registry import PRODUCTION
from refit.serve.app import create_app
from refit.serve.state import ServerState
from refit.services import Services
from refit.train.promotion import promote_version

pytestmark = pytest.mark.anyio
NAME = "breast-cancer"
AddVersion = Callable[..., int]


@asynccontextmanager
async def connect(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://refit") as client:
        yield client


def batch(services: Services) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((services.project.root / "batch.json").read_text())
    return loaded


async def served(client: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get(f"/v1/models/{NAME}")).json()["served"]
    return body


async def test_a_version_with_a_checked_onnx_file_is_served_by_onnx_runtime(
    services: Services, add_version: AddVersion
) -> None:
    v1 = services.registry.get_version(NAME, 1)
    assert v1.onnx is not None and v1.onnx["status"] == "ok", v1.onnx
    native = add_version()  # the same model, without its ONNX file
    state = ServerState.open(services)
    records = batch(services)
    async with connect(create_app(state)) as client:
        assert await state.follower.check()
        info = await served(client)
        assert (info["version"], info["runtime"], info["onnx"]) == (1, "onnx", None)
        by_onnx = (await client.post("/predict/batch", json=records)).json()

        promote_version(services.registry, NAME, native, "test", store=services.store)
        assert await state.follower.check()
        info = await served(client)
        assert (info["version"], info["runtime"]) == (native, "native")
        by_native = (await client.post("/predict/batch", json=records)).json()
    assert by_onnx["predictions"] == by_native["predictions"]
    for a, b in zip(by_onnx["probabilities"], by_native["probabilities"], strict=True):
        assert a.keys() == b.keys()
        assert all(abs(a[k] - b[k]) <= 1e-5 for k in a)


async def test_a_version_whose_onnx_failed_parity_is_served_natively(
    services: Services, add_version: AddVersion
) -> None:
    refused = add_version(onnx={"status": "parity failed: 3 of 64 labels differ"})
    promote_version(services.registry, NAME, refused, "test", store=services.store)
    assert services.registry.alias_version(NAME, PRODUCTION) == refused
    state = ServerState.open(services)
    async with connect(create_app(state)) as client:
        assert await state.follower.check()
        info = await served(client)
        assert info["runtime"] == "native"
        assert info["onnx"] == "parity failed: 3 of 64 labels differ"
        answer = await client.post("/predict/batch", json=batch(services))
        assert answer.status_code == 200 and answer.json()["version"] == refused


async def test_an_unreadable_onnx_file_is_served_natively_but_counted_and_shown_as_a_failure(
    services: Services, add_version: AddVersion, force_production: Callable[[int], None]
) -> None:
    v1 = services.registry.get_version(NAME, 1)
    assert v1.onnx is not None
    broken = add_version(onnx={**v1.onnx, "sha256": "0" * 64})
    force_production(broken)  # promotion refuses it: its ONNX file was damaged after
    state = ServerState.open(services)
    async with connect(create_app(state)) as client:
        assert await state.follower.check()
        described = (await client.get(f"/v1/models/{NAME}")).json()
        info = described["served"]
        assert (info["version"], info["runtime"], info["onnx_failed"]) == (broken, "native", True)
        assert info["onnx"].startswith("its ONNX artifact failed to load (artifact models/")
        assert "is corrupt" in info["onnx"]
        assert str(services.project.root) not in json.dumps(described)
        metrics = (await client.get("/metrics")).text
        assert f'refit_model_load_failures_total{{model="{NAME}"}} 1.0' in metrics
        beat = state.follower.beat()
        assert (beat.version, beat.refused_version) == (broken, broken)
        assert beat.refused_error is not None
        assert beat.refused_error.startswith(f"{NAME} v{broken}'s ONNX artifact failed to load")
