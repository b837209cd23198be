"""Fixtures shared by every test; the machinery behind them lives in `servers.py`."""

import os
from collections.abc import Iterator
from pathlib import Path

# One OpenMP thread: the tests run beside each other and beside servers on 2 cores, where
# scikit-learn's default thread pool spins against itself (3x slower, see FACTS.md).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from refit.registry import Registry, open_registry
from servers import (
    PostgresNotInstalled,
    PostgresServer,
    S3Location,
    S3Server,
    isolated_environment,
    running_postgres,
    running_s3,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No `REFIT_*` or libpq `PG*` variable and no real AWS credentials or config reach a test."""
    remove, put = isolated_environment(os.environ)
    for name in remove:
        monkeypatch.delenv(name)
    for name, value in put.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the whole session, on a Unix socket only."""
    try:
        with running_postgres() as server:
            yield server
    except PostgresNotInstalled as missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI must run the PostgreSQL tests, not skip them")
        pytest.skip(str(missing))


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A SQLAlchemy URL of a fresh, empty database, dropped after the test."""
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 endpoint on 127.0.0.1 for the whole session."""
    with running_s3() as server:
        yield server


@pytest.fixture
def s3_storage(s3_server: S3Server) -> S3Location:
    """A prefix in a fresh, empty bucket on the S3 endpoint."""
    return s3_server.create_location()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the servers they use, so `-m "not postgres"` needs no marker by hand."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if "postgres_server" in fixtures:
            item.add_marker(pytest.mark.postgres)
        if "s3_server" in fixtures:
            item.add_marker(pytest.mark.s3)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty registry database: a SQLite file, then a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'refit.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def registry(registry_url: str) -> Iterator[Registry]:
    """An open registry on each backend (see `registry_url`)."""
    registry = open_registry(registry_url)
    yield registry
    registry.close()
