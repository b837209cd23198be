"""The servers under test, each in its own wire format: how to start it, what one record and
a batch of records look like on its wire, and how to read its answer back into labels and
class probabilities.

| server     | single record                         | batch of N records                      |
|------------|---------------------------------------|-----------------------------------------|
| refit      | POST /predict {feature: value}        | POST /predict/batch {"records": [...]}  |
| refit-noop | the same, on a model that does nothing                                          |
| refit-nolog | the same as refit, with prediction logging off (`monitor.log: false`)          |
| fastapi-onnx, tutorial: the same as refit                                                     |
| asgi-floor | any POST: a constant JSON answer (not checked against the model)               |
| mlserver   | POST /v2/models/NAME/infer, V2 inference protocol, one input per feature,     |
|            | content type "pd" (shape [1] or [N]), outputs predict and predict_proba        |
| bentoml    | POST /predict {"records": [[30 values]]} | {"records": [[...], ...]} (N rows)   |
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.envs import PEERS, Env
from harness.servers import Process, base_environment, free_port

MODEL_NAME = "breast-cancer"

#: MLServer's adaptive batching: at most this many requests per batch, waiting at most this
#: long (seconds) for them.
MLSERVER_MAX_BATCH_SIZE = 64
MLSERVER_MAX_BATCH_TIME = 0.002

Records = list[dict[str, float]]
Answer = tuple[list[str], list[list[float]]]
Launch = tuple[list[str], Path, dict[str, str]]
"""A server's command line, working folder and extra environment."""


@dataclass(frozen=True)
class Shape:
    """A request shape: one record, or a batch of `rows` records."""

    name: str
    rows: int

    @property
    def batch(self) -> bool:
        return self.name == "batch"


SINGLE = Shape("single", 1)
BATCH = Shape("batch", 100)


ANSWERS = ("model", "noop", "constant")
"""What a server's answers are checked against: the model's own predictions, those of the
no-op model, or nothing (a constant answer: only its status counts)."""


@dataclass
class Server:
    """A server under test, once `start` has given it a port and a process."""

    name: str
    env: Env
    route: Callable[[Shape], str]
    body: Callable[[Records, Shape], bytes]
    read: Callable[[Any, Shape, list[str]], Answer]
    launch: Callable[[Server, Path, int], Launch]
    answers: str = "model"
    """One of `ANSWERS`."""
    batches: bool = True
    """Whether it is measured in the cells of many records (not the floor: no model)."""
    port: int = 0
    process: Process | None = None
    workers: int = 2

    def url(self, shape: Shape) -> str:
        return f"http://127.0.0.1:{self.port}{self.route(shape)}"

    def start(self, work: Path, logs: Path, workers: int) -> None:
        self.workers = workers
        self.port = free_port()
        command, cwd, env = self.launch(self, work, workers)
        self.process = Process(
            self.name, command, cwd, {**base_environment(), **env}, logs / f"{self.name}.log"
        )
        self.process.start()


# --- wire formats ---------------------------------------------------------------------------


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def records_body(records: Records, shape: Shape) -> bytes:
    if shape.batch:
        return _json({"records": records})
    return _json(records[0])


def read_records_answer(answer: Any, shape: Shape, classes: list[str]) -> Answer:
    if shape.batch:
        labels, probabilities = answer["predictions"], answer["probabilities"]
    else:
        labels, probabilities = [answer["prediction"]], [answer["probabilities"]]
    return [str(v) for v in labels], [[float(p[c]) for c in classes] for p in probabilities]


def v2_body(records: Records, shape: Shape) -> bytes:
    names = list(records[0])
    return _json(
        {
            "parameters": {"content_type": "pd"},
            "inputs": [
                {
                    "name": name,
                    "shape": [len(records)],
                    "datatype": "FP64",
                    "data": [r[name] for r in records],
                }
                for name in names
            ],
            "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
        }
    )


def read_v2_answer(answer: Any, shape: Shape, classes: list[str]) -> Answer:
    outputs = {o["name"]: o for o in answer["outputs"]}
    labels = [str(v) for v in outputs["predict"]["data"]]
    flat = [float(v) for v in outputs["predict_proba"]["data"]]
    k = len(classes)
    return labels, [flat[i : i + k] for i in range(0, len(flat), k)]


def rows_body(records: Records, shape: Shape) -> bytes:
    return _json({"records": [list(r.values()) for r in records]})


