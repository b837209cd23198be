"""The registry's database: engines, SQLite settings, migrations, and transactions.

SQLite is set up for several processes at once: WAL journal (readers never block the writer),
a busy timeout, and `BEGIN IMMEDIATE` for transactions that write, so two writers queue on
the lock instead of failing halfway with "database is locked". PostgreSQL needs none of this.

`Database` gives one session per transaction: `read()`, or `write()` for one that writes; a
database that fails on the way is a `StoreError`.

Migrations run automatically when the registry opens. When several processes start at once,
one of them migrates while the others wait on a lock (SQLite's write lock, a PostgreSQL
advisory lock), then find the schema already at head.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from refit.errors import NoRegistryError, StoreError

BUSY_TIMEOUT_MS = 30_000
WRITE = {"refit_write": True}
# Any fixed 64-bit number, the same in every refit process.
_MIGRATION_LOCK_KEY = 0x7265666974  # "refit"


class Database:
    """Transactions on the registry's database, each in a session of its own."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._reader = sessionmaker(engine, expire_on_commit=False)
        self._writer = sessionmaker(engine.execution_options(**WRITE), expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session in one transaction that only reads."""
        with self._reader() as session, session.begin(), _reachable(self.engine):
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session in one transaction that writes (SQLite: `BEGIN IMMEDIATE`), committed
        when the block ends without an error."""
        with self._writer() as session, session.begin(), _reachable(self.engine):
            yield session


def create_registry_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for a registry URL (`sqlite:///path` or `postgresql+psycopg://...`).

    A SQLite file (and its folder) is made only with `create`: without it, a file that does
    not exist is a `NoRegistryError`, and SQLite opens the file read-write, never creating it.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"not a database URL: {url!r}") from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        connect_args: dict[str, Any] = {"timeout": BUSY_TIMEOUT_MS / 1000}
        if database and database != ":memory:" and not database.startswith("file:"):
            if create:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            else:
                require_registry(url)
                # mode=rw: SQLite itself refuses to create the file, even if it vanished
                # since the check above.
                parsed = parsed.set(
                    database=f"file:{quote(database)}",
                    query={**parsed.query, "mode": "rw", "uri": "true"},
                )
        engine = create_engine(parsed, connect_args=connect_args)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True)
    raise StoreError(f"unsupported registry database {parsed.get_backend_name()!r}")


def require_registry(url: str) -> None:
    """Raise `NoRegistryError` if `url` names a SQLite file that does not exist."""
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return
    if database.startswith("file:") or Path(database).is_file():
        return
    raise NoRegistryError(
        f"there is no registry at {Path(database).absolute()} (storage.metadata_url "
        f"{url!r}): check the path for a typo, or make the registry with `refit ingest`"
    )


def _sqlite_on_connect(dbapi_connection: Any, record: Any) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite would defer it).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    write = connection.get_execution_options().get("refit_write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    config.attributes["connection"] = connection
    return config


def _at_head(connection: Connection, head: str | None) -> bool:
    return MigrationContext.configure(connection).get_current_revision() == head


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; safe to call from many processes at once."""
    try:
        with engine.connect() as probe:
            config = _alembic_config(probe)
            head = ScriptDirectory.from_config(config).get_current_head()
            if _at_head(probe, head):
                return
        with engine.execution_options(**WRITE).connect() as connection, connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                )
            # Holding the lock now: another process may have migrated while we waited.
            if not _at_head(connection, head):
                command.upgrade(_alembic_config(connection), "head")
    except OperationalError as exc:
        raise StoreError(f"cannot open the registry at {_safe(engine)}: {exc.orig}") from None
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot migrate the registry at {_safe(engine)}: {exc}") from None


@contextmanager
def _reachable(engine: Engine) -> Iterator[None]:
    try:
        yield
    except OperationalError as exc:
        raise StoreError(f"registry database {_safe(engine)} failed: {exc.orig}") from None


def _safe(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
