"""A clustering's and an anomaly detector's answers on every protocol: cluster ids with their
distances, flags with their scores, the same natively and through ONNX Runtime; what V2's model
metadata lists; what /metrics counts of them, and what the prediction log keeps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from refit.prediction_logs import (
    DISTANCES,
    PREDICTION,
    SCORE,
    VERSION,
    from_label_text,
    read_logs,
)
from refit.registry.monitoring import PREDICTIONS, list_logs
from refit.serve.app import create_app
from refit.serve.state import ServerState
from refit.services import Services
from refit.signature import Output
from refit.train.promotion import promote_version
from unsupervised import ANOMALY, CLUSTERING, NAME, features, isolation_forest, kmeans, register

pytestmark = pytest.mark.anyio

Answers = dict[str, tuple[list[Any], np.ndarray[Any, Any]]]
"""Per protocol: the labels, and the scores ([N, 3] distances or [N] scores)."""


@asynccontextmanager
async def serving(services: Services, version: int) -> AsyncIterator[httpx.AsyncClient]:
    promote_version(services.registry, NAME, version, "test", store=services.store)
    state = ServerState.open(services)
    assert await state.follower.check()
    transport = httpx.ASGITransport(create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://refit") as client:
        yield client
    await state.batcher.close()


def records(services: Services, rows: slice) -> list[dict[str, float]]:
    return list(features(services).iloc[rows].to_dict("records"))


async def answers(client: httpx.AsyncClient, batch: list[dict[str, float]]) -> Answers:
    """What each protocol answers for `batch`, read into labels and scores."""
    field, many = (
        ("distances", "distances") if "0" in await _classes(client) else ("score", "scores")
    )
    got: Answers = {}
    one = (await client.post("/predict", json=batch[0])).json()
    got["record"] = [one["prediction"]], _scores([one[field]])
    body = (await client.post("/predict/batch", json={"records": batch})).json()
    got["batch"] = body["predictions"], _scores(body[many])
    names = list(batch[0])
    tensor = {"name": "x", "shape": [len(batch), len(names)], "datatype": "FP64"}
    tensor["data"] = [[row[n] for n in names] for row in batch]
    v2 = await client.post(f"/v2/models/{NAME}/infer", json={"inputs": [tensor]})
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    assert list(outputs) == ["predict", "distances" if field == "distances" else "score"]
    second = outputs["distances" if field == "distances" else "score"]
    assert second["shape"] == ([len(batch), 3] if field == "distances" else [len(batch)])
    got["v2"] = outputs["predict"]["data"], np.asarray(second["data"]).reshape(second["shape"])
    split = {"dataframe_split": {"columns": names, "data": tensor["data"]}}
    mlflow = (await client.post("/invocations", json=split)).json()["predictions"]
    assert all(set(row) == {"prediction", field} for row in mlflow)
    got["mlflow"] = [row["prediction"] for row in mlflow], _scores([row[field] for row in mlflow])
    return got


async def _classes(client: httpx.AsyncClient) -> list[str]:
    served = (await client.get(f"/v1/models/{NAME}")).json()["served"]
    return [str(c) for c in served["signature"]["output"]["classes"] or []]


def _scores(values: list[Any]) -> np.ndarray[Any, Any]:
    if values and isinstance(values[0], dict):
        assert all(list(v) == ["0", "1", "2"] for v in values)
        return np.array([[v[k] for k in ("0", "1", "2")] for v in values])
    return np.asarray(values, dtype=float)


async def both_runtimes(services: Services, model: Any, output: Output) -> list[Answers]:
    """The answers of `model` served natively, then through ONNX Runtime."""
    got = []
    batch = records(services, slice(0, 40))
    for onnx in (False, True):
        version = register(services, model, output, onnx=onnx)
        async with serving(services, version) as client:
            served = (await client.get(f"/v1/models/{NAME}")).json()["served"]
            assert served["runtime"] == ("onnx" if onnx else "native"), served
            got.append(await answers(client, batch))
    return got


def agree(native: Answers, onnx: Answers) -> None:
    for protocol in native:
        labels, scores = native[protocol]
        assert onnx[protocol][0] == labels, protocol
        assert np.allclose(onnx[protocol][1], scores, rtol=1e-4, atol=1e-5), protocol


async def test_a_kmeans_pipeline_answers_cluster_ids_and_distances_alike_on_both_runtimes(
    unpromoted: Services,
) -> None:
    X = features(unpromoted)
    model = kmeans(X)
    native, onnx = await both_runtimes(unpromoted, model, CLUSTERING)
    rows = X.iloc[:40]
    for protocol, (labels, distances) in native.items():
        count = len(labels)
        assert labels == model.predict(rows.iloc[:count]).tolist(), protocol
        assert all(type(label) is int for label in labels)
        assert np.allclose(distances, model.transform(rows.iloc[:count]), atol=1e-6), protocol
    agree(native, onnx)
    assert len(set(native["batch"][0])) > 1  # more than one cluster answered


async def test_an_isolation_forest_answers_flags_and_scores_alike_on_both_runtimes(
    unpromoted: Services,
) -> None:
    X = features(unpromoted)
    model = isolation_forest(X)
    native, onnx = await both_runtimes(unpromoted, model, ANOMALY)
    rows = X.iloc[:40]
    for protocol, (flags, scores) in native.items():
        count = len(flags)
        assert np.allclose(scores, -model.decision_function(rows.iloc[:count])), protocol
        assert flags == (model.predict(rows.iloc[:count]) == -1).tolist(), protocol
        assert all(type(flag) is bool for flag in flags)
    agree(native, onnx)
    assert set(native["batch"][0]) == {True, False}  # some rows flagged, some not


async def test_v2_metadata_lists_the_outputs_of_each_task(unpromoted: Services) -> None:
    X = features(unpromoted)
    cases = [
        (kmeans(X), CLUSTERING, [("predict", "INT64", [-1]), ("distances", "FP64", [-1, 3])]),
        (isolation_forest(X), ANOMALY, [("predict", "BOOL", [-1]), ("score", "FP64", [-1])]),
    ]
    for model, output, expected in cases:
        version = register(unpromoted, model, output, onnx=False)
        async with serving(unpromoted, version) as client:
            metadata = (await client.get(f"/v2/models/{NAME}")).json()
            asked = {"inputs": _one_row(X), "outputs": [{"name": expected[1][0]}]}
            only = (await client.post(f"/v2/models/{NAME}/infer", json=asked)).json()
        got = [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]]
        assert got == expected
        assert [o["name"] for o in only["outputs"]] == [expected[1][0]]


def _one_row(X: Any) -> list[dict[str, Any]]:
    row = X.iloc[0].tolist()
    return [{"name": "x", "shape": [1, len(row)], "datatype": "FP64", "data": row}]


def samples(text: str, name: str) -> dict[str, float]:
    return {
        s.labels.get("class", ""): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and s.labels.get("model") == NAME
    }


async def test_metrics_count_cluster_ids_and_flags_and_observe_scores(
    unpromoted: Services,
) -> None:
    X = features(unpromoted)
    batch = records(unpromoted, slice(0, 50))
    clusters = register(unpromoted, kmeans(X), CLUSTERING, onnx=True)
    async with serving(unpromoted, clusters) as client:
        labels = (await client.post("/predict/batch", json={"records": batch})).json()
        text = (await client.get("/metrics")).text
    ids = labels["predictions"]
    counted = samples(text, "refit_predictions_total")
    assert counted == {str(k): float(ids.count(k)) for k in (0, 1, 2)}

    detector = isolation_forest(X)
    flagged = register(unpromoted, detector, ANOMALY, onnx=True)
    async with serving(unpromoted, flagged) as client:
        body = (await client.post("/predict/batch", json={"records": batch})).json()
        one = (await client.post("/predict", json=batch[0])).json()
        text = (await client.get("/metrics")).text
    flags = [*body["predictions"], one["prediction"]]
    counted = samples(text, "refit_predictions_total")
    assert counted == {"True": float(flags.count(True)), "False": float(flags.count(False))}
    assert samples(text, "refit_predicted_value_count") == {"": float(len(flags))}
    scores = [*body["scores"], one["score"]]
    above = sum(score > 0.01 for score in scores)  # 0.01: a bucket's bound
    buckets = {
        s.labels["le"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "refit_predicted_value_bucket"
    }
    assert buckets["+Inf"] - buckets["0.01"] == above


async def test_the_prediction_log_keeps_cluster_ids_distances_flags_and_scores(
    unpromoted: Services,
) -> None:
    X = features(unpromoted)
    batch = records(unpromoted, slice(0, 12))
    answered = {}
    for model, output in ((kmeans(X), CLUSTERING), (isolation_forest(X), ANOMALY)):
        version = register(unpromoted, model, output, onnx=True)
        promote_version(unpromoted.registry, NAME, version, "test", store=unpromoted.store)
        state = ServerState.open(unpromoted)
        assert await state.follower.check()
        transport = httpx.ASGITransport(create_app(state))
        async with httpx.AsyncClient(transport=transport, base_url="http://refit") as client:
            answer = await client.post("/predict/batch", json={"records": batch})
            answered[version] = answer.json()
        await state.batcher.close()
        assert state.writer is not None
        state.writer.close()  # never started in process: writes what the buffers hold
    # Both versions' files read as one frame: each lacks the other's column.
    logged = read_logs(unpromoted.store, list_logs(unpromoted.registry, NAME, PREDICTIONS))
    clusters, flags = sorted(answered)
    mine = logged[logged[VERSION] == clusters]
    assert [from_label_text(t) for t in mine[PREDICTION]] == answered[clusters]["predictions"]
    distances = [[d[k] for k in ("0", "1", "2")] for d in answered[clusters]["distances"]]
    assert [list(d) for d in mine[DISTANCES]] == distances
    assert mine[SCORE].isna().all()
    theirs = logged[logged[VERSION] == flags]
    assert [from_label_text(t) for t in theirs[PREDICTION]] == answered[flags]["predictions"]
    assert theirs[PREDICTION].isin(["true", "false"]).all()
    assert theirs[SCORE].tolist() == answered[flags]["scores"]
    assert theirs[DISTANCES].isna().all()
