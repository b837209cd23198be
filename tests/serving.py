"""A real `refit serve` for the end-to-end and reliability tests: the example project, a server
on a free port of 127.0.0.1 as a subprocess, and the answers each version must give.

Each test builds its project in-process, starts `python -m refit serve` and moves `production`
from the test process: the server sees nothing but the registry.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from refit.data.ingest import run_ingest
from refit.examples import create_project, drop_batch, example_rows
from refit.flavors import load_model
from refit.project import load_project
from refit.registry import PRODUCTION, DecisionRow, ModelVersionRow, Registry
from refit.services import Services, open_services
from refit.signature import Signature
from refit.spec import SPEC_FILE, ArtifactFormat
from refit.train.run import run_training
from servers import free_port

NAME = "breast-cancer"
POLL_INTERVAL = 0.2
START_WITHIN = 90.0  # a worker imports scikit-learn before it answers: slow on 2 busy cores
CONVERGE_WITHIN = 10.0  # one poll (0.2 s) and one load, with room for a loaded machine
STOP_WITHIN = 40.0  # uvicorn's graceful shutdown waits up to 30 s for open requests


# --- projects ------------------------------------------------------------------------------


def make_project(root: Path, *, train: bool = True, model: dict[str, Any] | None = None) -> Path:
    """The breast-cancer example, ingested and (unless `train=False`) with v1 in production."""
    create_project(root, NAME)
    if model is not None:
        spec = yaml.safe_load((root / SPEC_FILE).read_text())
        spec["model"].update(model)
        (root / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
    with open_services(load_project(root)) as services:
        assert run_ingest(services.project, services.registry, services.store).status == "accepted"
        if train:
            assert run_training(services).promoted
    return root


def example_records(count: int | None = None) -> list[dict[str, Any]]:
    """The example's input records (the first `count`), without the target."""
    rows = example_rows(NAME).drop(columns="diagnosis").iloc[:count]
    return [{str(k): float(v) for k, v in row.items()} for row in rows.to_dict("records")]


Row = tuple[str, dict[str, float]]
"""A record's answer: its label and its class probabilities."""


def expected_answers(
    services: Services, versions: list[int], records: list[dict[str, Any]]
) -> dict[int, list[Row]]:
    """What each version must answer for each record: its artifact, loaded here, asked directly
    (so an answer with another request's rows, or another version's, shows)."""
    expected = {}
    for version in versions:
        row = services.registry.get_version(NAME, version)
        data = services.store.get(row.artifact_uri, row.artifact_sha256)
        model = load_model(data, ArtifactFormat(row.format), row.flavor)
        frame = pd.DataFrame(records)[Signature.from_dict(row.signature).names]
        classes = [str(c) for c in model.classes_]
        labels, probabilities = model.predict(frame), model.predict_proba(frame)
        expected[version] = [
            (str(label), dict(zip(classes, map(float, proba), strict=True)))
            for label, proba in zip(labels, probabilities, strict=True)
        ]
    return expected


def retrain(services: Services, root: Path, batch: int) -> int:
    """Drop batch `batch` of 3 of the example's remaining rows, ingest and train: the version."""
    drop_batch(root, NAME, batch, 3)
    run_ingest(services.project, services.registry, services.store)
    return run_training(services).version.version


def register_copies(services: Services, of: int, count: int) -> list[int]:
    """Register `count` versions reusing the artifact of version `of`: each has its own number,
    so a server loads each one anew."""
    registry = services.registry
    source = registry.get_version(NAME, of)
    skip = {"id", "version", "run_id", "created_at"}
    columns = {
        c.key: getattr(source, c.key)
        for c in ModelVersionRow.__table__.columns
        if c.key not in skip
    }
    versions = []
    for _ in range(count):
        run_id = uuid.uuid4().hex
        registry.start_run(run_id, NAME, source.snapshot_id, "test")
        versions.append(registry.register_version(run_id, ModelVersionRow(**columns)).version)
    return versions


def move_production(registry: Registry, name: str, version: int) -> None:
    """Point production at `version` with no artifact check: the state that a file damaged
    after its promotion was checked (or a registry row written by hand) leaves, which a
    server must survive."""
    current = registry.alias_version(name, PRODUCTION)
    decision = DecisionRow(
        name=name,
        action="promote",
        alias=PRODUCTION,
        promoted=True,
        candidate_version=version,
        metric="roc_auc",
        reason="moved with no check",
        actor="test",
    )
    registry.move_alias(decision, expected=current)