def read_rows_answer(answer: Any, shape: Shape, classes: list[str]) -> Answer:
    return [str(r["prediction"]) for r in answer], [[float(r[c]) for c in classes] for r in answer]


# --- launchers ------------------------------------------------------------------------------


def launch_refit(project: str, **env: str) -> Callable[[Server, Path, int], Launch]:
    def launch(server: Server, work: Path, workers: int) -> Launch:
        command = [
            server.env.bin("refit"),
            "serve",
            "-p",
            str(work / project),
            "--host",
            "127.0.0.1",
            "--port",
            str(server.port),
            "--workers",
            str(workers),
            "--no-access-log",
        ]
        return command, work, env

    return launch


def launch_tutorial(server: Server, work: Path, workers: int) -> Launch:
    command = [
        server.env.bin("uvicorn"),
        "app:app",
        "--app-dir",
        str(PEERS / "tutorial"),
        "--host",
        "127.0.0.1",
        "--port",
        str(server.port),
        "--workers",
        str(workers),
        "--no-access-log",
    ]
    return command, work, {"MODEL_PATH": str(work / "model.joblib")}


def launch_fastapi_onnx(server: Server, work: Path, workers: int) -> Launch:
    command = [
        server.env.bin("uvicorn"),
        "app:app",
        "--app-dir",
        str(PEERS / "fastapi_onnx"),
        *_uvicorn_options(server, workers),
    ]
    classes = json.loads((work / "expected.json").read_text())["classes"]
    return command, work, {"MODEL_PATH": str(work / "model.onnx"), "CLASSES": json.dumps(classes)}


def _uvicorn_options(server: Server, workers: int) -> list[str]:
    """uvicorn as refit runs it: uvloop, httptools, no access log."""
    return [
        "--host",
        "127.0.0.1",
        "--port",
        str(server.port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
    ]


def launch_asgi_floor(server: Server, work: Path, workers: int) -> Launch:
    command = [
        server.env.bin("uvicorn"),
        "app:app",
        "--app-dir",
        str(PEERS / "asgi_floor"),
        *_uvicorn_options(server, workers),
    ]
    return command, work, {}


def _granian(server: Server, target: str, workers: int, *extra: str) -> list[str]:
    """granian 2.x serving the ASGI app `target`: uvloop (its default loop measured slower
    here), a single-threaded Rust runtime per worker (as fast as the multi-threaded one at 64
    connections, faster at 1), HTTP/1.1, no websockets, access log off (its default)."""
    return [
        server.env.bin("granian"),
        "--interface",
        "asgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(server.port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--runtime-mode",
        "st",
        "--http",
        "1",
        "--no-ws",
        "--log-level",
        "warning",
        *extra,
        target,
    ]


def launch_asgi_floor_granian(server: Server, work: Path, workers: int) -> Launch:
    command = _granian(server, "app:app", workers, "--working-dir", str(PEERS / "asgi_floor"))
    return command, work, {}


def launch_refit_granian(project: str) -> Callable[[Server, Path, int], Launch]:
    """refit's own app factory under granian, with the environment `refit serve` gives its
    workers: the project, a fresh folder for the workers' shared metrics, no access log."""

    def launch(server: Server, work: Path, workers: int) -> Launch:
        metrics = work / f"metrics-{server.name}"
        shutil.rmtree(metrics, ignore_errors=True)
        metrics.mkdir(parents=True)
        command = _granian(server, "refit.serve.main:app_from_environment", workers, "--factory")
        env = {
            "REFIT_PROJECT": str(work / project),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics),
            "REFIT_SERVE__ACCESS_LOG": "false",
        }
        return command, work, env

    return launch


