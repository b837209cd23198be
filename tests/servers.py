"""Real servers for integration tests: a throwaway PostgreSQL and a moto S3 endpoint.

`tests/conftest.py` turns these into fixtures; test modules may import the value types
(`PostgresServer`, `S3Location`) from here for annotations, never from conftest.
"""

import contextlib
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from psycopg import sql
from werkzeug.serving import make_server

S3_KEY = "testing"
S3_SECRET = "testing"
S3_REGION = "us-east-1"

POSTGRES_MISSING = "PostgreSQL is not installed: apt-get install postgresql (CI installs it)"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- environment ---------------------------------------------------------------------------

# Values that keep boto3, botocore, aiobotocore and s3fs away from the developer's AWS account
# and from the EC2 metadata endpoint, which botocore otherwise probes with a timeout.
AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": S3_KEY,
    "AWS_SECRET_ACCESS_KEY": S3_SECRET,
    "AWS_DEFAULT_REGION": S3_REGION,
    "AWS_REGION": S3_REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}

_AWS_KEEP = {"AWS_CA_BUNDLE"}  # where the machine keeps its CA certificates, not a credential


def isolated_environment(environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The variables to remove and to set so a test never reads the developer's settings.

    Removes every `REFIT_*`, libpq `PG*` and `AWS_*` variable (but `AWS_CA_BUNDLE`), sets dummy
    AWS credentials, and keeps 127.0.0.1 off any HTTP proxy.
    """
    remove = [
        name
        for name in environ
        if name.startswith(("REFIT_", "PG"))
        or (name.startswith("AWS_") and name not in _AWS_KEEP and name not in AWS_ENVIRONMENT)
    ]
    put = dict(AWS_ENVIRONMENT)
    for name in ("NO_PROXY", "no_proxy"):
        hosts = [h for h in environ.get(name, "").split(",") if h]
        put[name] = ",".join([*hosts, *(h for h in ("127.0.0.1", "localhost") if h not in hosts)])
    return remove, put


# --- PostgreSQL ----------------------------------------------------------------------------


class PostgresNotInstalled(Exception):
    """No PostgreSQL server binaries on this machine."""


@dataclass(frozen=True)
class PostgresServer:
    """A running PostgreSQL server, as user postgres: its Unix socket (trusted) and 127.0.0.1.

    TCP, with `password`, is for clients that cannot reach the socket, such as containers.
    """

    socket_dir: Path
    port: int
    password: str
    user: str = "postgres"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        """An autocommit psycopg connection to `dbname`; close it (use `with`)."""
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=self.user,
            dbname=dbname,
            autocommit=True,
        )

    def url(self, dbname: str) -> str:
        """A SQLAlchemy URL for `dbname` (SQLAlchemy 2 with psycopg 3)."""
        return f"postgresql+psycopg://{self.user}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def tcp_url(self, dbname: str) -> str:
        """A SQLAlchemy URL for `dbname` over TCP on 127.0.0.1, with the password."""
        return f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """Create an empty database with a fresh name and return the name."""
        name = f"test_{uuid.uuid4().hex}"
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop `name`, ending any connection a test left open."""
        with self.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def postgres_bin_dir() -> Path:
    """The bin directory of the newest installed PostgreSQL (Debian layout first, then PATH)."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    debian = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")]
    if debian:
        return max(debian, key=version)
    on_path = shutil.which("pg_ctl")
    if on_path and (Path(on_path).parent / "postgres").exists():
        return Path(on_path).parent
    raise PostgresNotInstalled(POSTGRES_MISSING)


def _scratch_parent() -> str:
    # Not $TMPDIR: the postgres user must reach the directory, and a Unix socket path must stay
    # under ~100 bytes. tmpfs when it has room: there initdb takes 0.7 s instead of 1.8 s, and
    # CREATE DATABASE 0.05 s instead of 0.3 s, since the template's ~1,000 files are opened.
    shm = "/dev/shm"
    try:
        stat = os.statvfs(shm)
    except OSError:
        return "/tmp"
    if stat.f_bavail * stat.f_frsize >= 1 << 30 and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return "/tmp"


def _as_server_user(command: list[str]) -> list[str]:
    # initdb and pg_ctl refuse to run as root; the Debian package provides the postgres user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def _run(command: list[str], cwd: Path, *, check: bool = True) -> None:
    result = subprocess.run(
        _as_server_user(command),
        cwd=cwd,
        env={name: value for name, value in os.environ.items() if not name.startswith("PG")},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed with exit code {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL server in a temporary directory; stop and remove it after.

    Raises `PostgresNotInstalled` when there are no server binaries.
    """
    bin_dir = postgres_bin_dir()
    root = Path(tempfile.mkdtemp(prefix="refit-pg-", dir=_scratch_parent()))
    try:
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("as root, PostgreSQL must run as user postgres: none") from None
            os.chown(root, account.pw_uid, account.pw_gid)
        data = root / "data"
        log = root / "server.log"
        port = free_port()
        password = secrets.token_hex(16)
        password_file = root / "password"
        password_file.write_text(password)
        if os.geteuid() == 0:
            os.chown(password_file, account.pw_uid, account.pw_gid)
        _run(
            [
                str(bin_dir / "initdb"),
                "--pgdata",
                str(data),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={password_file}",
                "--username=postgres",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=root,
        )
        # Durability off; max_wal_size bounds the WAL that CREATE DATABASE (one per test) writes.
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c synchronous_commit=off "
            "-c max_wal_size=256MB"
        )
        pg_ctl = str(bin_dir / "pg_ctl")
        try:
            try:
                # -l: the server must not inherit our pipes, or reading pg_ctl's output never ends.
                _run([pg_ctl, "start", "-w", "-D", str(data), "-l", str(log), "-o", options], root)
            except RuntimeError as error:
                server_log = log.read_text(errors="replace") if log.exists() else ""
                raise RuntimeError(f"{error}\nserver log:\n{server_log}") from None
            yield PostgresServer(socket_dir=root, port=port, password=password)
        finally:
            # Not checked: a server that already died must not hide the error that killed it.
            _run([pg_ctl, "stop", "-m", "immediate", "-w", "-D", str(data)], root, check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- S3 ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Location:
    """A prefix in a fresh bucket on the test S3 endpoint, with the credentials to reach it."""

    url: str
    endpoint_url: str
    key: str = S3_KEY
    secret: str = S3_SECRET
    region: str = S3_REGION

    @property
    def bucket(self) -> str:
        return self.url.removeprefix("s3://").split("/", 1)[0]

    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments for `fsspec.filesystem("s3", **...)`."""
        return {
            "key": self.key,
            "secret": self.secret,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": self.region},
        }


@dataclass(frozen=True)
class S3Server:
    """A running S3-compatible endpoint (moto) on 127.0.0.1."""

    endpoint_url: str

    def create_location(self) -> S3Location:
        """Create an empty bucket with a fresh name; the location is a prefix inside it."""
        bucket = f"test-{uuid.uuid4().hex}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            region_name=S3_REGION,
        )
        try:
            client.create_bucket(Bucket=bucket)
        finally:
            client.close()
        return S3Location(url=f"s3://{bucket}/prefix", endpoint_url=self.endpoint_url)


class _S3RequestHandler(MotoRequestHandler):
    def send_header(self, keyword: str, value: str) -> None:
        # moto answers with its own "server: amazon.com"; a second Server header from
        # http.server makes strict parsers (aiohttp under `python -X dev`) reject the response.
        if keyword.lower() == "server" and value == self.version_string():
            return
        super().send_header(keyword, value)


@contextlib.contextmanager
def running_s3() -> Iterator[S3Server]:
    """Run moto's S3 server in a thread on a free port of 127.0.0.1; stop it after.

    The same server as `moto.server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)`,
    whose request handler cannot be replaced to drop the duplicate Server header.
    """
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_S3RequestHandler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="moto-s3", daemon=True
    )
    thread.start()
    try:
        yield S3Server(endpoint_url=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()  # serve_forever closes the listening socket on its way out
        thread.join()
