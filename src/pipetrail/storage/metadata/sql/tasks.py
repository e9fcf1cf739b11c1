"""Task attempts (block runs) in the SQL store: statuses, outcomes, logs, reuse and lineage links."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, exists, func, insert, select, update

from pipetrail.core.model import ArtifactLink, ArtifactRecord, TaskRecord
from pipetrail.core.status import TaskStatus, check_task_transition, transition_path
from pipetrail.errors import NotFoundError
from pipetrail.storage.metadata.base import LogChunk, NewLink, SpoolBatch, TaskOutcome
from pipetrail.storage.metadata.sql.engine import Prepared, for_update, insert_ignore, upsert
from pipetrail.storage.metadata.sql.session import SqlSession, patient
from pipetrail.storage.metadata.sql.session import now as _now
from pipetrail.storage.metadata.sql.tables import (
    artifact,
    artifact_link,
    block_run,
    log_chunk,
    pipeline_run,
    run_event,
    run_tag,
)

__all__ = ["TaskRows"]

_EVENT_COLUMNS = ("run_id", "block_run_id", "kind", "status", "previous", "at", "message")
_INSERT_EVENT = Prepared(insert(run_event).values({c: bindparam(c) for c in _EVENT_COLUMNS}))
_LINK_COLUMNS = (
    "run_id",
    "block_run_id",
    "direction",
    "name",
    "kind",
    "artifact_key",
    "source_uri",
    "producer_block_run_id",
)
_INSERT_LINK = Prepared(insert(artifact_link).values({c: bindparam(c) for c in _LINK_COLUMNS}))
_ARTIFACT_COLUMNS = ("key", "size", "serializer", "content_type", "type_name", "created_at")
_INSERT_ARTIFACT = Prepared(insert_ignore(artifact, _ARTIFACT_COLUMNS))
_END_COLUMNS = (
    "status",
    "started_at",
    "finished_at",
    "duration_s",
    "cpu_time_s",
    "peak_memory_bytes",
    "gpu_peak_memory_bytes",
    "gpu_time_s",
    "exception_type",
    "exception_message",
    "traceback",
    "allowed_failure",
    "note",
)
_START_COLUMNS = ("host", "pid", "worker")
_NEW_TASK_COLUMNS = (
    "run_id",
    "step",
    "task_index",
    "attempt",
    "status",
    "created_at",
    "allowed_failure",
    "spool_offset",
)
#: One new task attempt (the common case: a one-step run, a retry), its id returned.
_INSERT_TASK = Prepared(
    insert(block_run).values({c: bindparam(c) for c in _NEW_TASK_COLUMNS}).returning(block_run.c.id)
)


def _finish_statements(condition: Any) -> tuple[Prepared, Prepared]:
    """A task's end as an UPDATE built once (without, with the start columns), parameters
    ``v_<column>`` and ``b_id``, plus ``condition``'s."""
    built = []
    for columns in (_END_COLUMNS, _END_COLUMNS + _START_COLUMNS):
        stmt = update(block_run).where(block_run.c.id == bindparam("b_id"))
        if condition is not None:
            stmt = stmt.where(condition)
        built.append(Prepared(stmt.values({c: bindparam(f"v_{c}") for c in columns})))
    return built[0], built[1]


def _end_path(current: TaskStatus, outcome: TaskOutcome) -> list[TaskStatus]:
    """The statuses a task's end records: with a start written only now (deferred), the
    ``queued`` and ``running`` it went through first."""
    if outcome.start is not None and current in (TaskStatus.INITIAL, TaskStatus.QUEUED):
        lead = [TaskStatus.RUNNING]
        if current is TaskStatus.INITIAL:
            lead.insert(0, TaskStatus.QUEUED)
        return lead + transition_path(TaskStatus.RUNNING, outcome.status)
    return transition_path(current, outcome.status)


_FINISH = _finish_statements(None)
_FINISH_FROM = _finish_statements(block_run.c.status == bindparam("b_from"))
_FINISH_FENCED = _finish_statements(
    and_(
        block_run.c.status == bindparam("b_from"),
        exists().where(
            pipeline_run.c.id == bindparam("b_run"), pipeline_run.c.lease == bindparam("b_lease")
        ),
    )
)


