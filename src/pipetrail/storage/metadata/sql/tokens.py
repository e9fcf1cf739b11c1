"""Named API tokens as rows (TokenStore)."""

from __future__ import annotations

from pipetrail.storage.metadata.sql.session import SqlSession

__all__ = ["TokenRows"]


class TokenRows(SqlSession):
    """Mixed into SqlMetadataStore."""
