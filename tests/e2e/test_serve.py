"""`refit serve` as a user runs it: real processes on 127.0.0.1, `production` moved under them.

Each test builds its project in-process, starts `python -m refit serve` on a free port and
moves `production` from the test process: the server sees nothing but the registry. Which
worker answered shows in `/v1/models`: every worker loads every version itself, so a version
served by two workers shows two different `loaded_at` times.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from refit.project import load_project
from refit.services import open_services
from refit.train.run import run_training
from serving import (
    CONVERGE_WITHIN,
    NAME,
    STOP_WITHIN,
    Answer,
    check_answer,
    example_records,
    expected_answers,
    make_project,
    serving,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def records() -> list[dict[str, Any]]:
    """Twenty input records of the example."""
    return example_records(20)


def test_a_server_started_before_any_promotion_becomes_ready_without_restart(
    tmp_path: Path, records: list[dict[str, Any]]
) -> None:
    root = make_project(tmp_path / "p", train=False)
    with serving(root, workers=1) as server:
        assert server.http.get("/health/live").status_code == 200
        ready = server.http.get("/health/ready")
        assert (ready.status_code, ready.json()) == (
            503,
            {"status": "not ready", "model": NAME},
        )
        for path, body in [("/predict", records[0]), ("/predict/batch", {"records": records})]:
            refused = server.http.post(path, json=body)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert list(refused.json()) == ["error"]
            error = refused.json()["error"]
            assert set(error) == {"code", "message"}
            assert error["code"] == "unavailable"
            assert "no version holds production yet" in error["message"]
        assert server.served() is None

        with open_services(load_project(root)) as services:
            result = run_training(services)
            expected = expected_answers(services, [1], records)
        assert result.promoted and result.version.version == 1

        def ready_now() -> bool:
            return server.http.get("/health/ready").status_code == 200

        took = wait_until("ready after the first promotion", ready_now, CONVERGE_WITHIN)
        print(f"\nready {took:.2f} s after the gate promoted v1")
        predicted = server.http.post("/predict", json=records[0])
        assert check_answer(predicted, expected, [0], batch=False) == 1
        predicted = server.http.post("/predict/batch", json={"records": records})
        assert check_answer(predicted, expected, list(range(len(records))), batch=True) == 1
        assert server.process.poll() is None


def test_sigterm_lets_the_requests_in_flight_finish(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    records = example_records()
    with open_services(load_project(root)) as services:
        expected = expected_answers(services, [1], records)
    indices = list(range(len(records)))
    body = json.dumps({"records": records}).encode()
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    with serving(root, workers=1) as server:
        server.converge(1, workers=1)
        clients = [
            httpx.Client(base_url=server.url, trust_env=False, timeout=60.0) for _ in range(4)
        ]
        halfway = [threading.Event() for _ in clients]
        rest = threading.Event()
        answers: list[Answer | None] = [None] * len(clients)

        def predict(i: int) -> None:
            def upload() -> Iterator[bytes]:
                yield body[: len(body) // 2]
                halfway[i].set()
                rest.wait(30)
                yield body[len(body) // 2 :]

            start = time.monotonic()
            try:
                response = clients[i].post("/predict/batch", content=upload(), headers=headers)
                version = check_answer(response, expected, indices, batch=True)
                answers[i] = Answer(i, start, time.monotonic(), version)
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
                answers[i] = Answer(i, start, time.monotonic(), problem=problem)

        def refusing() -> bool:
            try:
                server.http.get("/health/live", timeout=2.0)
            except httpx.ConnectError:
                return True
            return False

        threads = [threading.Thread(target=predict, args=(i,)) for i in range(len(clients))]
        try:
            for thread in threads:
                thread.start()
            assert all(event.wait(30) for event in halfway)
            # An answer on a new connection, asked after those half bodies were sent, means
            # the server has read their headers: the requests have begun. (uvicorn resets a
            # connection whose request it has not begun to read when shutdown starts.)
            assert server.http.get("/health/live").status_code == 200
            server.process.send_signal(signal.SIGTERM)
            # Shutting down, the server stops accepting connections, then waits for the
            # requests it has begun, which are still waiting for the rest of their bodies.
            wait_until("the server shutting down", refusing, CONVERGE_WITHIN)
            time.sleep(1.0)  # longer than uvicorn's own 0.1 s pause before it drains
            assert server.process.poll() is None
        finally:
            rest.set()
            for thread in threads:
                if thread.ident is not None:
                    thread.join(60)
            for http in clients:
                http.close()
        # Drained as asked: status 0, not "killed by SIGTERM" (uvicorn raises the signal again
        # once it has shut down in one process; `refit serve` exits 0 in every mode).
        code = server.process.wait(STOP_WITHIN)
        assert code == 0, f"refit serve exited with {code} on SIGTERM:\n{server.output()}"
    done = [a for a in answers if a is not None]
    print(f"\n{len(done)} requests half sent at SIGTERM: {[a.problem for a in done]}")
    assert len(done) == len(clients)
    assert [a.problem for a in done] == [None] * len(clients)
    assert {a.version for a in done} == {1}
