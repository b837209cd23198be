"""Virtual environments, one per server, and the load generator.

Each environment lives in `bench/.venvs/<name>` and is rebuilt only when what it was built
from changed: the peer's pinned `requirements.txt` (refit: its `constraints.txt` and the
repository's `pyproject.toml`) and the Python version. A stamp file inside the environment
holds the digest of those. They are built with uv (pinned in `bench/uv.txt`, installed from
PyPI with pip into `bench/.venvs/.uv`): from an empty cache it builds the MLServer
environment in ~10 s where pip takes over a minute, which is what lets `--quick` run in CI.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
PEERS = BENCH / "peers"
VENVS = BENCH / ".venvs"
STAMP = ".bench-stamp"
UV_PIN = BENCH / "uv.txt"

#: The distributions whose versions a report names, per environment.
SHOWN = {
    "refit": [
        "refit",
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "pydantic",
        "orjson",
        "onnxruntime",
        "skl2onnx",
        "scikit-learn",
        "numpy",
        "pandas",
        "granian",
    ],
    "fastapi_onnx": [
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "pydantic",
        "orjson",
        "onnxruntime",
        "numpy",
    ],
    "asgi_floor": ["uvicorn", "uvloop", "httptools", "granian"],
    "tutorial": [
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "pydantic",
        "scikit-learn",
    ],
    "mlserver": [
        "mlserver",
        "mlserver-sklearn",
        "fastapi",
        "uvicorn",
        "uvloop",
        "pydantic",
        "scikit-learn",
    ],
    "bentoml": ["bentoml", "starlette", "uvicorn", "pydantic", "scikit-learn"],
}


class SetupError(Exception):
    """Something the benchmark needs could not be installed or prepared."""


@dataclass(frozen=True)
class Env:
    name: str

    @property
    def path(self) -> Path:
        return VENVS / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def bin(self, program: str) -> str:
        return str(self.path / "bin" / program)

    def sources(self) -> list[Path]:
        if self.name == ".uv":
            return [UV_PIN]
        if self.name == "refit":
            return [
                PEERS / "refit" / "constraints.txt",
                PEERS / "refit" / "granian.txt",
                REPO / "pyproject.toml",
            ]
        return [PEERS / self.name / "requirements.txt"]

    def install_args(self) -> list[str]:
        if self.name == "refit":
            refit = PEERS / "refit"
            return [
                "-e",
                str(REPO),
                "-r",
                str(refit / "granian.txt"),
                "-c",
                str(refit / "constraints.txt"),
            ]
        return ["-r", str(PEERS / self.name / "requirements.txt")]

    def digest(self) -> str:
        h = hashlib.sha256(sys.version.encode())
        for source in self.sources():
            h.update(source.read_bytes())
        return h.hexdigest()

    def is_current(self) -> bool:
        stamp = self.path / STAMP
        return self.python.exists() and stamp.exists() and stamp.read_text() == self.digest()

    def ensure(self, log: Path, uv: Path | None) -> bool:
        """Build the environment unless it is current; True when it was (re)built. Without
        `uv`, with venv and pip (how the uv environment itself is made)."""
        if self.is_current():
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        with log.open("w") as out:
            if uv is None:
                steps = [
                    [sys.executable, "-m", "venv", str(self.path)],
                    [
                        str(self.python),
                        "-m",
                        "pip",
                        "install",
                        "--disable-pip-version-check",
                        "--no-input",
                        "-q",
                        "-r",
                        str(UV_PIN),
                    ],
                ]
            else:
                steps = [
                    [str(uv), "venv", "--quiet", "--python", sys.executable, str(self.path)],
                    [str(uv), "pip", "install", "--python", str(self.python), *self.install_args()],
                ]
            for step in steps:
                out.write(f"$ {' '.join(step)}\n")
                out.flush()
                done = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, check=False)
                if done.returncode != 0:
                    shutil.rmtree(self.path, ignore_errors=True)
                    tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
                    raise SetupError(f"building bench/.venvs/{self.name} failed:\n{tail}")
        (self.path / STAMP).write_text(self.digest())
        return True

    def versions(self) -> dict[str, str]:
        script = (
            "import importlib.metadata as m, json, sys\n"
            "out = {'python': sys.version.split()[0]}\n"
            f"for name in {SHOWN[self.name]!r}:\n"
            "    try: out[name] = m.version(name)\n"
            "    except m.PackageNotFoundError: out[name] = None\n"
            "print(json.dumps(out))\n"
        )
        done = subprocess.run(
            [str(self.python), "-c", script], capture_output=True, text=True, check=True
        )
        versions: dict[str, str] = json.loads(done.stdout)
        return {k: v for k, v in versions.items() if v is not None}


def ensure_envs(names: list[str], logs: Path, say: callable) -> dict[str, Env]:
    """Build the missing or outdated environments, in parallel."""
    tool = Env(".uv")
    if not tool.is_current():
        say("installing uv (pip install -r bench/uv.txt)")
        tool.ensure(logs / "venv-uv.log", None)
    uv = tool.path / "bin" / "uv"
    envs = {name: Env(name) for name in names}
    stale = [env for env in envs.values() if not env.is_current()]
    if stale:
        say(f"building environments: {', '.join(e.name for e in stale)} (logs in {logs})")
    with ThreadPoolExecutor(max_workers=max(1, len(stale))) as pool:
        futures = [pool.submit(env.ensure, logs / f"venv-{env.name}.log", uv) for env in stale]
        errors = []
        for future in futures:
            try:
                future.result()
            except SetupError as exc:
                errors.append(str(exc))
    if errors:
        raise SetupError("\n".join(errors))
    return envs


def ensure_wrk(say: callable) -> str:
    """The path of `wrk`, installed from Debian's packages if missing (needs root)."""
    found = shutil.which("wrk")
    if found:
        return found
    say("installing wrk (apt-get install wrk)")
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT, "check": False}
    if subprocess.run(install, **quiet).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], **quiet)
        if subprocess.run(install, **quiet).returncode != 0:
            raise SetupError("wrk is missing and `apt-get install wrk` failed (run as root?)")
    found = shutil.which("wrk")
    if not found:
        raise SetupError("wrk is still not on PATH after installing it")
    return found


def wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else ""
    return first.split(" [")[0].strip()
