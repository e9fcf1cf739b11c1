"""SqlMetadataStore: core records to rows and back; SQLAlchemy errors become pipetrail errors."""

from __future__ import annotations

from sqlalchemy import delete

from pipetrail.storage.metadata.sql.metrics import MetricRows
from pipetrail.storage.metadata.sql.runs import RunRows
from pipetrail.storage.metadata.sql.tables import metadata
from pipetrail.storage.metadata.sql.tasks import TaskRows

__all__ = ["SqlMetadataStore"]


class SqlMetadataStore(RunRows, TaskRows, MetricRows):
    """The metadata store over SQLAlchemy: SQLite (embedded default) or PostgreSQL.

    Args:
        url: an SQLAlchemy URL.
        migrate_schema: bring the schema to the head revision first (workers skip it).
        write_patience_s: how long writes keep retrying while the store is unreachable.
        read_patience_s: the same for reads.
    """

    def delete_everything(self) -> None:
        """Drop every row: for tests that share a database between cases."""
        with self._write() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(delete(table))
