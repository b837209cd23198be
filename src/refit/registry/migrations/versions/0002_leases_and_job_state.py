"""leases and job state; wider code revisions

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_state",
        sa.Column("project", sa.String(length=63), nullable=False),
        sa.Column("job", sa.String(length=32), nullable=False),
        sa.Column("last_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.String(length=16), nullable=False),
        sa.Column("last_message", sa.Text(), nullable=True),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("project", "job", name=op.f("pk_job_state")),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    # Room for a SHA-256 git commit with "-dirty".
    with op.batch_alter_table("model_versions") as batch:
        batch.alter_column(
            "code_revision", type_=sa.String(length=128), existing_type=sa.String(length=64)
        )


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.alter_column(
            "code_revision", type_=sa.String(length=64), existing_type=sa.String(length=128)
        )
    op.drop_table("leases")
    op.drop_table("job_state")
