"""Where one request's time goes: refit's app and the hand-written FastAPI + ONNX Runtime app,
each called in process with single-record predictions, timed, then profiled by layer.

    bench/run --profile                                   # setup, then this; profile.md
    bench/.venvs/refit/bin/python bench/profile.py WORK   # WORK: a run's work folder

WORK is a folder that `bench/run` prepared (`bench/results/latest/work`): the trained refit
project `model/`, its ONNX graph `model.onnx`, `records.json` and `expected.json`. Each app is
built as its server builds it (refit: `refit.serve.main:app_from_environment`, the factory
its uvicorn workers run, with `REFIT_PROJECT` set as `refit serve` sets it), its lifespan is
started, and then it is called directly as an ASGI app, one request after the other on a
uvloop event loop, with the scope uvicorn would give it. No sockets and no HTTP server: the
HTTP parsing and writing that uvicorn does is not in these figures, which is what the
benchmark's floor (`asgi-floor`) measures.

Printed (Markdown): microseconds per request without the profiler, then cProfile's time added
up by layer, and by role. A layer is a module's package (`starlette`, `fastapi`, `pydantic`,
the standard library's `asyncio`, ...), each of refit's modules on its own
(`refit.serve._json`, ...), or the library of a C function (ONNX Runtime's `run`, orjson's
`dumps`, numpy's); a C function of no library (`isinstance`, a dict's `get`) counts in the
layer that called it. Grouped by module, never by function name, the tables hold whatever
refit's functions are called. A layer's time is its own code's, not what it calls in other
layers. cProfile adds a cost to every Python call, so the profiled request is slower and layers
of many small calls weigh more than they do without it (ONNX Runtime's one call, less): the
role table scales the shares to the unprofiled time, an estimate.
"""

from __future__ import annotations

import os
import sys

# This file's folder leaves the import path: cProfile imports the standard library's
# `profile`, which this file's name would shadow.
sys.path = [p for p in sys.path if os.path.realpath(p or ".") != os.path.dirname(__file__)]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import cProfile  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import statistics  # noqa: E402
import sysconfig  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

BENCH = Path(__file__).resolve().parent
PEER_APP = BENCH / "peers" / "fastapi_onnx" / "app.py"
ASGIApp = Callable[..., Awaitable[None]]
Key = tuple[str, int, str]
DRIVER = "(this script: stands in for uvicorn)"

#: C functions that belong to a library, by a part of the name cProfile shows for them; any
#: other C function (isinstance, a dict's get, ...) counts in the layer that called it.
LIBRARY_BUILTINS = (
    ("onnxruntime", "onnxruntime"),
    ("orjson", "orjson"),
    ("numpy", "numpy"),
    ("pydantic_core", "pydantic"),
)

#: What each layer is, for the summary by role (a layer not named here: "other").
ROLES = {
    "starlette": "HTTP framework (starlette, fastapi, anyio)",
    "fastapi": "HTTP framework (starlette, fastapi, anyio)",
    "anyio": "HTTP framework (starlette, fastapi, anyio)",
    "onnxruntime": "the model (ONNX Runtime)",
    "numpy": "numpy",
    "orjson": "JSON (orjson, json)",
    "stdlib json": "JSON (orjson, json)",
    "pydantic": "pydantic",
    "prometheus_client": "metrics (prometheus_client)",
    "stdlib asyncio": "event loop (asyncio, uvloop)",
    "uvloop": "event loop (asyncio, uvloop)",
    DRIVER: DRIVER,
}


def role_of(layer: str) -> str:
    if layer.startswith("refit") or layer.startswith("the app's own"):
        return "the app's own code (refit.*, or app.py)"
    if layer in ROLES:
        return ROLES[layer]
    return "standard library (other)" if layer.startswith("stdlib ") else "other"


