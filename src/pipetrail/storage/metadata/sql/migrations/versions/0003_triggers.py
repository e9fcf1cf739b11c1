"""triggers and the ticks the scheduler claimed

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipetrail.storage.metadata.sql.types import JsonDoc, UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "trigger",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("pipeline_file", sa.Text(), nullable=False),
        sa.Column("pipeline_name", sa.String(length=200), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=True),
        sa.Column("interval_s", sa.Float(), nullable=True),
        sa.Column("start_at", UtcDateTime(), nullable=True),
        sa.Column("end_at", UtcDateTime(), nullable=True),
        sa.Column("once_at", UtcDateTime(), nullable=True),
        sa.Column("after_pipeline", sa.String(length=200), nullable=True),
        sa.Column("after_on", sa.String(length=16), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("params", JsonDoc(), nullable=False),
        sa.Column("variables", JsonDoc(), nullable=False),
        sa.Column("tags", JsonDoc(), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=True),
        sa.Column("on_timeout", sa.String(length=16), nullable=True),
        sa.Column("sla_s", sa.Float(), nullable=True),
        sa.Column("max_concurrent", sa.Integer(), nullable=True),
        sa.Column("overlap", sa.String(length=8), nullable=False),
        sa.Column("catchup", sa.String(length=8), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trigger")),
        sa.UniqueConstraint("name", name=op.f("uq_trigger_name")),
    )
    op.create_table(
        "trigger_tick",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("trigger_id", sa.Integer(), nullable=False),
        sa.Column("scheduled_at", UtcDateTime(), nullable=False),
        sa.Column("claimed_at", UtcDateTime(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("skip_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["trigger_id"], ["trigger.id"], name=op.f("fk_trigger_tick_trigger_id_trigger")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["pipeline_run.id"], name=op.f("fk_trigger_tick_run_id_pipeline_run")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trigger_tick")),
        sa.UniqueConstraint(
            "trigger_id", "scheduled_at", name=op.f("uq_trigger_tick_trigger_id_scheduled_at")
        ),
    )


def downgrade() -> None:
    op.drop_table("trigger_tick")
    op.drop_table("trigger")
