"""SqlMetadataStore: core records to rows and back; SQLAlchemy errors become pipetrail errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from pipetrail.core.model import (
    ArtifactLink,
    ArtifactRecord,
    EventRecord,
    MetricPoint,
    PipelineSpec,
    RunRecord,
    TaskRecord,
)
from pipetrail.core.params import flatten
from pipetrail.core.status import (
    TASK_TRANSITIONS,
    RunStatus,
    TaskStatus,
    check_run_transition,
    check_task_transition,
)
from pipetrail.errors import NotFoundError, StoreError
from pipetrail.storage.metadata.base import (
    MetricRow,
    NewLink,
    NewRun,
    RunQuery,
    TaskOutcome,
)
from pipetrail.storage.metadata.sql import migrate
from pipetrail.storage.metadata.sql.engine import (
    WRITE_OPTION,
    for_update,
    insert_many_fast,
    make_engine,
    upsert,
)
from pipetrail.storage.metadata.sql.tables import (
    artifact,
    artifact_link,
    block_run,
    environment,
    latest_metric,
    metric,
    pipeline,
    pipeline_run,
    pipeline_version,
    run_event,
    run_param,
    run_tag,
    task_log,
)

__all__ = ["SqlMetadataStore"]


def _now() -> datetime:
    return datetime.now(UTC)


class SqlMetadataStore:
    """The metadata store over SQLAlchemy: SQLite (embedded default) or PostgreSQL.

    Args:
        url: an SQLAlchemy URL.
        migrate_schema: bring the schema to the head revision first (workers skip it).
    """

    def __init__(self, url: str, *, migrate_schema: bool = True) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        if migrate_schema:
            migrate.upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- transactions ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self.engine.connect().execution_options(**{WRITE_OPTION: True}) as conn:
                with conn.begin():
                    yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"metadata store {self._where()} failed to write: {exc}") from exc

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"metadata store {self._where()} failed to read: {exc}") from exc

    def _where(self) -> str:
        return repr(self.engine.url.render_as_string(hide_password=True))

    # -- runs --------------------------------------------------------------------------------

    def create_run(self, new: NewRun) -> RunRecord:
        """Record a new run in ``initial`` with everything known before it starts, atomically."""
        now = _now()
        with self._write() as conn:
            pipeline_id = self._pipeline_id(conn, new.spec.name, now)
            version_id = self._version_id(conn, pipeline_id, new.spec, now)
            env_id = None
            if new.environment is not None:
                env_hash, env_data = new.environment
                upsert(
                    conn,
                    environment,
                    [{"hash": env_hash, "data": env_data, "created_at": now}],
                    ["hash"],
                )
                env_id = conn.execute(
                    select(environment.c.id).where(environment.c.hash == env_hash)
                ).scalar_one()
            run_id = conn.execute(
                insert(pipeline_run)
                .values(
                    pipeline_id=pipeline_id,
                    version_id=version_id,
                    status=RunStatus.INITIAL.value,
                    created_at=now,
                    user=new.user,
                    host=new.host,
                    trigger=new.trigger,
                    origin_run_id=new.origin_run_id,
                    params=new.params,
                    param_types=new.param_types,
                    variables=new.variables,
                    git=new.git,
                    code_key=new.code_key,
                    environment_id=env_id,
                    runner_host=new.host,
                    runner_pid=new.runner_pid,
                    heartbeat_at=now,
                )
                .returning(pipeline_run.c.id)
            ).scalar_one()
            param_rows = [_param_row(run_id, k, v) for k, v in _flat_params(new.params)]
            if param_rows:
                conn.execute(insert(run_param), param_rows)
            tag_rows = [{"run_id": run_id, "tag": t, "system": True} for t in new.system_tags]
            tag_rows += [
                {"run_id": run_id, "tag": t, "system": False}
                for t in dict.fromkeys(new.user_tags)
                if t not in new.system_tags
            ]
            if tag_rows:
                conn.execute(insert(run_tag), tag_rows)
            conn.execute(
                insert(run_event),
                {"run_id": run_id, "status": RunStatus.INITIAL.value, "at": now},
            )
        return self.get_run(run_id)

    def _pipeline_id(self, conn: Connection, name: str, now: datetime) -> int:
        upsert(conn, pipeline, [{"name": name, "created_at": now}], ["name"])
        return int(conn.execute(select(pipeline.c.id).where(pipeline.c.name == name)).scalar_one())

    def _version_id(
        self, conn: Connection, pipeline_id: int, spec: PipelineSpec, now: datetime
    ) -> int:
        row = {
            "pipeline_id": pipeline_id,
            "version": spec.version,
            "dag": spec.to_dict(),
            "created_at": now,
        }
        upsert(conn, pipeline_version, [row], ["pipeline_id", "version"])
        return int(
            conn.execute(
                select(pipeline_version.c.id).where(
                    pipeline_version.c.pipeline_id == pipeline_id,
                    pipeline_version.c.version == spec.version,
                )
            ).scalar_one()
        )

    def set_run_status(
        self,
        run_id: int,
        status: RunStatus,
        *,
        error: str | None = None,
        message: str | None = None,
    ) -> RunRecord:
        """Move a run to ``status`` (checked against the state machine) and record the event."""
        with self._write() as conn:
            now = _now()
            query = select(pipeline_run.c.status, pipeline_run.c.started_at).where(
                pipeline_run.c.id == run_id
            )
            if for_update(conn):
                query = query.with_for_update()
            row = conn.execute(query).first()
            if row is None:
                raise NotFoundError(f"no run with id {run_id}")
            current = RunStatus(row.status)
            check_run_transition(current, status)
            values: dict[str, Any] = {"status": status.value, "heartbeat_at": now}
            if status is RunStatus.RUNNING:
                values["started_at"] = now
            if status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED):
                values["finished_at"] = now
                started = row.started_at or now
                values["duration_s"] = (now - started).total_seconds()
                if row.started_at is None:
                    values["started_at"] = now
            if error is not None:
                values["error"] = error
            conn.execute(update(pipeline_run).where(pipeline_run.c.id == run_id).values(**values))
            conn.execute(
                insert(run_event),
                {
                    "run_id": run_id,
                    "status": status.value,
                    "previous": current.value,
                    "at": now,
                    "message": message or error,
                },
            )
        return self.get_run(run_id)

    def heartbeat(self, run_id: int) -> None:
        with self._write() as conn:
            conn.execute(
                update(pipeline_run).where(pipeline_run.c.id == run_id).values(heartbeat_at=_now())
            )

    def add_tags(self, run_id: int, tags: Iterable[str], *, system: bool = False) -> None:
        """Add tags to a run; a tag it already has (user or system) is left as it is."""
        rows = [{"run_id": run_id, "tag": t, "system": system} for t in dict.fromkeys(tags)]
        with self._write() as conn:
            upsert(conn, run_tag, rows, ["run_id", "tag"])

    def get_run(self, run_id: int) -> RunRecord:
        with self._read() as conn:
            runs = self._runs(conn, [pipeline_run.c.id == run_id], limit=1)
        if not runs:
            raise NotFoundError(f"no run with id {run_id} in the store")
        return runs[0]

    def list_runs(self, query: RunQuery) -> list[RunRecord]:
        """Runs matching ``query``, newest first."""
        conditions: list[Any] = []
        if query.pipeline is not None:
            conditions.append(pipeline.c.name == query.pipeline)
        if query.statuses:
            conditions.append(pipeline_run.c.status.in_([s.value for s in query.statuses]))
        if query.since is not None:
            conditions.append(pipeline_run.c.created_at >= query.since)
        for tag in query.tags:
            conditions.append(
                pipeline_run.c.id.in_(select(run_tag.c.run_id).where(run_tag.c.tag == tag))
            )
        with self._read() as conn:
            return self._runs(conn, conditions, limit=query.limit)

    def _runs(
        self, conn: Connection, conditions: Sequence[Any], limit: int | None
    ) -> list[RunRecord]:
        stmt = (
            select(
                pipeline_run,
                pipeline.c.name.label("pipeline_name"),
                pipeline_version.c.version.label("version"),
                pipeline_version.c.dag.label("dag"),
                environment.c.hash.label("environment_hash"),
            )
            .join(pipeline, pipeline.c.id == pipeline_run.c.pipeline_id)
            .join(pipeline_version, pipeline_version.c.id == pipeline_run.c.version_id)
            .outerjoin(environment, environment.c.id == pipeline_run.c.environment_id)
            .where(and_(True, *conditions))
            .order_by(pipeline_run.c.id.desc())
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        rows = conn.execute(stmt).mappings().all()
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        tags: dict[int, tuple[list[str], list[str]]] = {i: ([], []) for i in ids}
        for t in conn.execute(
            select(run_tag).where(run_tag.c.run_id.in_(ids)).order_by(run_tag.c.tag)
        ):
            tags[t.run_id][1 if t.system else 0].append(t.tag)
        return [
            RunRecord(
                id=r["id"],
                pipeline=r["pipeline_name"],
                version=r["version"],
                status=RunStatus(r["status"]),
                created_at=r["created_at"],
                started_at=r["started_at"],
                finished_at=r["finished_at"],
                user=r["user"],
                host=r["host"],
                trigger=r["trigger"],
                params=r["params"],
                param_types=r["param_types"],
                variables=r["variables"],
                user_tags=tuple(tags[r["id"]][0]),
                system_tags=tuple(tags[r["id"]][1]),
                origin_run_id=r["origin_run_id"],
                error=r["error"],
                git=r["git"],
                code_key=r["code_key"],
                environment_hash=r["environment_hash"],
                dag=r["dag"],
            )
            for r in rows
        ]

    def get_environment(self, env_hash: str) -> dict[str, Any]:
        with self._read() as conn:
            data = conn.execute(
                select(environment.c.data).where(environment.c.hash == env_hash)
            ).scalar_one_or_none()
        if data is None:
            raise NotFoundError(f"no environment {env_hash!r} in the store")
        return dict(data)

    def count_environments(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(environment)).scalar_one())

    def events(self, run_id: int) -> list[EventRecord]:
        """The run's whole status history (run and task events), oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                select(run_event).where(run_event.c.run_id == run_id).order_by(run_event.c.id)
            ).all()
        return [
            EventRecord(r.run_id, r.block_run_id, r.status, r.at, r.previous, r.message)
            for r in rows
        ]

    # -- tasks -------------------------------------------------------------------------------

    def create_tasks(
        self, run_id: int, steps: Sequence[tuple[str, int, int]]
    ) -> dict[tuple[str, int, int], int]:
        """Create task attempts in ``initial``; ``steps`` are (step, task_index, attempt) keys."""
        now = _now()
        ids: dict[tuple[str, int, int], int] = {}
        if not steps:
            return ids
        rows = [
            {
                "run_id": run_id,
                "step": step,
                "task_index": index,
                "attempt": attempt,
                "status": TaskStatus.INITIAL.value,
                "created_at": now,
            }
            for step, index, attempt in steps
        ]
        with self._write() as conn:
            # One statement for all rows; ids come back in the order the rows were given.
            created = conn.execute(
                insert(block_run).returning(block_run.c.id, sort_by_parameter_order=True), rows
            ).scalars()
            ids = {key: int(task_id) for key, task_id in zip(steps, created, strict=True)}
            if ids:
                conn.execute(
                    insert(run_event),
                    [
                        {
                            "run_id": run_id,
                            "block_run_id": i,
                            "status": TaskStatus.INITIAL.value,
                            "at": now,
                        }
                        for i in ids.values()
                    ],
                )
        return ids

    def set_task_status(
        self,
        task_id: int,
        status: TaskStatus,
        *,
        message: str | None = None,
        failed_upstream: str | None = None,
        host: str | None = None,
        pid: int | None = None,
    ) -> None:
        """Move a task through one or more statuses up to ``status``, each an event."""
        with self._write() as conn:
            run_id, current = self._task_state(conn, task_id)
            now = _now()
            path = _path(current, status)
            values: dict[str, Any] = {"status": status.value}
            if status is TaskStatus.RUNNING:
                values.update(started_at=now, host=host, pid=pid)
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

    def finish_task(self, task_id: int, outcome: TaskOutcome) -> None:
        """Record a task's end, its resources, logs, error and artifact links in one transaction."""
        with self._write() as conn:
            run_id, current = self._task_state(conn, task_id)
            now = _now()
            path = _path(current, outcome.status)
            started = outcome.started_at
            finished = outcome.finished_at or now
            conn.execute(
                update(block_run)
                .where(block_run.c.id == task_id)
                .values(
                    status=outcome.status.value,
                    started_at=started,
                    finished_at=finished,
                    duration_s=(finished - started).total_seconds() if started else None,
                    cpu_time_s=outcome.cpu_time_s,
                    peak_memory_bytes=outcome.peak_memory_bytes,
                    gpu_peak_memory_bytes=outcome.gpu_peak_memory_bytes,
                    exception_type=outcome.exception_type,
                    exception_message=outcome.exception_message,
                    traceback=outcome.traceback,
                )
            )
            logs = [
                {"block_run_id": task_id, "stream": name, "text": text}
                for name, text in (("stdout", outcome.stdout), ("stderr", outcome.stderr))
                if text
            ]
            if logs:
                upsert(conn, task_log, logs, ["block_run_id", "stream"], update=["text"])
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
            self._task_events(conn, run_id, task_id, current, path, now, message)

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
        upsert(conn, artifact, list(objects.values()), ["key"])
        conn.execute(
            insert(artifact_link),
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
        query = select(block_run.c.run_id, block_run.c.status).where(block_run.c.id == task_id)
        if for_update(conn):
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise NotFoundError(f"no task with id {task_id}")
        return int(row.run_id), TaskStatus(row.status)

    def _task_events(
        self,
        conn: Connection,
        run_id: int,
        task_id: int,
        current: TaskStatus,
        path: Sequence[TaskStatus],
        at: datetime,
        message: str | None,
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
                    "at": at,
                    "message": message if last else None,
                }
            )
            previous = status
        if rows:
            conn.execute(insert(run_event), rows)

    def tasks(self, run_id: int) -> list[TaskRecord]:
        with self._read() as conn:
            rows = conn.execute(
                select(block_run).where(block_run.c.run_id == run_id).order_by(block_run.c.id)
            ).all()
        return [_task(r) for r in rows]

    def get_task(self, task_id: int) -> TaskRecord:
        with self._read() as conn:
            row = conn.execute(select(block_run).where(block_run.c.id == task_id)).first()
        if row is None:
            raise NotFoundError(f"no task with id {task_id} in the store")
        return _task(row)

    def logs(self, task_id: int) -> dict[str, str]:
        with self._read() as conn:
            rows = conn.execute(select(task_log).where(task_log.c.block_run_id == task_id)).all()
        return {r.stream: r.text for r in rows}

    def links(self, run_id: int) -> list[ArtifactLink]:
        """Every lineage edge of a run's tasks, in the order they were recorded."""
        with self._read() as conn:
            rows = conn.execute(
                select(artifact_link, artifact)
                .join(artifact, artifact.c.key == artifact_link.c.artifact_key)
                .where(artifact_link.c.run_id == run_id)
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

    def artifact(self, key: str) -> ArtifactRecord:
        with self._read() as conn:
            r = conn.execute(select(artifact).where(artifact.c.key == key)).first()
        if r is None:
            raise NotFoundError(f"no artifact {key!r} in the store")
        return ArtifactRecord(r.key, r.size, r.serializer, r.content_type, r.type_name)

    # -- metrics -----------------------------------------------------------------------------

    def add_metrics(self, rows: Sequence[MetricRow]) -> None:
        """Append metric points in one transaction and keep each series' latest value current."""
        if not rows:
            return
        # MetricRow is already a tuple in this column order, with epoch-float timestamps.
        columns = ("run_id", "block_run_id", "name", "value", "step", "timestamp")
        with self._write() as conn:
            insert_many_fast(conn, metric, columns, rows)
            self._latest(conn, rows)

    def _latest(self, conn: Connection, rows: Sequence[MetricRow]) -> None:
        latest: dict[tuple[int, str], MetricRow] = {}
        for r in rows:
            latest[(r.run_id, r.name)] = r
        upsert(
            conn,
            latest_metric,
            [
                {
                    "run_id": r.run_id,
                    "name": r.name,
                    "value": r.value,
                    "step": r.step,
                    "timestamp": r.timestamp,
                    "block_run_id": r.task_id,
                }
                for r in latest.values()
            ],
            ["run_id", "name"],
            update=["value", "step", "timestamp", "block_run_id"],
            where_newer="timestamp",
        )

    def latest_metrics(self, run_id: int) -> dict[str, float]:
        with self._read() as conn:
            rows = conn.execute(
                select(latest_metric.c.name, latest_metric.c.value)
                .where(latest_metric.c.run_id == run_id)
                .order_by(latest_metric.c.name)
            ).all()
        return {r.name: r.value for r in rows}

    def metric_history(self, run_id: int, name: str | None = None) -> list[tuple[int, MetricPoint]]:
        """(task id, point) pairs of a run's metrics, in the order they were logged."""
        query = select(metric).where(metric.c.run_id == run_id)
        if name is not None:
            query = query.where(metric.c.name == name)
        with self._read() as conn:
            rows = conn.execute(query.order_by(metric.c.id)).all()
        return [(r.block_run_id, MetricPoint(r.name, r.value, r.step, r.timestamp)) for r in rows]

    def count_metrics(self, run_id: int) -> int:
        with self._read() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(metric).where(metric.c.run_id == run_id)
                ).scalar_one()
            )

    def delete_everything(self) -> None:
        """Drop every row: for tests that share a database between cases."""
        from pipetrail.storage.metadata.sql.tables import metadata

        with self._write() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(delete(table))


