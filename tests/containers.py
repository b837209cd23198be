"""Container images for tests: podman with its own configuration and storage, and a local base.

No image registry is reachable from the test machines, so the base image that the Dockerfile
names (`python:3.11-slim-bookworm`) is made here when it is missing: Debian's own release
(`debootstrap --variant=minbase`, with python3, venv and CA certificates) imported under that
exact name, so the repository's Dockerfile is built unchanged. The base's root file system is
kept as a tarball, and podman's storage (the base and every cached layer) under `cache_dir()`,
so only the first run on a machine pays for them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PODMAN_MISSING = (
    "podman is not installed: apt-get install podman runc debootstrap (CI installs them)"
)

# The host's CA bundle, mounted over the build's own so that pip reaches the package index
# through whatever TLS the machine's network requires; Debian's pip reads this file.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

# What a build may take on a fresh machine (every dependency downloaded), with room for a
# busy machine; measured ~2 min for the build and ~40 s for debootstrap on 2 cores.
BUILD_TIMEOUT = 1500.0

_CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

_STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{graphroot}"
runroot = "{runroot}"
"""

_PYTHON_BASE = re.compile(r"(?:docker\.io/)?(?:library/)?python:(\d+\.\d+)-slim-([a-z]+)")


class PodmanNotInstalled(Exception):
    """No podman (or no runc) on this machine."""


def cache_dir() -> Path:
    """Where the tests keep what outlives a run: podman's storage and the base's tarball."""
    if os.geteuid() == 0:
        return Path("/var/cache/refit-tests")
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "refit-tests"


@dataclass(frozen=True)
class Podman:
    """The podman command with the tests' configuration and storage."""

    executable: str
    environment: Mapping[str, str]

    def __call__(
        self, *args: str, timeout: float = 120.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `podman ARGS...`; with `check`, a failure raises with podman's output."""
        result = subprocess.run(
            [self.executable, *args],
            env=dict(self.environment),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"podman {' '.join(args)} failed with exit code {result.returncode}:\n"
                f"{result.stdout[-4000:]}{result.stderr[-4000:]}"
            )
        return result


def podman() -> Podman:
    """podman configured for this machine (runc, cgroupfs, file events, low ulimits).

    Its storage is the tests' own, under `cache_dir()`, apart from the machine's images.
    Raises `PodmanNotInstalled` when podman or runc is missing.
    """
    executable = shutil.which("podman")
    if executable is None or shutil.which("runc") is None:
        raise PodmanNotInstalled(PODMAN_MISSING)
    home = cache_dir() / "podman"
    # The run root holds locks and state that must not outlive a reboot: a tmpfs when root.
    runroot = Path("/run/refit-tests-podman") if os.geteuid() == 0 else home / "run"
    tmp = home / "tmp"
    for folder in (home / "storage", runroot, tmp):
        folder.mkdir(parents=True, exist_ok=True)
    containers_conf = home / "containers.conf"
    storage_conf = home / "storage.conf"
    containers_conf.write_text(_CONTAINERS_CONF)
    storage_conf.write_text(_STORAGE_CONF.format(graphroot=home / "storage", runroot=runroot))
    environment = {
        **os.environ,
        "CONTAINERS_CONF": str(containers_conf),
        "CONTAINERS_STORAGE_CONF": str(storage_conf),
        "TMPDIR": str(tmp),  # big temporary files of builds, and buildah's cache mounts
    }
    return Podman(executable=executable, environment=environment)


def base_images(dockerfile: Path) -> list[str]:
    """The images a Dockerfile's stages start from (stage names excluded), in order."""
    stages: set[str] = set()
    bases: list[str] = []
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if match is None:
            continue
        image, stage = match.group(1), match.group(2)
        if image.lower() not in stages and image not in bases:
            bases.append(image)
        if stage:
            stages.add(stage.lower())
    return bases


def full_name(image: str) -> str:
    """An image reference as podman stores a pulled one: `python:3.11` is docker.io/library/."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if rest else f"docker.io/library/{image}"


def ensure_base_image(engine: Podman, image: str) -> None:
    """Make `image` (a `python:X.Y-slim-SUITE`) available locally, from Debian SUITE's python3.

    An image already in the storage is used as it is (a real one, if someone loaded it).
    """
    name = full_name(image)
    if engine("image", "exists", name, check=False).returncode == 0:
        return
    match = _PYTHON_BASE.fullmatch(image)
    if match is None:
        raise RuntimeError(f"{image}: only python:X.Y-slim-SUITE can be made without a registry")
    python, suite = match.groups()
    tarball = cache_dir() / "base" / f"{suite}-python{python}.tar"
    if not tarball.exists():
        _bootstrap(suite, python, tarball)
    engine("import", "--change", 'CMD ["python3"]', str(tarball), name, timeout=600)


def _bootstrap(suite: str, python: str, tarball: Path) -> None:
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        raise RuntimeError(
            f"making the base image needs root and debootstrap (apt-get install debootstrap); "
            f"or load a python:{python}-slim-{suite} image into the tests' podman storage"
        )
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent) as scratch:
        rootfs = Path(scratch) / "rootfs"
        _check_run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-pip,python3-venv,ca-certificates",
                suite,
                str(rootfs),
            ]
        )
        if not (rootfs / "usr" / "bin" / f"python{python}").exists():
            raise RuntimeError(f"Debian {suite}'s python3 is not Python {python}")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = tarball.with_suffix(".partial")
        _check_run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."])
        partial.rename(tarball)  # a run killed midway leaves no tarball that looks whole


def _check_run(command: list[str]) -> None:
    result = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed with exit code {result.returncode}:\n"
            f"{result.stdout[-4000:]}{result.stderr[-4000:]}"
        )


def build_image(engine: Podman, context: Path, tag: str) -> None:
    """Build `context`'s Dockerfile as `tag`, with every base made locally, nothing pulled.

    The host's network and CA bundle are lent to the build's RUN steps; neither is stored in
    the image.
    """
    for image in base_images(context / "Dockerfile"):
        ensure_base_image(engine, image)
    engine(
        "build",
        "--pull=never",
        "--format=docker",  # OCI image configs have no HEALTHCHECK
        "--network=host",
        f"--volume={HOST_CA_BUNDLE.resolve()}:/etc/ssl/certs/ca-certificates.crt:ro",
        f"--tag={tag}",
        str(context),
        timeout=BUILD_TIMEOUT,
    )
    # Untagged images older than a week: earlier builds' layers, so the cache stays bounded.
    engine("image", "prune", "--force", "--filter=until=168h", timeout=600)
