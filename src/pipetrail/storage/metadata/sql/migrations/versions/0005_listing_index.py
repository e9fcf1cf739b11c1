"""a pipeline's runs newest first from an index (keyset pages on id)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_pipeline_run_pipeline_id_id"), "pipeline_run", ["pipeline_id", "id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_pipeline_run_pipeline_id_id"), table_name="pipeline_run")
