"""Each version's manifest signature, and the heartbeats of the servers that serve a model

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("manifest_signature", sa.String(64), nullable=True))
    op.create_table(
        "servers",
        sa.Column("instance", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, index=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("refused_version", sa.Integer, nullable=True),
        sa.Column("refused_error", sa.Text, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("servers")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("manifest_signature")
