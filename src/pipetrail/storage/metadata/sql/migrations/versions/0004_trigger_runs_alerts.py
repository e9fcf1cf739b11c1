"""what started a run (trigger, tick, upstream run), SLAs, tick launches, the alert outbox

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipetrail.storage.metadata.sql.types import JsonDoc, UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("pipeline_run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trigger_name", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("scheduled_at", UtcDateTime(), nullable=True))
        batch_op.add_column(sa.Column("upstream_run_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("sla_due_at", UtcDateTime(), nullable=True))
        batch_op.add_column(sa.Column("sla_state", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("sla_missed_at", UtcDateTime(), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_pipeline_run_upstream_run_id_pipeline_run"),
            "pipeline_run",
            ["upstream_run_id"],
            ["id"],
        )
        batch_op.create_index(
            op.f("ix_pipeline_run_trigger_name_created_at"), ["trigger_name", "created_at"]
        )
        batch_op.create_index(
            op.f("ix_pipeline_run_sla_state_sla_due_at"), ["sla_state", "sla_due_at"]
        )
        batch_op.create_index(op.f("ix_pipeline_run_finished_at"), ["finished_at"])
    with op.batch_alter_table("trigger", schema=None) as batch_op:
        batch_op.add_column(sa.Column("active_since", UtcDateTime(), nullable=True))
    triggers = sa.table("trigger", sa.column("active_since"), sa.column("created_at"))
    op.execute(triggers.update().values(active_since=triggers.c.created_at))
    with op.batch_alter_table("trigger_tick", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cause_run_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("launcher_host", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("launcher_pid", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("launches", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("note", sa.Text(), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_trigger_tick_cause_run_id_pipeline_run"),
            "pipeline_run",
            ["cause_run_id"],
            ["id"],
        )
        batch_op.create_unique_constraint(
            op.f("uq_trigger_tick_trigger_id_cause_run_id"), ["trigger_id", "cause_run_id"]
        )
    open_tick = sa.text("run_id IS NULL AND skip_reason IS NULL")
    op.create_index(
        "ix_trigger_tick_open",
        "trigger_tick",
        ["trigger_id"],
        sqlite_where=open_tick,
        postgresql_where=open_tick,
    )
    op.create_table(
        "alert",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("dedup_key", sa.String(length=300), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("notifier", sa.String(length=200), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("trigger_name", sa.String(length=200), nullable=True),
        sa.Column("payload", JsonDoc(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("claimed_until", UtcDateTime(), nullable=True),
        sa.Column("delivered_at", UtcDateTime(), nullable=True),
        sa.Column("failed_at", UtcDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["pipeline_run.id"], name=op.f("fk_alert_run_id_pipeline_run")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_alert_dedup_key")),
    )
    op.create_index(
        op.f("ix_alert_delivered_at_failed_at_next_attempt_at"),
        "alert",
        ["delivered_at", "failed_at", "next_attempt_at"],
    )
    op.create_index(op.f("ix_alert_run_id"), "alert", ["run_id"])
    op.create_index(
        op.f("ix_alert_trigger_name_created_at"), "alert", ["trigger_name", "created_at"]
    )
    op.create_table(
        "scheduler_cursor",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduler_cursor")),
    )
    op.create_table(
        "scheduler_instance",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("heartbeat_at", UtcDateTime(), nullable=False),
        sa.Column("stopped_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduler_instance")),
    )


def downgrade() -> None:
    op.drop_table("scheduler_instance")
    op.drop_table("scheduler_cursor")
    op.drop_index(op.f("ix_alert_trigger_name_created_at"), table_name="alert")
    op.drop_index(op.f("ix_alert_run_id"), table_name="alert")
    op.drop_index(op.f("ix_alert_delivered_at_failed_at_next_attempt_at"), table_name="alert")
    op.drop_table("alert")
    op.drop_index("ix_trigger_tick_open", table_name="trigger_tick")
    with op.batch_alter_table("trigger_tick", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("uq_trigger_tick_trigger_id_cause_run_id"), type_="unique")
        batch_op.drop_constraint(
            op.f("fk_trigger_tick_cause_run_id_pipeline_run"), type_="foreignkey"
        )
        for column in ("note", "launches", "launcher_pid", "launcher_host", "cause_run_id"):
            batch_op.drop_column(column)
    with op.batch_alter_table("trigger", schema=None) as batch_op:
        batch_op.drop_column("active_since")
    with op.batch_alter_table("pipeline_run", schema=None) as batch_op:
        batch_op.drop_index(op.f("ix_pipeline_run_finished_at"))
        batch_op.drop_index(op.f("ix_pipeline_run_sla_state_sla_due_at"))
        batch_op.drop_index(op.f("ix_pipeline_run_trigger_name_created_at"))
        batch_op.drop_constraint(
            op.f("fk_pipeline_run_upstream_run_id_pipeline_run"), type_="foreignkey"
        )
        for column in (
            "sla_missed_at",
            "sla_state",
            "sla_due_at",
            "upstream_run_id",
            "scheduled_at",
            "trigger_name",
        ):
            batch_op.drop_column(column)
