"""SIGTERM drains without resets: readiness turns false at once, the server answers on for
`serve.drain_delay` (every answer `Connection: close`), then finishes what is in flight within
`serve.grace_period` and exits 0, so a client that stops sending within the delay sees no
failed request."""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from refit.deploy import pod
from refit.spec import ServeSpec
from serving import (
    CONVERGE_WITHIN,
    STOP_WITHIN,
    example_records,
    fresh_connections,
    make_project,
    serving,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
DELAY = 3.0
GRACE = 10.0
SENDING = 2.0  # the clients stop sending this long after SIGTERM: within the delay
RELAYED = 1.0  # SIGTERM reaches every worker and its event loop within this (0.5 s + 0.1 s)


@dataclass(frozen=True)
class Result:
    sent: float
    status: int | None
    connection: str | None = None
    problem: str | None = None


def test_the_pods_shutdown_numbers_are_refit_serves_defaults() -> None:
    defaults = ServeSpec()
    assert defaults.drain_delay == pod.DRAIN_DELAY_SECONDS
    assert defaults.grace_period == pod.DRAIN_SECONDS
    margin = pod.GRACE_SECONDS - (pod.PRESTOP_SECONDS + defaults.drain_delay)
    assert margin > defaults.grace_period
    assert pod.FIRST_LOAD_SECONDS < pod.WORKER_STARTUP_SECONDS
    manifests = (ROOT / "deploy" / "kubernetes" / "base" / "serve.yaml").read_text()
    [deployment] = [d for d in yaml.safe_load_all(manifests) if d and d.get("kind") == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == pod.GRACE_SECONDS
    [container] = spec["containers"]
    assert container["lifecycle"]["preStop"]["exec"]["command"] == [
        "sleep",
        str(pod.PRESTOP_SECONDS),
    ]
    # Compose has no preStop: docker stop sends SIGTERM at once, and kills after this period.
    assert defaults.drain_delay + defaults.grace_period < pod.STOP_SECONDS
    stack = yaml.safe_load((ROOT / "deploy" / "compose" / "compose.yaml").read_text())
    assert stack["services"]["serve"]["stop_grace_period"] == f"{pod.STOP_SECONDS}s"


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_fails_no_request_sent_within_the_drain_delay(tmp_path: Path, workers: int) -> None:
    root = make_project(tmp_path / "p")
    record = example_records(1)[0]
    env = {"REFIT_SERVE__DRAIN_DELAY": str(DELAY), "REFIT_SERVE__GRACE_PERIOD": str(GRACE)}
    with serving(root, workers, env=env) as server:
        server.converge(1, workers)
        stop_sending = threading.Event()
        results: list[Result] = []
        readiness: list[tuple[float, int, str]] = []

        def traffic(client: httpx.Client) -> None:
            with client:
                while not stop_sending.is_set():
                    sent = time.monotonic()
                    try:
                        response = client.post("/predict", json=record)
                    except httpx.HTTPError as exc:
                        results.append(Result(sent, None, problem=f"{type(exc).__name__}: {exc}"))
                        continue
                    connection = response.headers.get("connection")
                    problem = None if response.status_code == 200 else response.text[:200]
                    results.append(Result(sent, response.status_code, connection, problem))

        def probe() -> None:
            with fresh_connections(server.url) as client:
                while not stop_sending.is_set():
                    sent = time.monotonic()
                    try:
                        response = client.get("/health/ready")
                    except httpx.HTTPError as exc:
                        results.append(Result(sent, None, problem=f"probe: {exc!r}"))
                        continue
                    readiness.append((sent, response.status_code, response.json()["status"]))
                    time.sleep(0.05)

        def keep_alive() -> httpx.Client:
            return httpx.Client(base_url=server.url, trust_env=False, timeout=30.0)

        clients = [keep_alive(), keep_alive(), fresh_connections(server.url)]
        clients.append(fresh_connections(server.url))
        threads = [threading.Thread(target=traffic, args=(c,)) for c in clients]
        threads.append(threading.Thread(target=probe))
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.0)
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            time.sleep(SENDING)
        finally:
            stop_sending.set()
            for thread in threads:
                thread.join(60)
        code = server.process.wait(STOP_WITHIN)
        exited = time.monotonic()
        assert code == 0, f"refit serve exited with {code} on SIGTERM:\n{server.output()}"

    failed = [r for r in results if r.problem is not None]
    after = [r for r in results if r.sent > signalled]
    late = [r for r in after if r.sent > signalled + RELAYED]
    kept = [r for r in late if r.connection != "close"]
    not_ready = [t - signalled for t, status, _ in readiness if t > signalled and status == 503]
    ready_again = [t for t, status, _ in readiness if status == 200 and t > signalled + RELAYED]
    print(
        f"\n{workers} worker(s): {len(results)} requests, {len(after)} after SIGTERM, "
        f"{len(failed)} failed; not ready {(not_ready or [math.nan])[0]:.2f} s after SIGTERM; "
        f"exited {exited - signalled:.1f} s after it"
    )
    assert failed == [], failed[:5]
    assert len(after) >= 20
    assert kept == [], f"{len(kept)} answers kept their connection open while draining"
    assert not_ready and not_ready[0] < RELAYED
    assert {status for _, status, said in readiness if status == 503} == {503}
    assert all(said == "draining" for t, status, said in readiness if status == 503)
    assert ready_again == []
    assert DELAY <= exited - signalled < DELAY + GRACE


@pytest.mark.slow
def test_sigterm_lets_the_requests_in_flight_finish(tmp_path: Path) -> None:
    """Requests begun before the listener closes finish within the grace period, even when
    their bodies are still arriving after it."""
    root = make_project(tmp_path / "p")
    records = example_records()
    body = json.dumps({"records": records}).encode()
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    env = {"REFIT_SERVE__DRAIN_DELAY": "1", "REFIT_SERVE__GRACE_PERIOD": "30"}
    with serving(root, workers=1, env=env) as server:
        server.converge(1, workers=1)
        clients = [
            httpx.Client(base_url=server.url, trust_env=False, timeout=60.0) for _ in range(4)
        ]
        halfway = [threading.Event() for _ in clients]
        rest = threading.Event()
        answers: list[str | None] = [None] * len(clients)

        def predict(i: int) -> None:
            def upload() -> Iterator[bytes]:
                yield body[: len(body) // 2]
                halfway[i].set()
                rest.wait(30)
                yield body[len(body) // 2 :]

            try:
                response = clients[i].post("/predict/batch", content=upload(), headers=headers)
                said = response.json()
                ok = response.status_code == 200 and len(said["predictions"]) == len(records)
                answers[i] = "v1" if ok and said["version"] == 1 else response.text[:200]
            except Exception as exc:
                answers[i] = f"{type(exc).__name__}: {exc}"

        def refusing() -> bool:
            try:
                server.http.get("/health/live", timeout=2.0)
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                return True  # refused, or reset: queued as the listener closed
            return False

        threads = [threading.Thread(target=predict, args=(i,)) for i in range(len(clients))]
        try:
            for thread in threads:
                thread.start()
            assert all(event.wait(30) for event in halfway)
            # An answer on a new connection, asked after those half bodies were sent, means
            # the server has read their headers: the requests have begun.
            assert server.http.get("/health/live").status_code == 200
            server.process.send_signal(signal.SIGTERM)
            # After the drain delay the server stops accepting connections, then waits for the
            # requests it has begun, which are still waiting for the rest of their bodies.
            wait_until("the server closing its listener", refusing, CONVERGE_WITHIN)
            time.sleep(1.0)
            assert server.process.poll() is None
        finally:
            rest.set()
            for thread in threads:
                if thread.ident is not None:
                    thread.join(60)
            for http in clients:
                http.close()
        code = server.process.wait(STOP_WITHIN)
        assert code == 0, f"refit serve exited with {code} on SIGTERM:\n{server.output()}"
    print(f"\n{len(answers)} requests half sent at SIGTERM: {answers}")
    assert answers == ["v1"] * len(clients)
