"""The migrations build exactly the schema the table classes declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from refit.registry import Registry
from refit.registry.tables import Base


def test_the_migrations_make_the_declared_schema(registry: Registry) -> None:
    with registry.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
