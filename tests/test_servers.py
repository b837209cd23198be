"""The real-server fixtures work as integration tests expect."""

import os
import socket
import subprocess

import fsspec
import pytest
import sqlalchemy as sa

from servers import (
    PostgresServer,
    S3Location,
    free_port,
    isolated_environment,
    running_postgres,
)


def test_free_port_can_be_bound() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))


def test_isolated_environment_drops_refit_and_aws_settings() -> None:
    remove, put = isolated_environment(
        {
            "REFIT_REGISTRY__URL": "postgresql://prod",
            "AWS_PROFILE": "prod",
            "AWS_SESSION_TOKEN": "token",
            "AWS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt",
            "PGHOST": "db.example.com",
            "NO_PROXY": "example.com",
            "PATH": "/usr/bin",
        }
    )

    assert sorted(remove) == ["AWS_PROFILE", "AWS_SESSION_TOKEN", "PGHOST", "REFIT_REGISTRY__URL"]
    assert put["AWS_ACCESS_KEY_ID"] == "testing"
    assert put["AWS_EC2_METADATA_DISABLED"] == "true"
    assert put["NO_PROXY"] == "example.com,127.0.0.1,localhost"


def test_tests_run_with_the_isolated_environment() -> None:
    remove, put = isolated_environment(os.environ)

    assert remove == []
    assert {name: os.environ.get(name) for name in put} == put


def test_postgres_database_is_shared_between_connections(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE runs (id integer PRIMARY KEY, name text)"))
            conn.execute(sa.text("INSERT INTO runs VALUES (1, 'first')"))
        with engine.connect() as reader, engine.connect() as writer:
            writer.execute(sa.text("INSERT INTO runs VALUES (2, 'second')"))
            assert reader.execute(sa.text("SELECT count(*) FROM runs")).scalar_one() == 1
            writer.commit()
            names = reader.execute(sa.text("SELECT name FROM runs ORDER BY id")).scalars()
            assert list(names) == ["first", "second"]
    finally:
        engine.dispose()


def test_postgres_databases_are_fresh_per_test(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
            assert sa.inspect(conn).get_table_names() == []
    finally:
        engine.dispose()


def test_postgres_server_is_stopped_and_removed_after_an_error(
    postgres_server: PostgresServer,  # skips (or fails on CI) without PostgreSQL
) -> None:
    with pytest.raises(LookupError, match="a failing test"), running_postgres() as server:
        directory = server.socket_dir
        assert directory != postgres_server.socket_dir
        with server.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        raise LookupError("a failing test")

    assert not directory.exists()
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert str(directory) not in processes.stdout


def test_s3_objects_round_trip_through_s3fs(s3_storage: S3Location) -> None:
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3_storage.storage_options())
    path = f"{s3_storage.url.removeprefix('s3://')}/models/model.bin"
    fs.pipe_file(path, b"weights")

    assert fs.cat_file(path) == b"weights"
    assert fs.ls(f"{s3_storage.url}/models", detail=False) == [path]
    assert fs.ls(f"s3://{s3_storage.bucket}", detail=False) == [f"{s3_storage.bucket}/prefix"]