# --- traffic -------------------------------------------------------------------------------

BATCH_ROWS = 5
"""Records in each batch request of `Traffic`."""


@dataclass(frozen=True)
class Answer:
    """One request of the traffic: its client, when it was sent and answered, what came back."""

    client: int
    sent: float
    received: float
    version: int | None = None
    problem: str | None = None


def check_answer(
    response: httpx.Response, expected: dict[int, list[Row]], indices: list[int], batch: bool
) -> int:
    """The version of an answer to the records at `indices`; raises unless the answer is
    well-formed and what that version answers for those very records."""
    if response.status_code != 200:
        raise ValueError(f"status {response.status_code}: {response.text[:200]}")
    body = response.json()
    version = body["version"]
    if body["model"] != NAME or version not in expected:
        raise ValueError(f"not an answer of {NAME} at a promoted version: {str(body)[:200]}")
    if batch:
        labels, probabilities = body["predictions"], body["probabilities"]
    else:
        labels, probabilities = [body["prediction"]], [body["probabilities"]]
    if len(labels) != len(indices) or len(probabilities) != len(indices):
        raise ValueError(f"{len(labels)} predictions for {len(indices)} records")
    for index, label, proba in zip(indices, labels, probabilities, strict=True):
        want_label, want = expected[version][index]
        close = set(proba) == set(want) and all(abs(proba[c] - want[c]) < 1e-3 for c in want)
        # A label may differ on a near tie (ONNX Runtime computes in float32).
        if not close or (label != want_label and max(want.values()) > 0.51):
            raise ValueError(
                f"record {index}: got {label} {proba}, v{version}: {want_label} {want}"
            )
    checked: int = version
    return checked