class TaskRows(SqlSession):
    """The task half of the metadata store."""

    @patient("write")
    def create_tasks(
        self, run_id: int, steps: Sequence[tuple[str, int, int]]
    ) -> dict[tuple[str, int, int], int]:
        """Create task attempts in ``initial``; ``steps`` are (step, task_index, attempt) keys."""
        if not steps:
            return {}
        with self._write() as conn:
            self._check_lease(conn, run_id)
            return self._insert_tasks(conn, run_id, steps)

    def _insert_tasks(
        self, conn: Connection, run_id: int, steps: Sequence[tuple[str, int, int]]
    ) -> dict[tuple[str, int, int], int]:
        """create_tasks' rows, in the caller's transaction (its lease checked already)."""
        now = _now()
        rows = [
            {
                "run_id": run_id,
                "step": step,
                "task_index": index,
                "attempt": attempt,
                "status": TaskStatus.INITIAL.value,
                "created_at": now,
                "allowed_failure": False,
                "spool_offset": 0,
            }
            for step, index, attempt in steps
        ]
        created: Sequence[Any]
        if len(rows) == 1:
            created = [_INSERT_TASK.scalar(conn, rows[0])]
        else:
            # One statement for all rows; ids come back in the order the rows were given.
            created = (
                conn.execute(
                    insert(block_run).returning(block_run.c.id, sort_by_parameter_order=True), rows
                )
                .scalars()
                .all()
            )
        ids = {key: int(task_id) for key, task_id in zip(steps, created, strict=True)}
        _INSERT_EVENT.run_many(
            conn,
            [
                {
                    "run_id": run_id,
                    "block_run_id": i,
                    "kind": "status",
                    "status": TaskStatus.INITIAL.value,
                    "previous": None,
                    "at": now,
                    "message": None,
                }
                for i in ids.values()
            ],
        )
        return ids

    @patient("write")
    def set_task_status(
        self,
        task_id: int,
        status: TaskStatus,
        *,
        message: str | None = None,
        failed_upstream: str | None = None,
        host: str | None = None,
        pid: int | None = None,
        worker: str | None = None,
        at: datetime | None = None,
        if_pending: bool = False,
    ) -> bool:
        """Move a task through one or more statuses up to ``status``, each an event.

        Args:
            at: when it happened (a start recorded after the fact); default now.
            if_pending: write only while the task is still ``initial`` or ``queued``, else
                do nothing (a deferred start that its task's end overtook).

        Returns:
            Whether anything was written.
        """
        with self._write() as conn:
            run_id, current = self._task_state(conn, task_id)
            if if_pending and current not in (TaskStatus.INITIAL, TaskStatus.QUEUED):
                return False
            now = at or _now()
            path = transition_path(current, status)
            values: dict[str, Any] = {"status": status.value}
            if status is TaskStatus.RUNNING:
                values.update(started_at=now, host=host, pid=pid, worker=worker)
            if failed_upstream is not None:
                values["failed_upstream"] = failed_upstream
            if status in (
                TaskStatus.UPSTREAM_FAILED,
                TaskStatus.CONDITION_FAILED,
                TaskStatus.CANCELLED,
            ):
                values["finished_at"] = now
            conn.execute(update(block_run).where(block_run.c.id == task_id).values(**values))
            self._task_events(conn, run_id, task_id, current, path, now, message)
            return True

    @patient("write")
    def finish_task(self, task_id: int, outcome: TaskOutcome, *, run_id: int | None = None) -> None:
        """Record a task's end, its resources, logs, error and artifact links in one transaction.

        With ``run_id`` and ``outcome.recorded`` (the status its worker left in the store), the
        task row is changed by one conditional UPDATE instead of being read first; when the
        row is not in that status after all, the end is recorded from the status it has. The
        last drain of the task's spool (``outcome.final``) is stored in the same transaction.
        """
        with self._write() as conn:
            current: TaskStatus | None = None
            if (
                run_id is not None
                and outcome.recorded is not None
                and not for_update(conn)
                and self._finish_row(conn, task_id, run_id, outcome.recorded, outcome)
            ):
                current = outcome.recorded
            if current is None or run_id is None:
                run_id, current = self._task_state(conn, task_id)
                _end_path(current, outcome)  # an illegal end is refused unwritten
                self._finish_row(conn, task_id, run_id, None, outcome)
            path = _end_path(current, outcome)
            now = _now()
            self._links(conn, run_id, task_id, outcome.links, now)
            if outcome.tags:
                rows = [
                    {"run_id": run_id, "tag": t, "system": False}
                    for t in dict.fromkeys(outcome.tags)
                ]
                upsert(conn, run_tag, rows, ["run_id", "tag"])
            message = (
                outcome.exception_message
                and f"{outcome.exception_type}: {outcome.exception_message}"
            )
            times = {
                TaskStatus.QUEUED: outcome.queued_at or outcome.started_at or now,
                TaskStatus.RUNNING: outcome.started_at or now,
            }
            self._task_events(
                conn, run_id, task_id, current, path, outcome.finished_at or now, message, times
            )
            if outcome.final is not None:
                self._record_batch(conn, outcome.final)

    def _record_batch(self, conn: Connection, batch: SpoolBatch) -> None:
        """One drain of a task's spool in the caller's transaction (the store's, see
        ``record_spool``)."""
        raise NotImplementedError

    def _finish_row(
        self,
        conn: Connection,
        task_id: int,
        run_id: int,
        expected: TaskStatus | None,
        outcome: TaskOutcome,
    ) -> bool:
        """Write the task row's end; with ``expected``, only if the row is in that status and
        this process's lease on the run (if it holds one) is current. Whether it was written."""
        now = _now()
        started = outcome.started_at
        if started is None:
            # A worker that died reports no times: keep the start it recorded when it began.
            started = conn.execute(
                select(block_run.c.started_at).where(block_run.c.id == task_id)
            ).scalar_one()
        finished = outcome.finished_at or now
        params: dict[str, Any] = {
            "b_id": task_id,
            "v_status": outcome.status.value,
            "v_started_at": started,
            "v_finished_at": finished,
            "v_duration_s": (finished - started).total_seconds() if started else None,
            "v_cpu_time_s": outcome.cpu_time_s,
            "v_peak_memory_bytes": outcome.peak_memory_bytes,
            "v_gpu_peak_memory_bytes": outcome.gpu_peak_memory_bytes,
            "v_gpu_time_s": outcome.gpu_time_s,
            "v_exception_type": outcome.exception_type,
            "v_exception_message": outcome.exception_message,
            "v_traceback": outcome.traceback,
            "v_allowed_failure": outcome.allowed_failure,
            "v_note": outcome.note,
        }
        start = outcome.start
        if start is not None:
            params.update(v_host=start[0], v_pid=start[1], v_worker=start[2])
        if expected is None:
            _FINISH[start is not None].run(conn, params)
            return True
        params["b_from"] = expected.value
        held = self._held.get(run_id)
        if held is None:
            return _FINISH_FROM[start is not None].run(conn, params) == 1
        params.update(b_run=run_id, b_lease=held)
        return _FINISH_FENCED[start is not None].run(conn, params) == 1

    def _links(
        self, conn: Connection, run_id: int, task_id: int, links: Sequence[NewLink], now: datetime
    ) -> None:
        if not links:
            return
        objects = {
            link.artifact.key: {
                "key": link.artifact.key,
                "size": link.artifact.size,
                "serializer": link.artifact.serializer,
                "content_type": link.artifact.content_type,
                "type_name": link.artifact.type_name,
                "created_at": now,
            }
            for link in links
        }
        _INSERT_ARTIFACT.run_many(conn, list(objects.values()))
        _INSERT_LINK.run_many(
            conn,
            [
                {
                    "run_id": run_id,
                    "block_run_id": task_id,
                    "direction": link.direction,
                    "name": link.name,
                    "kind": link.kind,
                    "artifact_key": link.artifact.key,
                    "source_uri": link.source_uri,
                    "producer_block_run_id": link.producer_task_id,
                }
                for link in links
            ],
        )

    def _task_state(self, conn: Connection, task_id: int) -> tuple[int, TaskStatus]:
        """The task's run and status, locked for the write; fenced by the run's lease."""
        row = conn.execute(
            select(block_run.c.run_id, block_run.c.status, pipeline_run.c.lease)
            .join(pipeline_run, pipeline_run.c.id == block_run.c.run_id)
            .where(block_run.c.id == task_id)
        ).first()
        if row is None:
            raise NotFoundError(f"no task with id {task_id}")
        run_id = int(row.run_id)
        if not for_update(conn):
            self._check_lease(conn, run_id, row.lease)
            return run_id, TaskStatus(row.status)
        # Locks in one order everywhere, the run's row before its tasks' (mark_lost too), so
        # that taking a run and finishing one of its tasks never deadlock.
        self._check_lease(conn, run_id)
        status = conn.execute(
            select(block_run.c.status).where(block_run.c.id == task_id).with_for_update()
        ).scalar_one()
        return run_id, TaskStatus(status)

    def _task_events(
        self,
        conn: Connection,
        run_id: int,
        task_id: int,
        current: TaskStatus,
        path: Sequence[TaskStatus],
        at: datetime,
        message: str | None,
        times: Mapping[TaskStatus, datetime] | None = None,
    ) -> None:
        previous = current
        rows = []
        for i, status in enumerate(path):
            last = i == len(path) - 1
            rows.append(
                {
                    "run_id": run_id,
                    "block_run_id": task_id,
                    "status": status.value,
                    "previous": previous.value,
                    "at": at if last or times is None else times.get(status, at),
                    "message": message if last else None,
                    "kind": "status",
                }
            )
            previous = status
        _INSERT_EVENT.run_many(conn, rows)

    @patient("read")
    def tasks(self, run_id: int) -> list[TaskRecord]:
        with self._read() as conn:
            rows = conn.execute(
                select(block_run).where(block_run.c.run_id == run_id).order_by(block_run.c.id)
            ).all()
        return [_task(r) for r in rows]

    @patient("read")
    def get_task(self, task_id: int) -> TaskRecord:
        with self._read() as conn:
            row = conn.execute(select(block_run).where(block_run.c.id == task_id)).first()
        if row is None:
            raise NotFoundError(f"no task with id {task_id} in the store")
        return _task(row)

    @patient("read")
    def logs(self, task_id: int) -> dict[str, str]:
        """The task's captured output so far, by stream (``stdout``, ``stderr``)."""
        texts: dict[str, list[str]] = {}
        for chunk in self.log_chunks(task_id):
            texts.setdefault(chunk.stream, []).append(chunk.text)
        return {stream: "".join(parts) for stream, parts in texts.items()}

    @patient("read")
    def log_chunks(self, task_id: int, after: Mapping[str, int] | None = None) -> list[LogChunk]:
        """The task's output in the order written; with ``after``, only past those byte offsets.

        ``after`` maps a stream to the byte offset already seen (the end of its last chunk),
        so a follower asks for what is new and nothing twice.
        """
        query = select(log_chunk).where(log_chunk.c.block_run_id == task_id)
        for stream, offset in (after or {}).items():
            query = query.where(
                (log_chunk.c.stream != stream) | (log_chunk.c.byte_offset >= offset)
            )
        with self._read() as conn:
            rows = conn.execute(
                query.order_by(log_chunk.c.stream.desc(), log_chunk.c.byte_offset)
            ).all()
        return [LogChunk(r.stream, r.byte_offset, r.size, r.text) for r in rows]

    @patient("read")
    def log_ends(self, task_id: int) -> dict[str, int]:
        """Bytes of each stream already in the store (where the next chunk starts)."""
        with self._read() as conn:
            rows = conn.execute(
                select(log_chunk.c.stream, func.max(log_chunk.c.byte_offset + log_chunk.c.size))
                .where(log_chunk.c.block_run_id == task_id)
                .group_by(log_chunk.c.stream)
            ).all()
        return {str(stream): int(end) for stream, end in rows}

    @patient("read")
    def links(self, run_id: int) -> list[ArtifactLink]:
        """Every lineage edge of a run's tasks, in the order they were recorded."""
        return self._find_links(artifact_link.c.run_id == run_id)

    @patient("read")
    def links_of_artifacts(self, keys: Sequence[str]) -> list[ArtifactLink]:
        """Every edge, in any run, to one of these artifacts: who produced and who consumed it."""
        return self._find_links(artifact_link.c.artifact_key.in_(list(keys))) if keys else []

    @patient("read")
    def links_of_tasks(self, task_ids: Sequence[int]) -> list[ArtifactLink]:
        """Every edge of these tasks, in any run."""
        return (
            self._find_links(artifact_link.c.block_run_id.in_(list(task_ids))) if task_ids else []
        )

    @patient("read")
    def get_tasks(self, task_ids: Sequence[int]) -> list[TaskRecord]:
        with self._read() as conn:
            rows = conn.execute(
                select(block_run).where(block_run.c.id.in_(list(task_ids))).order_by(block_run.c.id)
            ).all()
        return [_task(r) for r in rows]

    def _find_links(self, condition: Any) -> list[ArtifactLink]:
        with self._read() as conn:
            rows = conn.execute(
                select(artifact_link, artifact)
                .join(artifact, artifact.c.key == artifact_link.c.artifact_key)
                .where(condition)
                .order_by(artifact_link.c.id)
            ).all()
        return [
            ArtifactLink(
                task_id=r.block_run_id,
                run_id=r.run_id,
                direction=r.direction,
                name=r.name,
                kind=r.kind,
                artifact=ArtifactRecord(r.key, r.size, r.serializer, r.content_type, r.type_name),
                source_uri=r.source_uri,
                producer_task_id=r.producer_block_run_id,
            )
            for r in rows
        ]

    @patient("read")
    def artifacts_by_prefix(self, prefix: str, limit: int) -> list[ArtifactRecord]:
        """Artifacts whose hash starts with ``prefix`` (lower-case hex), at most ``limit``.

        A key range, not LIKE, so both SQLite and PostgreSQL answer from the primary key.
        """
        prefix = prefix.lower()
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            return []
        upper = prefix + "g"  # 'g' sorts after every hex digit
        with self._read() as conn:
            rows = conn.execute(
                select(artifact)
                .where(artifact.c.key >= prefix, artifact.c.key < upper)
                .order_by(artifact.c.key)
                .limit(limit)
            ).all()
        return [
            ArtifactRecord(r.key, r.size, r.serializer, r.content_type, r.type_name) for r in rows
        ]

    @patient("read")
    def artifact(self, key: str) -> ArtifactRecord:
        with self._read() as conn:
            r = conn.execute(select(artifact).where(artifact.c.key == key)).first()
        if r is None:
            raise NotFoundError(f"no artifact {key!r} in the store")
        return ArtifactRecord(r.key, r.size, r.serializer, r.content_type, r.type_name)

    @patient("write")
    def reuse_task(self, task_id: int, origin_task_id: int, message: str) -> list[ArtifactLink]:
        """Complete a task by reusing an earlier task's outputs (a retry's completed steps).

        The outputs are linked, not copied: the new task points at the same artifacts and
        records which task it reuses. Returns the links now held by the new task.
        """
        with self._write() as conn:
            run_id, current = self._task_state(conn, task_id)
            origin = conn.execute(select(block_run).where(block_run.c.id == origin_task_id)).first()
            if origin is None:
                raise NotFoundError(f"no task with id {origin_task_id} to reuse")
            at = _now()
            conn.execute(
                update(block_run)
                .where(block_run.c.id == task_id)
                .values(
                    status=TaskStatus.COMPLETED.value,
                    reused_from_task_id=origin_task_id,
                    started_at=origin.started_at,
                    finished_at=origin.finished_at,
                    duration_s=origin.duration_s,
                    note=message,
                )
            )
            rows = conn.execute(
                select(artifact_link).where(
                    artifact_link.c.block_run_id == origin_task_id,
                    artifact_link.c.direction == "output",
                )
            ).all()
            if rows:
                conn.execute(
                    insert(artifact_link),
                    [
                        {
                            "run_id": run_id,
                            "block_run_id": task_id,
                            "direction": "output",
                            "name": r.name,
                            "kind": r.kind,
                            "artifact_key": r.artifact_key,
                            "source_uri": r.source_uri,
                            "producer_block_run_id": origin_task_id,
                        }
                        for r in rows
                    ],
                )
            check_task_transition(current, TaskStatus.COMPLETED)
            conn.execute(
                insert(run_event),
                {
                    "run_id": run_id,
                    "block_run_id": task_id,
                    "kind": "reused",
                    "status": TaskStatus.COMPLETED.value,
                    "previous": current.value,
                    "at": at,
                    "message": message,
                },
            )
        return [link for link in self.links(run_id) if link.task_id == task_id]

    @patient("write")
    def skip_task(self, task_id: int, status: TaskStatus, message: str) -> None:
        """End a task that never ran: nothing to do (a foreach over no items) and the like."""
        self.set_task_status(task_id, status, message=message)


def _task(r: Any) -> TaskRecord:
    return TaskRecord(
        id=r.id,
        run_id=r.run_id,
        step=r.step,
        task_index=r.task_index,
        attempt=r.attempt,
        status=TaskStatus(r.status),
        created_at=r.created_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
        cpu_time_s=r.cpu_time_s,
        peak_memory_bytes=r.peak_memory_bytes,
        gpu_peak_memory_bytes=r.gpu_peak_memory_bytes,
        gpu_time_s=r.gpu_time_s,
        exception_type=r.exception_type,
        exception_message=r.exception_message,
        traceback=r.traceback,
        failed_upstream=r.failed_upstream,
        host=r.host,
        pid=r.pid,
        worker=r.worker,
        reused_from_task_id=r.reused_from_task_id,
        allowed_failure=bool(r.allowed_failure),
        note=r.note,
        spool_offset=r.spool_offset,
    )