def launch_mlserver(server: Server, work: Path, workers: int) -> Launch:
    root = work / "mlserver"
    model = root / MODEL_NAME
    model.mkdir(parents=True, exist_ok=True)
    (model / "model.joblib").write_bytes((work / "model.joblib").read_bytes())
    settings = {
        "debug": False,  # no access log
        "host": "127.0.0.1",
        "http_port": server.port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": workers,
    }
    model_settings = {
        "name": MODEL_NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
        "max_batch_size": MLSERVER_MAX_BATCH_SIZE,
        "max_batch_time": MLSERVER_MAX_BATCH_TIME,
    }
    (root / "settings.json").write_text(json.dumps(settings, indent=2))
    (model / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    return [server.env.bin("mlserver"), "start", str(root)], root, {}


def launch_bentoml(server: Server, work: Path, workers: int) -> Launch:
    command = [
        server.env.bin("bentoml"),
        "serve",
        "service:BreastCancer",
        "--host",
        "127.0.0.1",
        "--port",
        str(server.port),
    ]
    env = {
        "BENCH_MODEL": str(work / "model.joblib"),
        "BENCH_WORKERS": str(workers),
        "BENTOML_HOME": str(work / "bentoml-home"),
        "BENTOML_DO_NOT_TRACK": "True",
    }
    return command, PEERS / "bentoml", env


def _refit_route(shape: Shape) -> str:
    return "/predict/batch" if shape.batch else "/predict"


def make_servers(envs: dict[str, Env], names: list[str]) -> list[Server]:
    """The servers named, in the order of `SERVERS`: refit first; the no-op refit is the floor
    of refit's own stack, the ASGI floor that of Python HTTP."""
    made = {
        "refit": lambda: Server(
            "refit",
            envs["refit"],
            _refit_route,
            records_body,
            read_records_answer,
            launch_refit("model"),
        ),
        "refit-nolog": lambda: Server(
            "refit-nolog",
            envs["refit"],
            _refit_route,
            records_body,
            read_records_answer,
            launch_refit("model", REFIT_MONITOR__LOG="false"),
        ),
        "refit-noop": lambda: Server(
            "refit-noop",
            envs["refit"],
            _refit_route,
            records_body,
            read_records_answer,
            launch_refit("noop"),
            answers="noop",
        ),
        "fastapi-onnx": lambda: Server(
            "fastapi-onnx",
            envs["fastapi_onnx"],
            _refit_route,
            records_body,
            read_records_answer,
            launch_fastapi_onnx,
        ),
        "asgi-floor": lambda: Server(
            "asgi-floor",
            envs["asgi_floor"],
            _refit_route,
            records_body,
            read_records_answer,
            launch_asgi_floor,
            answers="constant",
            batches=False,
        ),
        "tutorial": lambda: Server(
            "tutorial",
            envs["tutorial"],
            _refit_route,
            records_body,
            read_records_answer,
            launch_tutorial,
        ),
        "mlserver": lambda: Server(
            "mlserver",
            envs["mlserver"],
            lambda shape: f"/v2/models/{MODEL_NAME}/infer",
            v2_body,
            read_v2_answer,
            launch_mlserver,
        ),
        "bentoml": lambda: Server(
            "bentoml",
            envs["bentoml"],
            lambda shape: "/predict",
            rows_body,
            read_rows_answer,
            launch_bentoml,
        ),
        "refit-granian": lambda: Server(
            "refit-granian",
            envs["refit"],
            _refit_route,
            records_body,
            read_records_answer,
            launch_refit_granian("model"),
        ),
        "asgi-floor-granian": lambda: Server(
            "asgi-floor-granian",
            envs["asgi_floor"],
            _refit_route,
            records_body,
            read_records_answer,
            launch_asgi_floor_granian,
            answers="constant",
            batches=False,
        ),
    }
    return [made[name]() for name in SERVERS if name in names]


SERVERS = (
    "refit",
    "refit-nolog",
    "refit-noop",
    "fastapi-onnx",
    "asgi-floor",
    "tutorial",
    "mlserver",
    "bentoml",
    "refit-granian",
    "asgi-floor-granian",
)
QUICK_SERVERS = tuple(name for name in SERVERS if "granian" not in name)
"""The servers of `--quick`: all but the granian ones, which only the full run measures."""
ENV_OF = {
    "refit": "refit",
    "refit-nolog": "refit",
    "refit-noop": "refit",
    "fastapi-onnx": "fastapi_onnx",
    "asgi-floor": "asgi_floor",
    "tutorial": "tutorial",
    "mlserver": "mlserver",
    "bentoml": "bentoml",
    "refit-granian": "refit",
    "asgi-floor-granian": "asgi_floor",
}
PEER_NAMES = ("tutorial", "mlserver", "bentoml")
"""The peers that run the scikit-learn pipeline: the "best peer" of each cell is one of them."""
HAND_WRITTEN = "fastapi-onnx"
"""The strongest hand-written peer: the same ONNX graph as refit, under FastAPI."""
FLOOR = "asgi-floor"
"""The floor of Python HTTP on refit's server stack (uvicorn, uvloop, httptools)."""
COUNTERPARTS = {"refit-granian": "refit", "asgi-floor-granian": "asgi-floor"}
NO_LOG = "refit-nolog"
"""refit with prediction logging off: what logging costs is refit's figures against its."""
"""The servers run under granian, and the same app under uvicorn."""
