"""SqlMetadataStore: core records to rows and back; SQLAlchemy errors become pipetrail errors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, update

from pipetrail.core.model import RunRecord
from pipetrail.storage.metadata.base import SpoolBatch
from pipetrail.storage.metadata.retention import KEEP_TAG
from pipetrail.storage.metadata.sql.bulk import BulkRows
from pipetrail.storage.metadata.sql.engine import Prepared, upsert
from pipetrail.storage.metadata.sql.metrics import MetricRows
from pipetrail.storage.metadata.sql.models import ModelRows
from pipetrail.storage.metadata.sql.retention import RetentionRows
from pipetrail.storage.metadata.sql.session import now, patient
from pipetrail.storage.metadata.sql.tables import block_run, log_chunk, metadata, run_tag
from pipetrail.storage.metadata.sql.tasks import TaskRows
from pipetrail.storage.metadata.sql.tokens import TokenRows
from pipetrail.storage.metadata.sql.triggers import TriggerRows
from pipetrail.storage.metadata.sql.watch import WatchRows

__all__ = ["SqlMetadataStore"]

_SPOOL_OFFSET = Prepared(
    update(block_run)
    .where(block_run.c.id == bindparam("task_id"))
    .values(spool_offset=bindparam("offset"))
)


class SqlMetadataStore(
    WatchRows, BulkRows, TaskRows, MetricRows, TriggerRows, ModelRows, TokenRows, RetentionRows
):
    """The metadata store over SQLAlchemy: SQLite (embedded default) or PostgreSQL.

    Args:
        url: an SQLAlchemy URL.
        migrate_schema: bring the schema to the head revision first (workers skip it).
        write_patience_s: how long writes keep retrying while the store is unreachable.
        read_patience_s: the same for reads.
    """

    @patient("write")
    def start_run(
        self,
        run_id: int,
        steps: Sequence[tuple[str, int, int]],
        limit: int | None,
        *,
        trigger_limit: int | None = None,
    ) -> tuple[dict[tuple[str, int, int], int], datetime | None]:
        """Create a run's first task attempts and take its slot, in one transaction.

        Returns the tasks' ids (as ``create_tasks``) and when the run started (its
        ``started_at``, also its ``heartbeat_at``), or None when it has to wait for a slot
        (``claim_slot`` takes it later, as it does here). A run taken from this runner raises
        LeaseLostError and nothing is written.
        """
        with self._write() as conn:
            started = self._claim(conn, run_id, limit, trigger_limit)
            ids = self._insert_tasks(conn, run_id, steps) if steps else {}
            return ids, started

    @patient("write")
    def record_spool(self, batch: SpoolBatch) -> None:
        """Move one drain of a task's spool into the store, in one transaction.

        Metric points and the spool offset they reach are written together, so a drain that
        is repeated after a crash starts where the stored one ended; a log chunk already
        stored at its offset is skipped. Fenced by the run's lease like every task write.
        """
        with self._write() as conn:
            self._check_lease(conn, batch.run_id)
            self._record_batch(conn, batch)

    def _record_batch(self, conn: Connection, batch: SpoolBatch) -> None:
        """record_spool's rows, in the caller's transaction (the run's lease checked)."""
        if batch.metrics:
            self._insert_metrics(conn, batch.metrics, fenced={batch.run_id})
        if batch.offset is not None:
            _SPOOL_OFFSET.run(conn, {"task_id": batch.task_id, "offset": batch.offset})
        rows = [
            {
                "block_run_id": batch.task_id,
                "stream": c.stream,
                "byte_offset": c.offset,
                "size": c.size,
                "text": c.text,
            }
            for c in batch.logs
        ]
        upsert(conn, log_chunk, rows, ["block_run_id", "stream", "byte_offset"])
        self._links(conn, batch.run_id, batch.task_id, batch.links, now())
        tags = [{"run_id": batch.run_id, "tag": t, "system": False} for t in batch.tags]
        upsert(conn, run_tag, tags, ["run_id", "tag"])

    def change_tags(
        self,
        run_id: int,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        actor: str | None = None,
    ) -> RunRecord:
        """Remove then add user tags of a run, in one transaction; see ``RunRows.change_tags``.

        A change that names the protected tag ``keep`` goes through ``change_kept_tags``,
        which also writes a governance event when the run gains or loses it.
        """
        add, remove = tuple(add), tuple(remove)
        if KEEP_TAG in add or KEEP_TAG in remove:
            self.change_kept_tags(run_id, add=add, remove=remove, actor=actor)
            return self.get_run(run_id)
        return super().change_tags(run_id, add=add, remove=remove, actor=actor)

    def delete_everything(self) -> None:
        """Drop every row: for tests that share a database between cases."""
        with self._write() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(delete(table))
