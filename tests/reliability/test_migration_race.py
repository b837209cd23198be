"""Three server pods starting at once against one fresh PostgreSQL all migrate it safely.

On Kubernetes every replica opens the registry as it starts, so a rollout of three pods on a
new database is three processes running the migrations at the same moment. refit holds a
PostgreSQL advisory lock around them: one migrates, the others wait, then find the schema at
head. No init step is needed.
"""

from __future__ import annotations

import multiprocessing
import sys
import traceback
from multiprocessing.synchronize import Barrier

from sqlalchemy import create_engine, inspect, text

from refit.registry import open_registry
from refit.registry.tables import Base
from servers import PostgresServer

PODS = 3


def _start_pod(url: str, barrier: Barrier) -> None:
    barrier.wait(30)  # all three open the registry at the same moment
    try:
        open_registry(url).close()
    except BaseException:
        traceback.print_exc()
        sys.exit(1)


def test_pods_starting_together_migrate_one_fresh_database_once(
    postgres_server: PostgresServer,
) -> None:
    name = postgres_server.create_database()
    try:
        url = postgres_server.tcp_url(name)  # over TCP, with a password, as a pod connects
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(PODS)
        pods = [context.Process(target=_start_pod, args=(url, barrier)) for _ in range(PODS)]
        for pod in pods:
            pod.start()
        for pod in pods:
            pod.join(120)
        assert [pod.exitcode for pod in pods] == [0] * PODS

        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                versions = connection.execute(text("SELECT version_num FROM alembic_version"))
                assert len(versions.all()) == 1  # one schema, at one revision
            tables = set(inspect(engine).get_table_names())
            assert tables == set(Base.metadata.tables) | {"alembic_version"}
        finally:
            engine.dispose()
        registry = open_registry(url)  # a fourth finds it at head and opens it as it is
        registry.close()
    finally:
        postgres_server.drop_database(name)