def _path(current: TaskStatus, target: TaskStatus) -> list[TaskStatus]:
    """The statuses a task passes through from ``current`` to ``target`` (shortest legal route)."""
    if current == target:
        return []
    route = {
        TaskStatus.INITIAL: [TaskStatus.QUEUED, TaskStatus.RUNNING],
        TaskStatus.QUEUED: [TaskStatus.RUNNING],
    }
    steps: list[TaskStatus] = []
    here = current
    for middle in route.get(current, []):
        if target in _allowed(here):
            break
        steps.append(middle)
        here = middle
    check_task_transition(here, target)
    steps.append(target)
    return steps


def _allowed(status: TaskStatus) -> frozenset[TaskStatus]:
    return TASK_TRANSITIONS[status]


def _flat_params(params: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for name, value in params.items():
        yield from flatten(value, name)


def _param_row(run_id: int, key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {
            "run_id": run_id,
            "key": key,
            "type": "bool",
            "value_num": float(value),
            "value_text": str(value).lower(),
        }
    if isinstance(value, (int, float)):
        return {
            "run_id": run_id,
            "key": key,
            "type": "number",
            "value_num": float(value),
            "value_text": repr(value),
        }
    if value is None:
        return {"run_id": run_id, "key": key, "type": "null", "value_num": None, "value_text": None}
    return {
        "run_id": run_id,
        "key": key,
        "type": "str",
        "value_num": None,
        "value_text": str(value),
    }


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
        exception_type=r.exception_type,
        exception_message=r.exception_message,
        traceback=r.traceback,
        failed_upstream=r.failed_upstream,
        host=r.host,
        pid=r.pid,
    )
