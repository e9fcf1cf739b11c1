"""streamed logs, spool offsets and the runner's lease

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("pipeline_run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease", sa.Integer(), nullable=False, server_default="1"))
    with op.batch_alter_table("block_run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("spool_offset", _ID, nullable=False, server_default="0"))
    op.create_table(
        "log_chunk",
        sa.Column("block_run_id", sa.Integer(), nullable=False),
        sa.Column("stream", sa.String(length=8), nullable=False),
        sa.Column("byte_offset", _ID, nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["block_run_id"], ["block_run.id"], name=op.f("fk_log_chunk_block_run_id_block_run")
        ),
        sa.PrimaryKeyConstraint("block_run_id", "stream", "byte_offset", name=op.f("pk_log_chunk")),
    )
    # Logs of finished tasks become one chunk each; nothing is appended to them any more.
    op.execute(
        "INSERT INTO log_chunk (block_run_id, stream, byte_offset, size, text) "
        "SELECT block_run_id, stream, 0, length(text), text FROM task_log"
    )
    op.drop_table("task_log")


def downgrade() -> None:
    op.create_table(
        "task_log",
        sa.Column("block_run_id", sa.Integer(), nullable=False),
        sa.Column("stream", sa.String(length=8), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["block_run_id"], ["block_run.id"], name=op.f("fk_task_log_block_run_id_block_run")
        ),
        sa.PrimaryKeyConstraint("block_run_id", "stream", name=op.f("pk_task_log")),
    )
    op.drop_table("log_chunk")
    with op.batch_alter_table("block_run", schema=None) as batch_op:
        batch_op.drop_column("spool_offset")
    with op.batch_alter_table("pipeline_run", schema=None) as batch_op:
        batch_op.drop_column("lease")
