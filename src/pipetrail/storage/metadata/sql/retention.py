"""Deleting runs and finding what no run references, as rows."""

from __future__ import annotations

from pipetrail.storage.metadata.sql.session import SqlSession

__all__ = ["RetentionRows"]


class RetentionRows(SqlSession):
    """Mixed into SqlMetadataStore."""