class Traffic:
    """Client threads, each on its own keep-alive connection, predicting without pause (one
    record, then a batch, in turn) until stopped, for at most `limit` seconds and
    `max_requests` requests each. Every answer is recorded, failures included."""

    def __init__(
        self,
        url: str,
        records: list[dict[str, Any]],
        expected: dict[int, list[Row]],
        clients: int = 8,
        limit: float = 120.0,
        max_requests: int = 20_000,
    ) -> None:
        self.url = url
        self.records = records
        self.expected = expected
        self.limit = limit
        self.max_requests = max_requests
        self.answers: list[list[Answer]] = [[] for _ in range(clients)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        assert not any(t.is_alive() for t in self._threads), "a client thread did not stop"

    def _run(self, client: int) -> None:
        deadline = time.monotonic() + self.limit
        records = self.records
        with httpx.Client(base_url=self.url, trust_env=False, timeout=10.0) as http:
            for n in range(self.max_requests):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                batch = n % 2 == 1
                start = (client * 7 + n) % (len(records) - BATCH_ROWS)
                indices = list(range(start, start + BATCH_ROWS)) if batch else [start]
                sent = time.monotonic()
                try:
                    if batch:
                        body = {"records": [records[i] for i in indices]}
                        response = http.post("/predict/batch", json=body)
                    else:
                        response = http.post("/predict", json=records[start])
                    version = check_answer(response, self.expected, indices, batch)
                    answer = Answer(client, sent, time.monotonic(), version)
                except Exception as exc:  # every failure is counted, none ends the thread
                    problem = f"{type(exc).__name__}: {exc}"
                    answer = Answer(client, sent, time.monotonic(), problem=problem)
                self.answers[client].append(answer)

    def all(self) -> list[Answer]:
        return [answer for answers in self.answers for answer in answers]

    def wait_each(self, count: int, sent_after: float) -> float:
        """Seconds until every client has `count` answers to requests sent after `sent_after`."""

        def done() -> bool:
            return all(
                sum(a.sent > sent_after for a in list(answers)) >= count for answers in self.answers
            )

        return wait_until(f"{count} answers on every connection", done, CONVERGE_WITHIN)


# --- the server ----------------------------------------------------------------------------


def wait_until(what: str, check: Callable[[], bool], within: float, every: float = 0.05) -> float:
    """Seconds until `check()` holds; fails the test after `within` seconds."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            pytest.fail(f"{what}: not within {within:.0f} s")
        time.sleep(every)
    return time.monotonic() - start


def fresh_connections(url: str) -> httpx.Client:
    """A client that opens a new connection for every request, so that any worker may answer
    it (one client: building one costs ~35 ms of CPU, mostly its TLS context)."""
    limits = httpx.Limits(max_keepalive_connections=0)
    return httpx.Client(base_url=url, trust_env=False, timeout=10.0, limits=limits)


@dataclass
class Server:
    project: Path
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    http: httpx.Client
    """New connection per request."""

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def rss_mb(self) -> float:
        """Resident memory of the server process (the only one, with `--workers 1`)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(kib) / 1024

    def wait_live(self) -> None:
        """Wait for `/health/live` to answer; fail with the server's output if it never does."""
        deadline = time.monotonic() + START_WITHIN
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"refit serve exited with {self.process.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.TransportError):
                if self.http.get("/health/live", timeout=2.0).status_code == 200:
                    return
            time.sleep(0.2)
        pytest.fail(f"refit serve not live within {START_WITHIN:.0f} s:\n{self.output()}")

    def served(self) -> dict[str, Any] | None:
        """What `/v1/models` says is served, asked on a new connection."""
        response = self.http.get("/v1/models")
        assert response.status_code == 200, response.text
        served: dict[str, Any] | None = response.json()["models"][0]["served"]
        return served

    def converge(
        self, version: int, workers: int, streak: int = 10, within: float = CONVERGE_WITHIN
    ) -> float:
        """Seconds until new connections get `version` from every worker: `workers` different
        load times of it seen, and the last `streak` answers all `version`."""
        loads: set[str] = set()
        run = 0

        def done() -> bool:
            nonlocal run
            served = self.served()
            if served is not None and served["version"] == version:
                loads.add(served["loaded_at"])
                run += 1
            else:
                run = 0
            return len(loads) >= workers and run >= streak

        start = time.monotonic()
        while not done():
            if time.monotonic() - start > within:
                seen = f"{len(loads)} load(s) of it seen"
                pytest.fail(
                    f"not every worker served v{version} within {within:.0f} s ({seen}):\n"
                    f"{self.output()}"
                )
            time.sleep(0.02)
        return time.monotonic() - start


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then SIGKILL if the server is still there after `STOP_WITHIN`: the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_WITHIN)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


def start_serving(
    project: Path,
    workers: int,
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
    options: tuple[str, ...] = (),
) -> Server:
    """Start `refit serve` on `port` (default a free one) of 127.0.0.1, not yet live: the
    caller waits for it and stops it. `env` adds to the environment (for example
    `REFIT_SERVE__*` settings), `options` to the command line."""
    port = free_port() if port is None else port
    environment = {k: v for k, v in os.environ.items() if not k.startswith("REFIT_")}
    environment |= {"OMP_NUM_THREADS": "1", "REFIT_SERVE__POLL_INTERVAL": str(POLL_INTERVAL)}
    # No load balancer waits on a test's server: it stops listening at once on SIGTERM, unless
    # a test of the shutdown sets a delay.
    environment |= {"REFIT_SERVE__DRAIN_DELAY": "0"}
    environment |= env or {}
    args = [sys.executable, "-m", "refit", "serve", "-p", str(project)]
    args += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), *options]
    log = project.parent / f"serve-{port}-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(args, env=environment, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    return Server(project, process, url, log, fresh_connections(url))


@contextmanager
def serving(
    project: Path,
    workers: int,
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
    options: tuple[str, ...] = (),
) -> Iterator[Server]:
    """`refit serve` (see `start_serving`), live; stopped with SIGTERM, which must end it
    cleanly: status 0, with one worker or several."""
    server = start_serving(project, workers, port=port, env=env, options=options)
    try:
        server.wait_live()
        yield server
    finally:
        server.http.close()
        code = stop(server.process)
    assert code == 0, f"refit serve exited with {code} on SIGTERM:\n{server.output()}"


def workers_of(supervisor: int) -> set[int]:
    """The live worker processes a `refit serve` of several workers started (not
    multiprocessing's helpers)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if int(parent) == supervisor and state != "Z" and b"spawn_main" in command:
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
