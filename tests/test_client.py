"""The Python client: against a real server on a socket of 127.0.0.1, and its retries against
a transport that answers as each test says."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
import uvicorn

from refit import client as client_module
from refit.apikeys import Scope, key_line, new_key, parse_key_line
from refit.client import BatchPrediction, Client, RefitClientError, records_of
from refit.data.ingest import run_ingest
from refit.errors import RefitError
from refit.examples import create_project, example_rows
from refit.project import load_project
from refit.serve.app import create_app
from refit.serve.auth import Access
from refit.serve.state import ServerState
from refit.services import open_services
from refit.train.run import run_training

NAME = "breast-cancer"
PICKED = [0, 19, 1, 20, 2]  # malignant, benign, malignant, benign, malignant
KEY = new_key()
"""The key of the real server's `predict` scope."""


@dataclass(frozen=True)
class Served:
    url: str
    expected: list[str]
    """What v1's artifact itself predicts for the PICKED rows."""


def inputs() -> pd.DataFrame:
    return example_rows(NAME).drop(columns="diagnosis").iloc[PICKED].reset_index(drop=True)


def records() -> list[dict[str, Any]]:
    parsed: list[dict[str, Any]] = json.loads(inputs().to_json(orient="records"))
    return parsed


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A breast-cancer project whose v1 holds production, served by uvicorn in a thread to
    the holders of `KEY`."""
    root = tmp_path_factory.mktemp("client") / "p"
    create_project(root, NAME)
    with open_services(load_project(root, environ={})) as services:
        ingested = run_ingest(services.project, services.registry, services.store)
        assert ingested.status == "accepted", ingested.message
        assert run_training(services).promoted
        row = services.registry.get_version(NAME, 1)
        model = joblib.load(io.BytesIO(services.store.get(row.artifact_uri, row.artifact_sha256)))
        expected = [str(label) for label in model.predict(inputs())]
        assert len(set(expected)) == 2, "the rows must be told apart"

        access = Access(keys=(parse_key_line(key_line(Scope.PREDICT, "client", KEY)),))
        app = create_app(ServerState.open(services, poll_interval=0.05), access=access)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # port 0: no race for a free port
        port = sock.getsockname()[1]
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while not _ready(url):
                assert thread.is_alive() and time.monotonic() < deadline, (
                    "the server never got ready"
                )
                time.sleep(0.05)
            yield Served(url, expected)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's sleeps between attempts, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(client_module, "_sleep", slept.append)
    return slept


def closed_port() -> int:
    """A port of 127.0.0.1 that refuses connections."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- against a real server -------------------------------------------------------------------


def test_predictions_of_a_record_a_batch_and_a_frame(served: Served) -> None:
    with Client(served.url, api_key=KEY) as client:
        one = client.predict(records()[0])
        assert (one.label, one.model, one.version) == (served.expected[0], NAME, 1)
        assert one.probabilities is not None
        assert set(one.probabilities) == {"benign", "malignant"}
        assert sum(one.probabilities.values()) == pytest.approx(1, abs=1e-5)

        batch = client.predict_batch(records())
        assert isinstance(batch, BatchPrediction) and len(batch) == len(PICKED)
        assert batch.labels == served.expected
        assert batch.probabilities is not None and batch.probabilities[0] == one.probabilities

        frame = client.predict_frame(inputs())
        assert frame == batch

    # A named model goes through /v1/models/{name}/...: the same answers.
    with Client(served.url, api_key=KEY, model=NAME) as named:
        assert named.predict_batch(records()) == batch


def test_a_frame_with_missing_values_sends_them_as_null(served: Served) -> None:
    frame = inputs().astype({"mean_area": "Float64"})
    frame.loc[1, "mean_radius"] = np.nan
    frame.loc[2, "mean_area"] = pd.NA
    sent = records_of(frame)
    assert sent[1]["mean_radius"] is None and sent[2]["mean_area"] is None
    assert type(sent[0]["mean_radius"]) is float
    with Client(served.url, api_key=KEY) as client:
        assert client.predict_frame(frame).labels == client.predict_batch(sent).labels


def test_models_and_readiness(served: Served) -> None:
    with Client(served.url, api_key=KEY) as client:
        [model] = client.models()
        assert (model["name"], model["ready"], model["served"]["version"]) == (NAME, True, 1)
        assert client.ready() is True
    with Client(f"http://127.0.0.1:{closed_port()}") as nowhere:
        assert nowhere.ready() is False


def test_a_refused_request_raises_with_status_code_message_and_problems(served: Served) -> None:
    with Client(served.url, api_key=KEY) as client:
        with pytest.raises(RefitClientError) as raised:
            client.predict({**records()[0], "mean_radius": "big"})
        error = raised.value
        assert isinstance(error, RefitError)
        assert (error.status, error.code) == (422, "invalid_input")
        assert error.problems == [
            {
                "field": "mean_radius",
                "problem": "wrong type",
                "received": "big",
                "expected": "a number or null",
            }
        ]
        assert str(error).startswith("422 invalid_input: 1 problem with the input")
        assert "\n  mean_radius: wrong type, received 'big', expected a number or null" in str(
            error
        )

        with pytest.raises(RefitClientError) as many:
            client.predict({})
        assert "\n  mean_radius: missing, expected a number or null\n" in str(many.value)
        assert str(many.value).endswith("\n  and 20 more")

    with (
        Client(served.url, api_key=KEY, model="churn") as other,
        pytest.raises(RefitClientError) as missing,
    ):
        other.predict(records()[0])
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    assert "'churn'" in missing.value.message


