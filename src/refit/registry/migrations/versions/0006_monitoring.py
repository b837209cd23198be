"""The monitor: prediction logs, monitor reports, training requests, each run's cause, each
version's holdout reference, and since when each server serves its version

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("training_runs") as batch:
        batch.add_column(sa.Column("cause", sa.Text, nullable=True))
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("reference", sa.JSON, nullable=True))
    with op.batch_alter_table("servers") as batch:
        batch.add_column(sa.Column("serving_since", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "prediction_logs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("instance", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("uri", sa.String(512), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "monitor_reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("versions", sa.JSON, nullable=False),
        sa.Column("drifted", sa.JSON, nullable=False),
        sa.Column("drift", sa.JSON, nullable=False),
        sa.Column("quality", sa.JSON, nullable=False),
        sa.Column("cause", sa.Text, nullable=True),
    )
    op.create_table(
        "train_requests",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("cause", sa.Text, nullable=False),
        sa.Column(
            "report_id",
            sa.Integer,
            sa.ForeignKey("monitor_reports.id", name="fk_train_requests_report_id_monitor_reports"),
            nullable=True,
        ),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("train_requests")
    op.drop_table("monitor_reports")
    op.drop_table("prediction_logs")
    with op.batch_alter_table("servers") as batch:
        batch.drop_column("serving_since")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("reference")
    with op.batch_alter_table("training_runs") as batch:
        batch.drop_column("cause")
