"""refit's container image, built from the repository's Dockerfile and run as a user runs it.

The image is built with podman (see `containers.py`: no registry is reachable, so the base is
made locally under the Dockerfile's own name). A project image is the README's short `FROM`
plus `COPY`; its roles run with host networking against the tests' PostgreSQL (over TCP, with
a password) and S3 endpoint, configured by `REFIT_*` variables alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from containers import BUILD_TIMEOUT, Podman, PodmanNotInstalled, build_image, podman
from refit.apikeys import KEY_HASHES_ENV, Scope, key_line, new_key
from refit.examples import create_project
from refit.registry import open_registry
from servers import PostgresServer, S3Location, free_port

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/refit:test"
NAME = "breast-cancer"
READY_WITHIN = 120.0  # the server imports scikit-learn, then loads and warms up v1
ROLE_TIMEOUT = 300.0
SCHEDULED_WITHIN = 180.0  # the first ingest at once, then training on a busy machine

# On a fresh machine the first test builds the image (and its base): the timeout allows it.
pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(BUILD_TIMEOUT + 600)]


@pytest.fixture(scope="module")
def engine() -> Podman:
    """podman as the tests configure it."""
    try:
        return podman()
    except PodmanNotInstalled as missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI must build and run the image, not skip it")
        pytest.skip(str(missing))


@pytest.fixture(scope="module")
def refit_image(engine: Podman) -> str:
    """refit's image, built from the repository's Dockerfile (layers cached between runs)."""
    build_image(engine, ROOT, IMAGE)
    return IMAGE


def test_image_runs_refit_as_a_non_root_user_with_no_build_tools(
    engine: Podman, refit_image: str
) -> None:
    image = json.loads(engine("image", "inspect", refit_image).stdout)[0]
    config = image["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["refit"]
    assert image["Healthcheck"]["Test"][:2] == ["CMD", "python"]
    user = engine("run", "--rm", "--entrypoint=id", refit_image, "-u").stdout
    assert user.strip() == "10001"
    # As root, so that /root can be looked into: no compiler, no pip cache, no wheels left.
    leftovers = engine(
        "run",
        "--rm",
        "--user=0",
        "--entrypoint=sh",
        refit_image,
        "-c",
        "command -v gcc cc make curl; ls -d /root/.cache /home/refit/.cache /wheels /tmp/wheels"
        " 2>/dev/null;"
        " refit --help >/dev/null && echo refit-runs",
    )
    assert leftovers.stdout.split() == ["refit-runs"]


def test_image_holds_the_code_of_this_checkout(engine: Podman, refit_image: str) -> None:
    """Every Python file of the package in the image is the checkout's own (a stale layer
    cache would install an older wheel)."""
    listing = engine(
        "run",
        "--rm",
        "--entrypoint=python",
        refit_image,
        "-c",
        "import hashlib, pathlib, refit\n"
        "root = pathlib.Path(refit.__file__).parent\n"
        "for f in sorted(root.rglob('*.py')):\n"
        "    print(f.relative_to(root), hashlib.sha256(f.read_bytes()).hexdigest())",
    ).stdout
    source = ROOT / "src" / "refit"
    expected = {
        str(f.relative_to(source)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in source.rglob("*.py")
    }
    installed = dict(line.split() for line in listing.splitlines())
    assert installed == expected


@pytest.mark.parametrize(("command", "healthy"), [("serve", False), ("scheduler", True)])
def test_the_healthcheck_probes_the_server_of_a_serve_container_only(
    engine: Podman, refit_image: str, command: str, healthy: bool
) -> None:
    # A process that is not a server, named like the role: a `serve` container that does not
    # answer is unhealthy, a container of another role is healthy while it runs.
    container = f"refit-test-health-{uuid.uuid4().hex[:12]}"
    sleep = "import time; time.sleep(600)"
    engine(
        "run",
        "--detach",
        f"--name={container}",
        "--entrypoint=python",
        refit_image,
        *("-c", sleep, command),
    )
    try:
        probe = engine("healthcheck", "run", container, check=False)
        assert (probe.returncode == 0) is healthy, probe.stdout + probe.stderr
    finally:
        engine("rm", "--force", "--time=0", container, check=False)


@pytest.fixture
def project_image(engine: Podman, refit_image: str, tmp_path: Path) -> Iterator[str]:
    """A user's project image, as the README builds it: refit's image plus the project."""
    project = create_project(tmp_path / "project", NAME)
    (project / "Dockerfile").write_text(f"FROM {refit_image}\nCOPY . /project\n")
    (project / ".dockerignore").write_text(".refit\n")
    tag = f"localhost/refit-test-project:{uuid.uuid4().hex[:12]}"
    build_image(engine, project, tag)
    try:
        yield tag
    finally:
        engine("rmi", "--force", tag, check=False)


def storage_environment(
    postgres_server: PostgresServer, database: str, s3: S3Location
) -> list[str]:
    """`--env` options that point a container's roles at the tests' PostgreSQL and S3."""
    variables = {
        "REFIT_STORAGE__METADATA_URL": postgres_server.tcp_url(database),
        "REFIT_STORAGE__ARTIFACTS_URL": s3.url,
        "REFIT_STORAGE__S3__ENDPOINT_URL": s3.endpoint_url,
        "REFIT_STORAGE__S3__REGION": s3.region,
        "REFIT_STORAGE__S3__ACCESS_KEY_ID": s3.key,
        "REFIT_STORAGE__S3__SECRET_ACCESS_KEY": s3.secret,
    }
    return [f"--env={name}={value}" for name, value in variables.items()]


def wait_until_ready(engine: Podman, container: str, url: str) -> None:
    """Until `url` answers 200; fails at once with the logs if the container exits."""
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        running = engine("inspect", "--format={{.State.Running}}", container).stdout.strip()
        if running != "true":
            logs = engine("logs", container, check=False)
            raise AssertionError(f"the server exited:\n{logs.stdout}{logs.stderr}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    logs = engine("logs", container, check=False)
    raise AssertionError(f"not ready within {READY_WITHIN} s:\n{logs.stdout}{logs.stderr}")


def test_the_roles_run_from_one_image_on_postgres_and_s3(
    engine: Podman,
    project_image: str,
    postgres_server: PostgresServer,
    s3_storage: S3Location,
) -> None:
    database = postgres_server.create_database()
    container = f"refit-test-serve-{uuid.uuid4().hex[:12]}"
    try:
        storage = storage_environment(postgres_server, database, s3_storage)
        run = ["run", "--rm", "--network=host", *storage, project_image]

        ingested = engine(*run, "ingest", timeout=ROLE_TIMEOUT)
        assert "snapshot" in ingested.stdout + ingested.stderr
        trained = engine(*run, "train", timeout=ROLE_TIMEOUT)
        assert "promoted to production" in trained.stdout + trained.stderr

        # The registry the containers wrote is the one a process on the host reads.
        registry = open_registry(postgres_server.url(database))
        try:
            assert registry.alias_version(NAME) == 1
            snapshot = registry.latest_snapshot(NAME)
            assert snapshot is not None
            assert registry.get_version(NAME, 1).snapshot_id == snapshot.id
        finally:
            registry.close()

        port, key = free_port(), new_key()
        engine(
            "run",
            "--detach",
            f"--name={container}",
            "--network=host",
            *storage,
            f"--env=REFIT_SERVE__PORT={port}",
            # On 0.0.0.0, as the image says: the server takes keys, or refuses to start.
            f"--env={KEY_HASHES_ENV}={key_line(Scope.PREDICT, 'test', key)}",
            project_image,  # the image's command: serve
        )
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(engine, container, f"{url}/health/ready")
        record = json.loads(
            engine("run", "--rm", "--entrypoint=cat", project_image, "request.json").stdout
        )
        assert httpx.post(f"{url}/predict", json=record, timeout=30).status_code == 401
        bearer = {"Authorization": f"Bearer {key}"}
        reply = httpx.post(f"{url}/predict", json=record, headers=bearer, timeout=30)
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        assert (answer["model"], answer["version"]) == (NAME, 1)
        assert answer["prediction"] in {"benign", "malignant"}
        assert sum(answer["probabilities"].values()) == pytest.approx(1.0)

        # The image's HEALTHCHECK (Python, no curl) reaches the server on its configured port.
        assert engine("healthcheck", "run", container, check=False).returncode == 0

        # SIGTERM (docker stop, Kubernetes) drains the server, which exits 0.
        engine("stop", "--time=40", container, timeout=60)
        state = engine("inspect", "--format={{.State.ExitCode}}", container).stdout.strip()
        assert state == "0"
    finally:
        engine("rm", "--force", container, check=False)
        postgres_server.drop_database(database)


def test_the_scheduler_runs_from_the_image_and_stops_cleanly(
    engine: Podman,
    project_image: str,
    postgres_server: PostgresServer,
    s3_storage: S3Location,
) -> None:
    database = postgres_server.create_database()
    container = f"refit-test-scheduler-{uuid.uuid4().hex[:12]}"
    registry = open_registry(postgres_server.url(database))
    try:
        storage = storage_environment(postgres_server, database, s3_storage)
        engine(
            "run",
            "--detach",
            f"--name={container}",
            "--network=host",
            *storage,
            project_image,
            "scheduler",
        )
        # Its jobs, run as its own child processes inside the container, ingest and train.
        deadline = time.monotonic() + SCHEDULED_WITHIN
        while registry.alias_version(NAME) is None:
            running = engine("inspect", "--format={{.State.Running}}", container).stdout.strip()
            logs = engine("logs", container, check=False)
            assert running == "true", f"the scheduler exited:\n{logs.stdout}{logs.stderr}"
            assert time.monotonic() < deadline, f"nothing promoted:\n{logs.stdout}{logs.stderr}"
            time.sleep(1)
        assert registry.latest_snapshot(NAME) is not None

        engine("stop", "--time=40", container, timeout=60)
        state = engine("inspect", "--format={{.State.ExitCode}}", container).stdout.strip()
        assert state == "0"
    finally:
        registry.close()
        engine("rm", "--force", container, check=False)
        postgres_server.drop_database(database)
