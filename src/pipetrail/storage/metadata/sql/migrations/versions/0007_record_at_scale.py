"""the record at scale: run counts per pipeline and status, a metric index that orders searches

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_stats",
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("runs", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("duration_sum", sa.Float(), nullable=False),
        sa.Column(
            "duration_count",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["pipeline_id"], ["pipeline.id"], name=op.f("fk_run_stats_pipeline_id_pipeline")
        ),
        sa.PrimaryKeyConstraint("pipeline_id", "status", name=op.f("pk_run_stats")),
    )
    # The runs already recorded, counted once here; every status change keeps it current.
    op.execute(
        "INSERT INTO run_stats (pipeline_id, status, runs, duration_sum, duration_count) "
        "SELECT pipeline_id, status, count(*), coalesce(sum(duration_s), 0), count(duration_s) "
        "FROM pipeline_run GROUP BY pipeline_id, status"
    )
    op.create_index(
        op.f("ix_latest_metric_name_value_run_id"), "latest_metric", ["name", "value", "run_id"]
    )
    op.drop_index(op.f("ix_latest_metric_name_value"), table_name="latest_metric")


def downgrade() -> None:
    op.create_index(op.f("ix_latest_metric_name_value"), "latest_metric", ["name", "value"])
    op.drop_index(op.f("ix_latest_metric_name_value_run_id"), table_name="latest_metric")
    op.drop_table("run_stats")
