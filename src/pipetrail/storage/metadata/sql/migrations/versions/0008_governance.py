"""governance: the model registry (models, versions, aliases, policies, promotion requests and
decisions), the governance event log, named API tokens, and who caused a run event

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipetrail.storage.metadata.sql.types import JsonDoc, UtcDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("run_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("actor", sa.String(length=200), nullable=True))
    op.create_table(
        "registered_model",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registered_model")),
        sa.UniqueConstraint("name", name=op.f("uq_registered_model_name")),
    )
    op.create_table(
        "model_version",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("block_run_id", sa.Integer(), nullable=False),
        sa.Column("artifact_name", sa.String(length=300), nullable=False),
        sa.Column("artifact_key", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["registered_model.id"],
            name=op.f("fk_model_version_model_id_registered_model"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["pipeline_run.id"], name=op.f("fk_model_version_run_id_pipeline_run")
        ),
        sa.ForeignKeyConstraint(
            ["block_run_id"],
            ["block_run.id"],
            name=op.f("fk_model_version_block_run_id_block_run"),
        ),
        sa.ForeignKeyConstraint(
            ["artifact_key"], ["artifact.key"], name=op.f("fk_model_version_artifact_key_artifact")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_version")),
        sa.UniqueConstraint("model_id", "version", name=op.f("uq_model_version_model_id_version")),
    )
    op.create_index(op.f("ix_model_version_run_id"), "model_version", ["run_id"])
    op.create_index(op.f("ix_model_version_artifact_key"), "model_version", ["artifact_key"])
    op.create_table(
        "model_alias",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(length=100), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("moved_at", UtcDateTime(), nullable=False),
        sa.Column("moved_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["registered_model.id"],
            name=op.f("fk_model_alias_model_id_registered_model"),
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_version.id"],
            name=op.f("fk_model_alias_version_id_model_version"),
        ),
        sa.PrimaryKeyConstraint("model_id", "alias", name=op.f("pk_model_alias")),
    )
    op.create_table(
        "model_policy",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(length=100), nullable=False),
        sa.Column("approvers", sa.Integer(), nullable=False),
        sa.Column("set_at", UtcDateTime(), nullable=False),
        sa.Column("set_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["registered_model.id"],
            name=op.f("fk_model_policy_model_id_registered_model"),
        ),
        sa.PrimaryKeyConstraint("model_id", "alias", name=op.f("pk_model_policy")),
    )
    op.create_table(
        "promotion_request",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("required", sa.Integer(), nullable=False),
        sa.Column("requested_at", UtcDateTime(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("closed_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["registered_model.id"],
            name=op.f("fk_promotion_request_model_id_registered_model"),
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_version.id"],
            name=op.f("fk_promotion_request_version_id_model_version"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotion_request")),
    )
    op.create_index(op.f("ix_promotion_request_status_id"), "promotion_request", ["status", "id"])
    op.create_index(
        op.f("ix_promotion_request_model_id_id"), "promotion_request", ["model_id", "id"]
    )
    op.create_table(
        "promotion_decision",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["promotion_request.id"],
            name=op.f("fk_promotion_decision_request_id_promotion_request"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotion_decision")),
        sa.UniqueConstraint(
            "request_id", "actor", name=op.f("uq_promotion_decision_request_id_actor")
        ),
    )
    op.create_table(
        "governance_event",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=True),
        sa.Column("version_id", sa.Integer(), nullable=True),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("alias", sa.String(length=100), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("detail", JsonDoc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["registered_model.id"],
            name=op.f("fk_governance_event_model_id_registered_model"),
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_version.id"],
            name=op.f("fk_governance_event_version_id_model_version"),
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["promotion_request.id"],
            name=op.f("fk_governance_event_request_id_promotion_request"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_governance_event")),
    )
    op.create_index(op.f("ix_governance_event_model_id_id"), "governance_event", ["model_id", "id"])
    op.create_index(op.f("ix_governance_event_action_at"), "governance_event", ["action", "at"])
    op.create_index(op.f("ix_governance_event_run_id"), "governance_event", ["run_id"])
    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.Column("last_used_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_token")),
        sa.UniqueConstraint("name", name=op.f("uq_api_token_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_token_token_hash")),
    )


def downgrade() -> None:
    op.drop_table("api_token")
    op.drop_index(op.f("ix_governance_event_run_id"), table_name="governance_event")
    op.drop_index(op.f("ix_governance_event_action_at"), table_name="governance_event")
    op.drop_index(op.f("ix_governance_event_model_id_id"), table_name="governance_event")
    op.drop_table("governance_event")
    op.drop_table("promotion_decision")
    op.drop_index(op.f("ix_promotion_request_model_id_id"), table_name="promotion_request")
    op.drop_index(op.f("ix_promotion_request_status_id"), table_name="promotion_request")
    op.drop_table("promotion_request")
    op.drop_table("model_policy")
    op.drop_table("model_alias")
    op.drop_index(op.f("ix_model_version_artifact_key"), table_name="model_version")
    op.drop_index(op.f("ix_model_version_run_id"), table_name="model_version")
    op.drop_table("model_version")
    op.drop_table("registered_model")
    with op.batch_alter_table("run_event", schema=None) as batch_op:
        batch_op.drop_column("actor")
