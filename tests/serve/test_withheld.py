"""Rows whose answer a version's postprocess withheld: a documented refusal on every protocol
(null on refit's routes and /invocations, a `withheld` output on V2), never counted in
/metrics, and logged as withheld."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from refit import flavors
from refit.prediction_logs import PREDICTION, WITHHELD, read_logs
from refit.predictions import Columns, Fetch, Predictions, Predictor, Ready
from refit.registry.monitoring import PREDICTIONS, list_logs
from refit.registry.tables import ModelVersionRow
from refit.serve.app import create_app
from refit.serve.state import ServerState
from refit.services import Services
from refit.signature import Signature
from refit.train.promotion import promote_version
from unsupervised import CLUSTERING, NAME, features, kmeans, register

pytestmark = pytest.mark.anyio
LIMIT = 15.0
"""Rows whose mean radius is above this are withheld."""


class Withholding:
    """A predictor whose answers for rows of a mean radius above `LIMIT` are withheld, as a
    version's `model.postprocess` withholds them (answering None)."""

    withholds = True

    def __init__(self, inner: Predictor) -> None:
        self.inner = inner
        self.quick = inner.quick

    def predict(self, columns: Columns) -> Predictions:
        got = self.inner.predict(columns)
        withheld = np.array(columns[0], dtype=float) > LIMIT  # mean_radius: the first input
        return Predictions(got.labels, got.probabilities, got.classes, got.scores, withheld)


@pytest.fixture(autouse=True)
def withholding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every version refit trained is served behind `Withholding`."""
    flavor = flavors.FLAVORS["sklearn"]
    serve = flavor.serve

    def wrapped(
        row: ModelVersionRow, signature: Signature, fetch: Fetch, trusted: Collection[str]
    ) -> Ready:
        ready = serve(row, signature, fetch, trusted)
        return dataclasses.replace(ready, predictor=Withholding(ready.predictor))

    monkeypatch.setitem(flavors.FLAVORS, "sklearn", dataclasses.replace(flavor, serve=wrapped))


@asynccontextmanager
async def connected(services: Services) -> AsyncIterator[tuple[httpx.AsyncClient, ServerState]]:
    state = ServerState.open(services)
    assert await state.follower.check()
    transport = httpx.ASGITransport(create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://refit") as client:
        yield client, state
    await state.batcher.close()


def rows(services: Services) -> tuple[list[dict[str, float]], list[int]]:
    """Ten records, and which of them are withheld (some, not all)."""
    records = list(features(services).iloc[:10].to_dict("records"))
    withheld = [i for i, r in enumerate(records) if r["mean_radius"] > LIMIT]
    assert 0 < len(withheld) < len(records)
    return records, withheld


async def test_refit_routes_answer_a_withheld_record_null_and_say_so(services: Services) -> None:
    records, withheld = rows(services)
    kept = next(i for i in range(len(records)) if i not in withheld)
    async with connected(services) as (client, _):
        refused = (await client.post("/predict", json=records[withheld[0]])).json()
        answered = (await client.post("/predict", json=records[kept])).json()
        batch = (await client.post("/predict/batch", json={"records": records})).json()
    assert set(refused) == {"model", "version", "id", "prediction", "withheld"}
    assert (refused["prediction"], refused["withheld"]) == (None, True)
    assert "withheld" not in answered and answered["prediction"] in ("benign", "malignant")
    assert set(answered["probabilities"]) == {"benign", "malignant"}
    assert batch["withheld"] == withheld
    for i, (label, proba) in enumerate(
        zip(batch["predictions"], batch["probabilities"], strict=True)
    ):
        assert (label is None and proba is None) == (i in withheld)


async def test_v2_answers_a_withheld_output_and_zeros_in_the_others(services: Services) -> None:
    records, withheld = rows(services)
    names = list(records[0])
    tensor = {
        "name": "x",
        "shape": [len(records), len(names)],
        "datatype": "FP64",
        "data": [[r[n] for n in names] for r in records],
    }
    async with connected(services) as (client, _):
        metadata = (await client.get(f"/v2/models/{NAME}")).json()
        full = (await client.post(f"/v2/models/{NAME}/infer", json={"inputs": [tensor]})).json()
        asked = {"inputs": [tensor], "outputs": [{"name": "predict"}]}
        only = (await client.post(f"/v2/models/{NAME}/infer", json=asked)).json()
    assert [o["name"] for o in metadata["outputs"]] == ["predict", "predict_proba", "withheld"]
    outputs = {o["name"]: o for o in full["outputs"]}
    flags = outputs["withheld"]
    assert (flags["datatype"], flags["shape"]) == ("BOOL", [len(records)])
    assert flags["data"] == [i in withheld for i in range(len(records))]
    labels, proba = outputs["predict"]["data"], outputs["predict_proba"]["data"]
    for i in range(len(records)):
        assert (labels[i] == "") == (i in withheld)
        assert (proba[2 * i : 2 * i + 2] == [0.0, 0.0]) == (i in withheld)
    # Asked for `predict` alone, a withheld row still says so: its "" means nothing.
    assert [o["name"] for o in only["outputs"]] == ["predict", "withheld"]


async def test_invocations_answer_null_for_a_withheld_row(services: Services) -> None:
    records, withheld = rows(services)
    async with connected(services) as (client, _):
        body = (await client.post("/invocations", json={"dataframe_records": records})).json()
    assert [i for i, p in enumerate(body["predictions"]) if p is None] == withheld


async def test_a_clusterings_withheld_rows_have_no_distances_on_any_protocol(
    unpromoted: Services,
) -> None:
    version = register(unpromoted, kmeans(features(unpromoted)), CLUSTERING, onnx=True)
    promote_version(unpromoted.registry, NAME, version, "test", store=unpromoted.store)
    records, withheld = rows(unpromoted)
    async with connected(unpromoted) as (client, _):
        batch = (await client.post("/predict/batch", json={"records": records})).json()
        one = (await client.post("/predict", json=records[withheld[0]])).json()
        mlflow = (await client.post("/invocations", json={"dataframe_records": records})).json()
    assert batch["withheld"] == withheld
    for i, (label, distances) in enumerate(
        zip(batch["predictions"], batch["distances"], strict=True)
    ):
        assert (label is None) == (distances is None) == (i in withheld)
    assert (one["prediction"], one["withheld"], "distances" in one) == (None, True, False)
    for i, row in enumerate(mlflow["predictions"]):
        assert (row is None) == (i in withheld)
        assert row is None or set(row) == {"prediction", "distances"}


def counted(text: str) -> dict[str, float]:
    return {
        s.labels["class"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "refit_predictions_total"
    }


async def test_withheld_rows_are_not_counted_and_are_logged_as_withheld(
    services: Services,
) -> None:
    records, withheld = rows(services)
    async with connected(services) as (client, state):
        batch = (await client.post("/predict/batch", json={"records": records})).json()
        text = (await client.get("/metrics")).text
        assert state.writer is not None
        state.writer.close()  # never started in process: writes what the buffers hold
    labels = [label for label in batch["predictions"] if label is not None]
    assert counted(text) == {c: float(labels.count(c)) for c in ("benign", "malignant")}
    logs = list_logs(services.registry, NAME, PREDICTIONS)
    logged = read_logs(services.store, logs)
    assert logged[WITHHELD].tolist() == [i in withheld for i in range(len(records))]
    assert logged[PREDICTION].isna().tolist() == logged[WITHHELD].tolist()
    assert set(logged[PREDICTION].dropna()) <= {'"benign"', '"malignant"'}
