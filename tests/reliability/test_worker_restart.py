"""A restarted worker takes no request before its model is loaded: after kill -9 of one of two
workers under continuous traffic, no request is answered 503 and none sent after the kill
fails; the replacement serves once it has loaded production."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from serving import (
    START_WITHIN,
    alive,
    example_records,
    fresh_connections,
    make_project,
    serving,
    wait_until,
    workers_of,
)

CLIENTS = 4
SERVED_AFTER = 2.0  # traffic goes on this long once the replacement serves


@dataclass(frozen=True)
class Result:
    sent: float
    status: int | None
    loaded_at: str | None = None
    problem: str | None = None


@pytest.mark.slow
def test_a_worker_killed_under_traffic_is_replaced_without_a_503(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    record = example_records(1)[0]
    with serving(root, workers=2) as server:
        server.converge(1, workers=2)
        [victim, survivor] = sorted(workers_of(server.process.pid))
        stop_sending = threading.Event()
        results: list[Result] = []

        def traffic() -> None:
            # New connections: any worker may take each one, the replacement too.
            with fresh_connections(server.url) as client:
                while not stop_sending.is_set():
                    sent = time.monotonic()
                    try:
                        response = client.post("/predict", json=record)
                        served = client.get("/v1/models").json()["models"][0]["served"]
                    except httpx.HTTPError as exc:
                        results.append(Result(sent, None, problem=f"{type(exc).__name__}: {exc}"))
                        continue
                    loaded_at = served["loaded_at"] if served else None
                    results.append(Result(sent, response.status_code, loaded_at))

        threads = [threading.Thread(target=traffic) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        try:

            def loads_seen() -> set[str]:
                return {r.loaded_at for r in list(results) if r.loaded_at is not None}

            wait_until("both workers answering", lambda: len(loads_seen()) == 2, 10.0)
            before = loads_seen()  # the two workers' loads: the replacement's is another
            os.kill(victim, signal.SIGKILL)
            wait_until("the killed worker gone", lambda: not alive(victim), 10.0)
            killed = time.monotonic()

            def replaced() -> bool:
                return len(workers_of(server.process.pid) - {survivor}) == 1

            wait_until("a replacement worker", replaced, 10.0)
            [replacement] = workers_of(server.process.pid) - {survivor}

            def answering() -> bool:
                return bool(loads_seen() - before)

            took = wait_until("the replacement answering", answering, START_WITHIN, every=0.1)
            time.sleep(SERVED_AFTER)
        finally:
            stop_sending.set()
            for thread in threads:
                thread.join(60)

    unavailable = [r for r in results if r.status == 503]
    after = [r for r in results if r.sent > killed]
    failed = [r for r in after if r.status != 200]
    in_flight = [r for r in results if r.sent <= killed and r.problem is not None]
    by_replacement = [r for r in after if r.loaded_at is not None and r.loaded_at not in before]
    print(
        f"\n{len(results)} requests, {len(after)} after the kill; {len(unavailable)} answered "
        f"503, {len(failed)} failed after it, {len(in_flight)} in flight on the killed worker; "
        f"worker {replacement} answered {took:.1f} s after the kill "
        f"({len(by_replacement)} answers)"
    )
    assert unavailable == [], unavailable[:5]
    assert failed == [], failed[:5]
    assert len(in_flight) <= CLIENTS  # at most one request of each client was on the victim
    assert len(by_replacement) >= 5