class App:
    """An ASGI app with its lifespan running, called the way uvicorn calls it."""

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app = app
        self.path = path
        self.state: dict[str, Any] = {}
        self._lifespan: asyncio.Task[None] | None = None
        self._messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        scope["state"] = self.state
        self._lifespan = asyncio.create_task(self.app(scope, self._messages.get, self._answers.put))
        await self._messages.put({"type": "lifespan.startup"})
        answer = await self._answers.get()
        if answer["type"] != "lifespan.startup.complete":
            raise SystemExit(f"the app did not start: {answer}")

    async def stop(self) -> None:
        await self._messages.put({"type": "lifespan.shutdown"})
        await self._answers.get()
        assert self._lifespan is not None
        await self._lifespan

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """One POST of `body`; the status and body of the answer."""
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000),
            "scheme": "http",
            "method": "POST",
            "root_path": "",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "headers": [
                (b"host", b"127.0.0.1:8000"),
                (b"user-agent", b"wrk"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "state": self.state.copy(),
        }
        done = asyncio.Event()
        read = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal read
            if not read:
                read = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()  # a client that stays until it has its answer
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    done.set()

        await self.app(scope, receive, send)
        return status, b"".join(chunks)


async def measure(app: App, body: bytes, requests: int) -> tuple[float, pstats.Stats]:
    """Microseconds per request without the profiler (the median of 5 runs of `requests`),
    then the stats of `requests` more under cProfile."""
    for _ in range(max(200, requests // 10)):  # warm-up
        await app.post(body)
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(requests):
            await app.post(body)
        runs.append((time.perf_counter() - start) / requests * 1e6)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        await app.post(body)
    profiler.disable()
    return statistics.median(runs), pstats.Stats(profiler)


def module_of(filename: str) -> str | None:
    """The dotted module name of a source file, from the import path; None if outside it."""
    path = os.path.realpath(filename)
    if path == os.path.realpath(__file__):
        return "__main__"
    best = ""
    for entry in sys.path:
        root = os.path.realpath(entry or ".")
        if path.startswith(root + os.sep) and len(root) > len(best):
            best = root
    if not best:
        return None
    parts = Path(path[len(best) + 1 :]).with_suffix("").parts
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


STDLIB = os.path.realpath(sysconfig.get_paths()["stdlib"])


def layer_of(key: Key, peer_file: str) -> str | None:
    """The layer of a profiled function; None for a C function of no library (it counts in
    its caller's layer)."""
    filename, _, name = key
    if filename == "~":
        for needle, owner in LIBRARY_BUILTINS:
            if needle in name:
                return owner
        return None
    if filename.startswith("<frozen "):  # the standard library's frozen modules: os, ...
        return f"stdlib {filename[len('<frozen ') : -1].split('.')[0].lstrip('_')}"
    if filename.startswith("<"):
        return "generated code (<string>)"  # dataclasses' and namedtuples' methods
    if os.path.realpath(filename) == peer_file:
        return "the app's own code (app.py)"
    module = module_of(filename)
    if module == "__main__":
        return DRIVER
    if module is None:
        return "other"
    parts = module.split(".")
    if parts[0] == "refit":
        return ".".join(parts[:3]) if parts[:2] == ["refit", "serve"] else ".".join(parts[:2])
    if parts[0] == "pydantic_core":
        return "pydantic"
    real = os.path.realpath(filename)
    if real.startswith(STDLIB + os.sep) and "site-packages" not in real:
        return f"stdlib {parts[0]}"
    return parts[0]


def by_layer(stats: pstats.Stats, peer_file: str) -> dict[str, float]:
    """Seconds of own time per layer: its functions' own time, and that of the C functions
    of no library that it called."""
    own: dict[str, float] = defaultdict(float)
    raw: dict[Key, Any] = stats.stats  # type: ignore[attr-defined]
    for key, (_, _, tt, _, callers) in raw.items():
        layer = layer_of(key, peer_file)
        if layer is not None:
            own[layer] += tt
            continue
        for caller, (_, _, caller_tt, _) in callers.items():
            own[layer_of(caller, peer_file) or "other"] += caller_tt
    return dict(own)


def tables(
    stats: pstats.Stats, requests: int, per_request: float, peer_file: str, rows: int
) -> str:
    layers = by_layer(stats, peer_file)
    total = sum(layers.values())
    ranked = sorted(layers.items(), key=lambda item: item[1], reverse=True)
    shown, rest = ranked[:rows], ranked[rows:]
    lines = ["| layer | µs/request under cProfile | share |", "|---|--:|--:|"]
    for layer, own in shown:
        lines.append(f"| {layer} | {own / requests * 1e6:.1f} | {own / total:.0%} |")
    if rest:
        own = sum(o for _, o in rest)
        lines.append(
            f"| {len(rest)} other layers | {own / requests * 1e6:.1f} | {own / total:.0%} |"
        )
    lines.append(f"| all | {total / requests * 1e6:.1f} | 100% |")
    roles: dict[str, float] = defaultdict(float)
    for layer, own in layers.items():
        roles[role_of(layer)] += own
    lines += [
        "",
        "| role | share | ≈ µs of the request without the profiler |",
        "|---|--:|--:|",
    ]
    for role, own in sorted(roles.items(), key=lambda item: item[1], reverse=True):
        lines.append(f"| {role} | {own / total:.0%} | {own / total * per_request:.0f} |")
    return "\n".join(lines)


def check(name: str, status: int, raw: bytes, expected: dict[str, Any]) -> None:
    """The app's answer to the first record must be the model's."""
    if status != 200:
        raise SystemExit(f"{name} answered {status}: {raw[:300]!r}")
    label = json.loads(raw)["prediction"]
    if label != expected["labels"][0]:
        raise SystemExit(f"{name} answered {label!r}, expected {expected['labels'][0]!r}")


def refit_app(work: Path) -> ASGIApp:
    os.environ["REFIT_PROJECT"] = str(work / "model")
    os.environ["REFIT_SERVE__ACCESS_LOG"] = "false"
    from refit.serve.main import app_from_environment

    app: ASGIApp = app_from_environment()
    return app


def peer_app(work: Path, expected: dict[str, Any]) -> ASGIApp:
    os.environ["MODEL_PATH"] = str(work / "model.onnx")
    os.environ["CLASSES"] = json.dumps(expected["classes"])
    spec = importlib.util.spec_from_file_location("fastapi_onnx_app", PEER_APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app: ASGIApp = module.app
    return app


async def profile(work: Path, requests: int, rows: int) -> str:
    records = json.loads((work / "records.json").read_text())
    expected = json.loads((work / "expected.json").read_text())
    body = json.dumps(records[0], separators=(",", ":")).encode()
    out = [
        f"In process, one record per request ({len(body)} bytes), {requests} requests after a "
        "warm-up, one after the other on a uvloop event loop; no sockets, no uvicorn. "
        f"Python {sys.version.split()[0]}, refit's environment for both apps.",
    ]
    totals = {}
    for name, make, peer_file in (
        ("refit", lambda: refit_app(work), ""),
        ("fastapi-onnx", lambda: peer_app(work, expected), os.path.realpath(PEER_APP)),
    ):
        print(f"profiling {name}", file=sys.stderr, flush=True)
        app = App(make(), "/predict")
        await app.start()
        check(name, *await app.post(body), expected)
        per_request, stats = await measure(app, body, requests)
        await app.stop()
        totals[name] = per_request
        out += [
            "",
            f"### {name}: {per_request:.1f} µs per request (without the profiler)",
            "",
            tables(stats, requests, per_request, peer_file, rows),
        ]
    ratio = totals["refit"] / totals["fastapi-onnx"]
    out += [
        "",
        f"refit takes {totals['refit']:.1f} µs per request in process, fastapi-onnx "
        f"{totals['fastapi-onnx']:.1f} µs: {ratio:.2f}x.",
    ]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path, help="a work folder of bench/run")
    parser.add_argument("--requests", type=int, default=3000, help="requests per measure")
    parser.add_argument("--rows", type=int, default=16, help="layers shown per table")
    args = parser.parse_args()
    work = args.work.resolve()
    if not (work / "model.onnx").is_file():
        parser.error(f"{work} is not a work folder of bench/run (no model.onnx)")
    for threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(threads, "1")
    import uvloop

    with tempfile.TemporaryDirectory(prefix="refit-metrics-") as metrics:
        # Before anything imports prometheus_client, as `refit serve` does for its workers.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics
        print(uvloop.run(profile(work, args.requests, args.rows)), end="")


if __name__ == "__main__":
    main()
