"""The model registry and the governance log as rows (RegistryStore)."""

from __future__ import annotations

from pipetrail.storage.metadata.sql.session import SqlSession

__all__ = ["ModelRows"]


class ModelRows(SqlSession):
    """Mixed into SqlMetadataStore."""
