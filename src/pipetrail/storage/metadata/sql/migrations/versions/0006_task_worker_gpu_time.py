"""a task's executor worker (a Dask worker's address) and its GPU seconds

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("block_run") as batch:
        batch.add_column(sa.Column("worker", sa.String(255)))
        batch.add_column(sa.Column("gpu_time_s", sa.Float()))


def downgrade() -> None:
    with op.batch_alter_table("block_run") as batch:
        batch.drop_column("gpu_time_s")
        batch.drop_column("worker")
