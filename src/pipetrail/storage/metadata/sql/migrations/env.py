"""Alembic environment: migrates the connection handed over by ``migrate.upgrade``."""

from __future__ import annotations

from alembic import context

from pipetrail.storage.metadata.sql.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("pipetrail migrations run through pipetrail's store, not the alembic CLI")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
