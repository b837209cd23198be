"""One client's request never affects another's, in a real `refit serve`.

A model that fails on some requests' rows fails only those requests; a request of the
largest batch a server takes never holds up the other connections or the health probes.
"""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import joblib
import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from refit.examples import example_rows
from refit.project import load_project
from refit.registry import ModelVersionRow
from refit.services import open_services
from refit.train.promotion import promote_version
from serving import NAME, START_WITHIN, example_records, make_project, serving

pytestmark = pytest.mark.slow

TARGET = "diagnosis"
MAX_BATCH_ROWS = 10_000  # serve.max_batch_rows, the largest request a server takes


def register(root: Path, model_file: Path) -> int:
    """`refit models register FILE` as a user runs it, then `production` moved to it."""
    done = subprocess.run(
        [sys.executable, "-m", "refit", "models", "register", str(model_file), "-p", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with open_services(load_project(root)) as services:
        version = max(v.version for v in services.registry.list_versions(NAME))
        if services.registry.alias_version(NAME) != version:  # the gate may have done it
            promote_version(services.registry, NAME, version, "test", store=services.store)
    return version


def unprobed(root: Path, version: int, runtime: str) -> int:
    """A copy of `version` in production whose signature says every input is nullable, as a
    version registered before refit probed nullable features says (or one whose model fails
    on rows the probe did not try), served natively (without its ONNX file) or by ONNX."""
    with open_services(load_project(root)) as services:
        source = services.registry.get_version(NAME, version)
        skip = {"id", "version", "run_id", "created_at"}
        columns = {
            c.key: getattr(source, c.key)
            for c in ModelVersionRow.__table__.columns
            if c.key not in skip
        }
        signature = copy.deepcopy(columns["signature"])
        for column in signature["inputs"]:
            column["nullable"] = True
        columns["signature"] = signature
        if runtime == "native":
            columns["onnx"] = None
        run = services.registry.start_run(uuid.uuid4().hex, NAME, source.snapshot_id, "test")
        made = services.registry.register_version(run.id, ModelVersionRow(**columns)).version
        promote_version(services.registry, NAME, made, "test", store=services.store)
    return made


@pytest.mark.parametrize("runtime", ["native", "onnx"])
def test_valid_clients_beside_ones_sending_nulls_see_no_failure(
    tmp_path: Path, runtime: str
) -> None:
    root = make_project(tmp_path / "p")
    data = example_rows(NAME)
    X, y = data.drop(columns=TARGET), data[TARGET]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    joblib.dump(model, tmp_path / "pipe.joblib")
    probed = register(root, tmp_path / "pipe.joblib")
    with open_services(load_project(root)) as services:
        signature = services.registry.get_version(NAME, probed).signature
    assert not any(c["nullable"] for c in signature["inputs"]), "the probe marks them"
    version = unprobed(root, probed, runtime)
    records = example_records(40)
    expected = model.predict(pd.DataFrame(records)[list(X.columns)]).tolist()
    per_client = 100
    good: list[list[str]] = [[] for _ in range(8)]
    bad: list[list[str]] = [[] for _ in range(2)]
    stop = threading.Event()

    def valid(client: int, url: str) -> None:
        with httpx.Client(base_url=url, trust_env=False, timeout=30.0) as http:
            for n in range(per_client):
                i = (client * 5 + n) % len(records)
                try:
                    response = http.post("/predict", json=records[i])
                    body = response.json()
                    ok = response.status_code == 200 and body["version"] == version
                    ok = ok and body["prediction"] == expected[i]
                    good[client].append("ok" if ok else f"{response.status_code}: {body}")
                except Exception as exc:
                    good[client].append(f"{type(exc).__name__}: {exc}")

    def nulls(client: int, url: str) -> None:
        with httpx.Client(base_url=url, trust_env=False, timeout=30.0) as http:
            n = 0
            while not stop.is_set():
                record = {**records[n % len(records)], "mean_radius": None}
                n += 1
                try:
                    response = http.post("/predict", json=record)
                    error = response.json()["error"]
                    fields = [p["field"] for p in error["problems"]]
                    ok = (response.status_code, error["code"], fields) == (
                        422,
                        "model_refused",
                        ["mean_radius"],
                    )
                    bad[client].append("ok" if ok else f"{response.status_code}: {error}")
                except Exception as exc:
                    bad[client].append(f"{type(exc).__name__}: {exc}")

    with serving(root, workers=1) as server:
        server.converge(version, workers=1, within=START_WITHIN)
        served = server.served() or {}
        if runtime == "native" or served["onnx"] is None:
            assert served["runtime"] == runtime, served["onnx"]
        threads = [threading.Thread(target=nulls, args=(i, server.url)) for i in range(2)]
        threads += [threading.Thread(target=valid, args=(i, server.url)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads[2:]:
            thread.join(120)
        stop.set()
        for thread in threads[:2]:
            thread.join(60)
    failed = [r for answers in good for r in answers if r != "ok"]
    refused_wrongly = [r for answers in bad for r in answers if r != "ok"]
    total = sum(len(a) for a in good)
    print(
        f"\n{runtime}: {total} valid requests, {len(failed)} failed; "
        f"{sum(len(a) for a in bad)} with nulls, {len(refused_wrongly)} not a 422"
    )
    assert total == 8 * per_client
    assert not failed, failed[:5]
    assert sum(len(a) for a in bad) > 0
    assert not refused_wrongly, refused_wrongly[:5]


# --- a maximal batch ----------------------------------------------------------------------

HIDDEN, LAYERS = 1024, 16  # ~32 MFLOP a row: 10,000 rows take seconds, one row under 1 ms


def slow_onnx(path: Path, features: int) -> None:
    """An ONNX classifier of two classes that costs ~32 MFLOP per row (a deep MLP of random
    weights, one hidden matrix used by every layer to keep the file small), so a 10,000-row
    call takes seconds while a single row takes well under a millisecond."""
    rng = np.random.default_rng(0)

    def weight(name: str, rows: int, cols: int) -> onnx.TensorProto:
        w = (rng.standard_normal((rows, cols)) / np.sqrt(rows)).astype(np.float32)
        return numpy_helper.from_array(w, name)

    weights = [weight("w_in", features, HIDDEN), weight("w", HIDDEN, HIDDEN)]
    weights.append(weight("w_out", HIDDEN, 2))
    nodes = [helper.make_node("MatMul", ["input", "w_in"], ["h0"])]
    for i in range(LAYERS):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"]))
    nodes.append(helper.make_node("MatMul", [f"h{LAYERS}", "w_out"], ["scores"]))
    nodes.append(helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_a_maximal_batch_holds_up_neither_health_probes_nor_other_predictions(
    tmp_path: Path,
) -> None:
    root = make_project(tmp_path / "p")
    features = len(example_rows(NAME).columns) - 1
    slow_onnx(tmp_path / "slow.onnx", features)
    version = register(root, tmp_path / "slow.onnx")
    rows = example_records()
    big = json.dumps({"records": [rows[i % len(rows)] for i in range(MAX_BATCH_ROWS)]})
    one = rows[0]
    probes: list[tuple[float, float, str, int]] = []  # sent, seconds, path, status
    span: dict[str, float] = {}
    with serving(root, workers=1) as server:
        server.converge(version, workers=1, within=START_WITHIN)
        assert (server.served() or {})["runtime"] == "onnx"
        done = threading.Event()

        def send_big() -> None:
            with httpx.Client(base_url=server.url, trust_env=False, timeout=120.0) as http:
                span["sent"] = time.monotonic()
                headers = {"content-type": "application/json"}
                response = http.post("/predict/batch", content=big, headers=headers)
                span["answered"] = time.monotonic()
                span["status"] = response.status_code
                span["rows"] = len(response.json().get("predictions", []))
            done.set()

        with httpx.Client(base_url=server.url, trust_env=False, timeout=120.0) as http:
            http.get("/health/live")  # the probes' connection is open before the big request
            sender = threading.Thread(target=send_big)
            sender.start()
            n = 0
            while not done.is_set():
                path = "/health/live" if n % 2 == 0 else "/predict"
                start = time.monotonic()
                response = http.post(path, json=one) if path == "/predict" else http.get(path)
                probes.append((start, time.monotonic() - start, path, response.status_code))
                n += 1
                time.sleep(0.01)
            sender.join(120)
    assert (span["status"], span["rows"]) == (200, MAX_BATCH_ROWS)
    took = span["answered"] - span["sent"]
    # The probes sent while the body is parsed and checked (in a thread) and the model runs
    # (in a thread), until shortly before the answer is serialised (on the loop).
    window = [p for p in probes if span["sent"] + 0.05 < p[0] < span["answered"] - 0.1]
    latencies = sorted(p[1] for p in window)
    shown = f"p50 {statistics.median(latencies) * 1000:.1f} ms" if latencies else "none"
    print(
        f"\nthe 10,000-row request took {took:.2f} s; {len(window)} probes sent meanwhile "
        f"({shown}, max {max(latencies, default=0) * 1000:.1f} ms)"
    )
    assert took > 1.0, "the big call is not long enough to show anything"
    assert all(p[3] == 200 for p in probes), [p for p in probes if p[3] != 200][:3]
    assert len(window) >= 10, "the probes waited for the big call"
    within = sum(latency < 0.05 for latency in latencies)
    assert within >= 0.9 * len(window), latencies[-10:]
    assert latencies[-1] < 0.25 * took, "a probe waited for the big call"
    assert {p[2] for p in window} == {"/health/live", "/predict"}
