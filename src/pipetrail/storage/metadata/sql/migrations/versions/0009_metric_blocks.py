"""metric points in blocks: one row per series (run, task, name) per write, the points packed,
instead of one row per point; the stored points are moved into blocks in the order logged

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from pipetrail.storage.metadata.base import MetricRow
from pipetrail.storage.metadata.points import BlockRead, MetricColumns, unpack_blocks
from pipetrail.storage.metadata.sql.metrics import append_blocks, metric_blocks
from pipetrail.storage.metadata.sql.types import EpochTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: Points moved per statement: the conversion holds at most this many in memory.
_CHUNK = 50_000


def upgrade() -> None:
    op.create_table(
        "metric_block",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("block_run_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=250), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("first_step", _ID, nullable=True),
        sa.Column("last_step", _ID, nullable=True),
        sa.Column("first_time", EpochTime(), nullable=False),
        sa.Column("last_time", EpochTime(), nullable=False),
        sa.Column("first_position", sa.Integer(), nullable=False),
        sa.Column("position_stride", sa.Integer(), nullable=True),
        sa.Column("position_data", sa.LargeBinary(), nullable=True),
        sa.Column("value_data", sa.LargeBinary(), nullable=False),
        sa.Column("step_data", sa.LargeBinary(), nullable=True),
        sa.Column("step_missing", sa.LargeBinary(), nullable=True),
        sa.Column("time_data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["block_run_id"], ["block_run.id"], name=op.f("fk_metric_block_block_run_id_block_run")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["pipeline_run.id"], name=op.f("fk_metric_block_run_id_pipeline_run")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_block")),
    )
    op.create_index(
        op.f("ix_metric_block_run_id_name_id"), "metric_block", ["run_id", "name", "id"]
    )
    conn = op.get_bind()
    # In id order, the order they were stored: a stretch of one task's points is one write's
    # group (a stretch cut by a chunk's end is two, still in order).
    after = 0
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT id, run_id, block_run_id, name, value, step, timestamp FROM metric "
                "WHERE id > :after ORDER BY id LIMIT :n"
            ),
            {"after": after, "n": _CHUNK},
        ).all()
        if not rows:
            break
        after = rows[-1][0]
        points = [MetricRow(r[1], r[2], r[3], float(r[4]), r[5], float(r[6])) for r in rows]
        blocks, _ = metric_blocks(MetricColumns.of_rows(points))
        append_blocks(conn, blocks)
    op.drop_index(op.f("ix_metric_run_id_name_id"), table_name="metric")
    op.drop_table("metric")


def downgrade() -> None:
    op.create_table(
        "metric",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("block_run_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=250), nullable=False),
        sa.Column("step", _ID, nullable=True),
        sa.Column("timestamp", EpochTime(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["block_run_id"], ["block_run.id"], name=op.f("fk_metric_block_run_id_block_run")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["pipeline_run.id"], name=op.f("fk_metric_run_id_pipeline_run")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric")),
    )
    op.create_index(op.f("ix_metric_run_id_name_id"), "metric", ["run_id", "name", "id"])
    conn = op.get_bind()
    runs = conn.execute(sa.text("SELECT DISTINCT run_id FROM metric_block ORDER BY run_id"))
    insert = sa.text(
        "INSERT INTO metric (run_id, block_run_id, name, value, step, timestamp) "
        "VALUES (:run_id, :task_id, :name, :value, :step, :timestamp)"
    )
    for run_id in [r[0] for r in runs]:
        blocks = conn.execute(
            sa.text(
                "SELECT block_run_id, name, first_position, position_stride, position_data, "
                "value_data, step_data, step_missing, time_data FROM metric_block "
                "WHERE run_id = :run_id ORDER BY id"
            ),
            {"run_id": run_id},
        ).all()
        points = unpack_blocks(map(BlockRead.of_row, blocks), _row)
        for start in range(0, len(points), _CHUNK):
            conn.execute(
                insert,
                [
                    {"run_id": run_id, "task_id": task_id, **point}
                    for task_id, point in points[start : start + _CHUNK]
                ],
            )
    op.drop_index(op.f("ix_metric_block_run_id_name_id"), table_name="metric_block")
    op.drop_table("metric_block")


def _row(name: str, value: float, step: int | None, timestamp: float) -> dict[str, Any]:
    return {"name": name, "value": value, "step": step, "timestamp": timestamp}