def test_a_key_is_sent_as_a_bearer_token_and_a_refusal_is_not_retried(
    served: Served, waits: list[float]
) -> None:
    for key in (None, new_key()):
        with Client(served.url, api_key=key) as client, pytest.raises(RefitClientError) as raised:
            client.predict(records()[0])
        assert (raised.value.status, raised.value.code) == (401, "unauthorized")
    assert waits == []
    with pytest.raises(ValueError, match="api_key"):
        Client(served.url, api_key=f"{KEY}\nX-Other: 1")


def test_an_unreachable_server_is_tried_again_with_back_off_then_raises(
    waits: list[float],
) -> None:
    nowhere = Client(f"http://127.0.0.1:{closed_port()}", retries=2, backoff=0.1)
    with nowhere, pytest.raises(RefitClientError) as raised:
        nowhere.predict(records()[0])
    assert raised.value.status is None and raised.value.code == "connection_error"
    assert "cannot reach" in str(raised.value) and "after 3 attempts" in str(raised.value)
    assert waits == [0.1, 0.2]


# --- retries, against a transport that answers as told --------------------------------------


ANSWER = {"model": NAME, "version": 2, "prediction": "benign", "probabilities": None}
UNAVAILABLE = {"error": {"code": "unavailable", "message": "breast-cancer is not ready"}}


def scripted(*answers: httpx.Response | Exception) -> tuple[httpx.MockTransport, list[str]]:
    """A transport giving `answers` in turn, and the paths it was asked for."""
    asked: list[str] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handle), asked


def unavailable(retry_after: str | None = None) -> httpx.Response:
    headers = {} if retry_after is None else {"retry-after": retry_after}
    return httpx.Response(503, json=UNAVAILABLE, headers=headers)


def client_of(transport: httpx.MockTransport, **options: Any) -> Client:
    return Client("http://refit.test", transport=transport, **options)


def test_a_503_then_a_success_returns_the_success_after_retry_after(waits: list[float]) -> None:
    transport, asked = scripted(unavailable("1"), httpx.Response(200, json=ANSWER))
    with client_of(transport) as client:
        prediction = client.predict(records()[0])
    assert (prediction.label, prediction.version) == ("benign", 2)
    assert asked == ["/predict", "/predict"]
    assert waits == [1.0]


def test_without_retry_after_the_waits_double(waits: list[float]) -> None:
    transport, asked = scripted(
        unavailable(),
        httpx.ConnectError("refused"),
        unavailable(),
        httpx.Response(200, json=ANSWER),
    )
    with client_of(transport, backoff=0.2) as client:
        assert client.predict(records()[0]).label == "benign"
    assert len(asked) == 4
    assert waits == pytest.approx([0.2, 0.4, 0.8])


def test_exhausted_retries_raise_the_servers_message(waits: list[float]) -> None:
    transport, asked = scripted(*(unavailable("120") for _ in range(3)))
    with client_of(transport, retries=2) as client, pytest.raises(RefitClientError) as raised:
        client.predict_batch(records())
    assert (raised.value.status, raised.value.code) == (503, "unavailable")
    assert raised.value.message == "breast-cancer is not ready (after 3 attempts)"
    assert asked == ["/predict/batch"] * 3
    assert waits == [10.0, 10.0]  # Retry-After: 120, capped at max_wait


@pytest.mark.parametrize(
    ("answer", "status", "code", "message"),
    [
        pytest.param(
            httpx.Response(422, json={"error": {"code": "invalid_input", "message": "bad"}}),
            422,
            "invalid_input",
            "bad",
            id="refit-error",
        ),
        pytest.param(
            httpx.Response(502, text="<html>Bad Gateway</html>"),
            502,
            "http_error",
            "<html>Bad Gateway</html>",
            id="proxy-page",
        ),
        pytest.param(
            httpx.Response(200, text="[]"), 200, "bad_response", "not a JSON object", id="not-json"
        ),
    ],
)
def test_other_answers_are_not_retried(
    waits: list[float], answer: httpx.Response, status: int, code: str, message: str
) -> None:
    transport, asked = scripted(answer)
    with client_of(transport) as client, pytest.raises(RefitClientError) as raised:
        client.predict(records()[0])
    assert (raised.value.status, raised.value.code) == (status, code)
    assert message in raised.value.message
    assert len(asked) == 1 and waits == []


def test_ready_is_one_attempt_and_the_context_manager_closes(waits: list[float]) -> None:
    transport, asked = scripted(unavailable("1"))
    with client_of(transport) as client:
        assert client.ready() is False
    assert asked == ["/health/ready"] and waits == []
    with pytest.raises(RuntimeError, match="closed"):
        client.models()


def test_negative_retries_are_refused() -> None:
    with pytest.raises(ValueError, match="retries"):
        Client("http://refit.test", retries=-1)
