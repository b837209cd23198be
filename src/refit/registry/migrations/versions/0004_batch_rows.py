"""The rows each ingest batch read, kept so a snapshot can be rebuilt

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ingest_batches") as batch:
        batch.add_column(sa.Column("rows_uri", sa.String(512), nullable=True))
        batch.add_column(sa.Column("rows_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ingest_batches") as batch:
        batch.drop_column("rows_sha256")
        batch.drop_column("rows_uri")
