"""Load and checks: wait for a server to answer, check its answers, and run `wrk` against it.

Every request a server gets here goes to 127.0.0.1, and every loop is bounded in time.
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.peers import BATCH, SINGLE, Server, Shape
from harness.servers import RssSampler, cpu_seconds, machine_busy_seconds

SCRIPT = Path(__file__).resolve().parent / "post.lua"
TOLERANCE = 1e-4
"""How far a class probability may be from the expected one (refit rounds to 6 decimals)."""


class ServerFailure(Exception):
    """A server did not start, or answered wrongly."""


@dataclass(frozen=True)
class Expected:
    classes: list[str]
    labels: list[str]
    probabilities: list[list[float]]

    def first(self, n: int) -> tuple[list[str], list[list[float]]]:
        return self.labels[:n], self.probabilities[:n]


def post(url: str, body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def check_answer(
    server: Server, shape: Shape, body: bytes, expected: Expected | None
) -> str | None:
    """What is wrong with the server's answer to `body`, or None when it is right. With
    `expected` None (a server that answers a constant), only its status is checked."""
    try:
        status, raw = post(server.url(shape), body)
    except (OSError, urllib.error.URLError) as exc:
        return f"no answer: {exc}"
    if not 200 <= status < 300:
        return f"HTTP {status}: {raw[:300]!r}"
    if expected is None:
        return None
    try:
        labels, probabilities = server.read(json.loads(raw), shape, expected.classes)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return f"unreadable answer ({type(exc).__name__}: {exc}): {raw[:300]!r}"
    want_labels, want_probabilities = expected.first(shape.rows)
    if len(labels) != shape.rows or len(probabilities) != shape.rows:
        return (
            f"{len(labels)} labels and {len(probabilities)} rows of probabilities "
            f"for {shape.rows} rows"
        )
    if labels != want_labels:
        wrong = sum(a != b for a, b in zip(labels, want_labels, strict=True))
        return (
            f"{wrong} of {shape.rows} labels wrong; first: {labels[:3]}, expected {want_labels[:3]}"
        )
    for row, (got, want) in enumerate(zip(probabilities, want_probabilities, strict=True)):
        if len(got) != len(want) or any(
            abs(g - w) > TOLERANCE for g, w in zip(got, want, strict=True)
        ):
            return f"row {row}: probabilities {got}, expected {want}"
    return None


def wait_ready(server: Server, body: bytes, deadline: float, settle: int = 20) -> float:
    """Wait until the server answers `settle` single-record requests in a row with 2xx, each on
    a new connection (so that every worker is likely to have answered); the seconds it took."""
    start = time.monotonic()
    streak = 0
    last = "no answer yet"
    assert server.process is not None
    while streak < settle:
        if not server.process.running():
            raise ServerFailure(
                f"{server.name} exited with {server.process.popen.returncode} before it was "
                f"ready; its log ends with:\n{server.process.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise ServerFailure(
                f"{server.name} was not ready in time ({last}); its log ends with:\n"
                f"{server.process.log_tail()}"
            )
        try:
            status, raw = post(server.url(SINGLE), body, timeout=5)
            ok = 200 <= status < 300
            last = f"HTTP {status}: {raw[:200]!r}"
        except (OSError, urllib.error.URLError) as exc:
            ok, last = False, f"{type(exc).__name__}: {exc}"
        streak = streak + 1 if ok else 0
        if not ok:
            time.sleep(0.5)
    return time.monotonic() - start


def verify(server: Server, bodies: dict[str, bytes], expected: Expected | None) -> None:
    for shape in (SINGLE, BATCH):
        problem = check_answer(server, shape, bodies[shape.name], expected)
        if problem is not None:
            raise ServerFailure(f"{server.name} answers {shape.name} requests wrongly: {problem}")


@dataclass
class Measure:
    """One wrk run against one server for one cell."""

    server: str
    cell: str
    round: int
    rows: int
    connections: int
    seconds: float
    requests: int
    good: int
    errors: int
    rps: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    peak_rss_mb: float
    server_cpu: float
    """CPU the server's process tree used, in cores (1.0 = one core busy all along)."""
    wrk_cpu: float
    """CPU the load generator used, in cores."""
    other_cpu: float
    """CPU used by anything else on the machine meanwhile, in cores: other work perturbs."""
    error_kinds: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_wrk(
    wrk: str,
    server: Server,
    shape: Shape,
    body_file: Path,
    connections: int,
    seconds: float,
    raw_log: Path | None = None,
) -> dict[str, int]:
    command = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(SCRIPT),
        server.url(shape),
    ]
    done = subprocess.run(
        command,
        env={"BENCH_BODY": str(body_file), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    if raw_log is not None:
        with raw_log.open("a") as out:
            out.write(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}\n")
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            result: dict[str, int] = json.loads(line[len("BENCH ") :])
            return result
    raise ServerFailure(f"wrk gave no result against {server.name}: {done.stdout}{done.stderr}")


def background_cpu(servers: list[Server], window: float = 1.0) -> float:
    """CPU used over `window` seconds by anything but our servers, in cores."""

    def ours() -> float:
        return sum(
            sum(cpu_seconds(s.process.tree()).values()) for s in servers if s.process is not None
        )

    busy, mine = machine_busy_seconds(), ours()
    time.sleep(window)
    return max(0.0, (machine_busy_seconds() - busy) - (ours() - mine)) / window


def wait_quiet(servers: list[Server], limit: float, max_wait: float) -> float:
    """Wait, at most `max_wait` seconds, until other work on the machine uses under `limit`
    cores; the background CPU last seen."""
    deadline = time.monotonic() + max_wait
    seen = background_cpu(servers)
    while seen > limit and time.monotonic() < deadline:
        seen = background_cpu(servers)
    return seen


def measure(
    wrk: str,
    server: Server,
    cell: str,
    shape: Shape,
    connections: int,
    body_file: Path,
    seconds: float,
    warmup: float,
    round_: int,
    raw_log: Path,
) -> Measure:
    if warmup > 0:
        run_wrk(wrk, server, shape, body_file, connections, warmup)
    assert server.process is not None
    tree_before = cpu_seconds(server.process.tree())
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    busy_before, wall_before = machine_busy_seconds(), time.monotonic()
    with RssSampler(server.process) as rss:
        r = run_wrk(wrk, server, shape, body_file, connections, seconds, raw_log)
    wall = time.monotonic() - wall_before
    busy = machine_busy_seconds() - busy_before
    tree_after = cpu_seconds(server.process.tree())
    server_cpu = sum(t - tree_before.get(pid, 0.0) for pid, t in tree_after.items())
    children, me = (
        resource.getrusage(resource.RUSAGE_CHILDREN),
        resource.getrusage(resource.RUSAGE_SELF),
    )
    wrk_cpu = (children.ru_utime + children.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    harness_cpu = (me.ru_utime + me.ru_stime) - (self_before.ru_utime + self_before.ru_stime)
    other = max(0.0, busy - server_cpu - wrk_cpu - harness_cpu)
    elapsed = r["duration_us"] / 1e6
    kinds = {k: r[k] for k in ("connect", "read", "write", "status", "timeout") if r[k]}
    good = max(0, r["requests"] - r["status"])
    rps = good / elapsed if elapsed > 0 else math.nan
    return Measure(
        server=server.name,
        cell=cell,
        round=round_,
        rows=shape.rows,
        connections=connections,
        seconds=round(elapsed, 2),
        requests=r["requests"],
        good=good,
        errors=sum(kinds.values()),
        rps=rps,
        rows_per_s=rps * shape.rows,
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        max_ms=r["max_us"] / 1000,
        peak_rss_mb=rss.peak / 2**20,
        server_cpu=round(server_cpu / wall, 2),
        wrk_cpu=round(wrk_cpu / wall, 2),
        other_cpu=round(other / wall, 2),
        error_kinds=kinds,
    )
