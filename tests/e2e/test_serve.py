"""`refit serve` as a user runs it: real processes on 127.0.0.1, `production` moved under them.

Each test builds its project in-process, starts `python -m refit serve` on a free port and
moves `production` from the test process: the server sees nothing but the registry. Which
worker answered shows in `/v1/models`: every worker loads every version itself, so a version
served by two workers shows two different `loaded_at` times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from refit.project import load_project
from refit.services import open_services
from refit.train.run import run_training
from serving import (
    CONVERGE_WITHIN,
    NAME,
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
