"""Alembic environment and the one version tree of the metadata store."""
