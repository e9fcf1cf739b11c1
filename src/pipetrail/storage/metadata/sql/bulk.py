"""Runs recorded in bulk: thousands of finished runs in one transaction, for imports and seeding.

The rows are the ones the normal path writes (``create_run``, ``create_tasks``, the status
changes, ``finish_task``, ``add_metrics``), built in Python and streamed with the driver's
fastest path (``COPY`` on PostgreSQL), with ids reserved up front instead of read back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from pipetrail.core.hashing import digest_json
from pipetrail.core.status import (
    RUN_TERMINAL,
    TASK_TERMINAL,
    RunStatus,
    TaskStatus,
    check_run_transition,
    transition_path,
)
from pipetrail.errors import InvalidTransitionError, UsageError
from pipetrail.storage.metadata.base import ImportedRun, ImportedTask, MetricRow
from pipetrail.storage.metadata.points import MetricColumns
from pipetrail.storage.metadata.sql.engine import copy_rows, reserve_ids, upsert
from pipetrail.storage.metadata.sql.metrics import append_blocks, metric_blocks
from pipetrail.storage.metadata.sql.runs import RunRows, _flat_params, _param_row, tally
from pipetrail.storage.metadata.sql.session import now as _now
from pipetrail.storage.metadata.sql.session import patient
from pipetrail.storage.metadata.sql.tables import (
    block_run,
    environment,
    latest_metric,
    pipeline_run,
    run_event,
    run_param,
    run_tag,
)

__all__ = ["BulkRows"]

_RUN_COLUMNS = (
    "id",
    "pipeline_id",
    "version_id",
    "status",
    "created_at",
    "started_at",
    "finished_at",
    "duration_s",
    "user",
    "host",
    "trigger",
    "origin_run_id",
    "params",
    "param_types",
    "variables",
    "git",
    "code_key",
    "environment_id",
    "error",
    "heartbeat_at",
    "timeout_s",
    "runner_host",
    "runner_pid",
    "lease",
    "trigger_name",
    "scheduled_at",
    "upstream_run_id",
    "sla_due_at",
)
_TASK_COLUMNS = (
    "id",
    "run_id",
    "step",
    "task_index",
    "attempt",
    "status",
    "created_at",
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
    "host",
    "pid",
    "worker",
    "allowed_failure",
    "note",
    "spool_offset",
)
_EVENT_COLUMNS = ("run_id", "block_run_id", "kind", "status", "previous", "at", "message")
_PARAM_COLUMNS = ("run_id", "key", "type", "value_num", "value_text")
_LATEST_COLUMNS = (
    "run_id",
    "name",
    "value",
    "step",
    "timestamp",
    "block_run_id",
    "min_value",
    "max_value",
)


class BulkRows(RunRows):
    """Bulk creation of finished (or still waiting) runs through the store's own tables."""

    @patient("write")
    def import_runs(self, runs: Sequence[ImportedRun]) -> list[int]:
        """Record ``runs`` with their params, tags, tasks, metrics and events in one transaction.

        Each run reads back as one made by the normal path would (``get_run``, ``tasks``,
        ``events``, ``latest_metrics``, ``metric_history``, search), with the given times.
        Nothing is written when any run is invalid.

        Returns:
            The new runs' ids, in the order given.

        Raises:
            UsageError: a run whose status, times or tasks cannot have happened (naming it).
            TickTakenError: never; imported runs are not linked to trigger ticks.
        """
        if not runs:
            return []
        for index, run in enumerate(runs):
            _check(index, run)
        at = _now()
        with self._write() as conn:
            run_ids = reserve_ids(conn, pipeline_run, len(runs))
            task_ids = iter(reserve_ids(conn, block_run, sum(len(r.tasks) for r in runs)))
            keys = self._keys(conn, runs, at)
            run_rows: list[tuple[Any, ...]] = []
            params: list[tuple[Any, ...]] = []
            tags: list[tuple[Any, ...]] = []
            tasks: list[tuple[Any, ...]] = []
            events: list[tuple[Any, ...]] = []
            points: list[MetricRow] = []
            for run_id, run in zip(run_ids, runs, strict=True):
                new = run.new
                pipeline_id, version_id, env_id = keys[id(run)]
                run_rows.append(_run_row(run_id, run, pipeline_id, version_id, env_id))
                for key, value in _flat_params(new.params):
                    row = _param_row(run_id, key, value)
                    params.append(tuple(row[c] for c in _PARAM_COLUMNS))
                tags.extend((run_id, t, True) for t in new.system_tags)
                tags.extend(
                    (run_id, t, False)
                    for t in dict.fromkeys(new.user_tags)
                    if t not in new.system_tags
                )
                events.extend(_run_events(run_id, run))
                for task in run.tasks:
                    task_id = next(task_ids)
                    tasks.append(_task_row(task_id, run_id, run, task))
                    events.extend(_task_events(run_id, task_id, run, task))
                    points.extend(
                        MetricRow(run_id, task_id, name, value, step, stamp)
                        for name, value, step, stamp in task.metrics
                    )
            counts: dict[tuple[int, str], tuple[int, float, int]] = {}
            for values in run_rows:
                stats_key: tuple[int, str] = (values[1], values[3])  # (pipeline_id, status)
                runs_, seconds, timed = counts.get(stats_key, (0, 0.0, 0))
                duration = values[7]
                counts[stats_key] = (
                    runs_ + 1,
                    seconds + (duration or 0.0),
                    timed + (duration is not None),
                )
            copy_rows(conn, pipeline_run, _RUN_COLUMNS, run_rows)
            tally(conn, counts)
            copy_rows(conn, run_param, _PARAM_COLUMNS, params)
            copy_rows(conn, run_tag, ("run_id", "tag", "system"), tags)
            copy_rows(conn, block_run, _TASK_COLUMNS, tasks)
            copy_rows(conn, run_event, _EVENT_COLUMNS, events)
            blocks, newest = metric_blocks(MetricColumns.of_rows(points))
            append_blocks(conn, blocks)
            latest = [tuple(r[c] for c in _LATEST_COLUMNS) for r in newest]
            copy_rows(conn, latest_metric, _LATEST_COLUMNS, latest)
        return run_ids

    def _keys(
        self, conn: Connection, runs: Sequence[ImportedRun], at: datetime
    ) -> dict[int, tuple[int, int, int | None]]:
        """(pipeline id, version id, environment id) of each run, looked up once per distinct."""
        pipelines: dict[str, int] = {}
        versions: dict[tuple[int, str], int] = {}
        environments: dict[str, int] = {}
        found: dict[int, tuple[int, int, int | None]] = {}
        hashes: dict[int, str] = {}  # by spec object: thousands of runs share a few specs
        for run in runs:
            spec = run.new.spec
            if spec.name not in pipelines:
                pipelines[spec.name] = self._pipeline_id(conn, spec.name, at)
            pipeline_id = pipelines[spec.name]
            if id(spec) not in hashes:
                hashes[id(spec)] = digest_json(spec.to_dict())
            dag_key = (pipeline_id, hashes[id(spec)])
            if dag_key not in versions:
                versions[dag_key] = self._version_id(conn, pipeline_id, spec, at)
            env_id = None
            if run.new.environment is not None:
                env_hash, env_data = run.new.environment
                if env_hash not in environments:
                    upsert(
                        conn,
                        environment,
                        [{"hash": env_hash, "data": env_data, "created_at": at}],
                        ["hash"],
                    )
                    environments[env_hash] = conn.execute(
                        select(environment.c.id).where(environment.c.hash == env_hash)
                    ).scalar_one()
                env_id = environments[env_hash]
            found[id(run)] = (pipeline_id, versions[dag_key], env_id)
        return found


def _check(index: int, run: ImportedRun) -> None:
    """Refuse a run that the normal path could not have recorded, naming it and the problem."""
    where = f"run {index} of the import ({run.new.spec.name!r})"
    try:
        _check_run(where, run)
    except InvalidTransitionError as exc:
        raise UsageError(f"{where}: {exc}") from None


def _check_run(where: str, run: ImportedRun) -> None:
    if run.new.tick_trigger_id is not None:
        raise UsageError(f"{where}: an imported run cannot claim a trigger tick")
    if run.status not in (RunStatus.INITIAL, RunStatus.RUNNING) and run.started_at is None:
        # Without a start it goes straight from initial (failed or cancelled before it ran).
        check_run_transition(RunStatus.INITIAL, run.status)
    times = [run.created_at, run.started_at, run.finished_at]
    for value in times:
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise UsageError(f"{where}: naive datetime {value!r}; use UTC-aware times")
    if run.status in RUN_TERMINAL and run.finished_at is None:
        raise UsageError(f"{where}: status {run.status.value!r} needs finished_at")
    if run.status is RunStatus.RUNNING and run.started_at is None:
        raise UsageError(f"{where}: status 'running' needs started_at")
    if run.status not in RUN_TERMINAL and run.finished_at is not None:
        raise UsageError(f"{where}: status {run.status.value!r} has not finished")
    ordered = [t for t in times if t is not None]
    if ordered != sorted(ordered):
        raise UsageError(f"{where}: created_at <= started_at <= finished_at does not hold")
    for task in run.tasks:
        for value in (task.created_at, task.started_at, task.finished_at):
            if value is not None and (value.tzinfo is None or value.utcoffset() is None):
                raise UsageError(
                    f"{where}: task {task.step!r} has naive datetime {value!r}; use UTC-aware times"
                )
        if run.status in RUN_TERMINAL and task.status not in TASK_TERMINAL:
            raise UsageError(
                f"{where}: task {task.step!r} is {task.status.value!r} in a "
                f"{run.status.value!r} run"
            )
        if task.status is not TaskStatus.INITIAL:
            transition_path(TaskStatus.INITIAL, task.status)  # raises on an impossible status
        if task.status in TASK_TERMINAL and task.finished_at is None and run.finished_at is None:
            raise UsageError(
                f"{where}: task {task.step!r} is {task.status.value!r} but has no finished_at"
            )


def _run_row(
    run_id: int, run: ImportedRun, pipeline_id: int, version_id: int, env_id: int | None
) -> tuple[Any, ...]:
    new = run.new
    started = run.started_at
    finished = run.finished_at
    if run.status in RUN_TERMINAL and started is None:
        started = finished  # as _set_status does for a run that ends before it starts
    duration = (finished - started).total_seconds() if finished and started else None
    cause = new.cause
    return (
        run_id,
        pipeline_id,
        version_id,
        run.status.value,
        run.created_at,
        started,
        finished,
        duration,
        new.user,
        new.host,
        new.trigger,
        new.origin_run_id,
        new.params,
        new.param_types,
        new.variables,
        new.git,
        new.code_key,
        env_id,
        run.error,
        # The heartbeat moves with every status change, as in the normal path.
        finished or started or run.created_at,
        new.timeout_s,
        new.host,
        new.runner_pid,
        1,
        cause.trigger if cause else None,
        cause.scheduled_at if cause else None,
        cause.upstream_run_id if cause else None,
        new.sla_due_at,
    )


def _run_events(run_id: int, run: ImportedRun) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = [
        (run_id, None, "status", RunStatus.INITIAL.value, None, run.created_at, None)
    ]
    previous = RunStatus.INITIAL
    if run.started_at is not None and run.status is not RunStatus.INITIAL:
        rows.append(
            (
                run_id,
                None,
                "status",
                RunStatus.RUNNING.value,
                previous.value,
                run.started_at,
                None,
            )
        )
        previous = RunStatus.RUNNING
    if run.status in RUN_TERMINAL:
        rows.append(
            (
                run_id,
                None,
                "status",
                run.status.value,
                previous.value,
                run.finished_at,
                run.error,
            )
        )
    return rows


def _task_times(
    run: ImportedRun, task: ImportedTask
) -> tuple[datetime, datetime | None, datetime | None]:
    created = task.created_at or run.started_at or run.created_at
    finished = task.finished_at
    if finished is None and task.status in TASK_TERMINAL:
        finished = run.finished_at
    return created, task.started_at, finished


def _task_row(task_id: int, run_id: int, run: ImportedRun, task: ImportedTask) -> tuple[Any, ...]:
    created, started, finished = _task_times(run, task)
    duration = (finished - started).total_seconds() if finished and started else None
    return (
        task_id,
        run_id,
        task.step,
        task.task_index,
        task.attempt,
        task.status.value,
        created,
        started,
        finished,
        duration,
        task.cpu_time_s,
        task.peak_memory_bytes,
        task.gpu_peak_memory_bytes,
        task.gpu_time_s,
        task.exception_type,
        task.exception_message,
        task.traceback,
        task.host,
        task.pid,
        task.worker,
        task.allowed_failure,
        task.note,
        task.spool_offset,
    )


def _task_events(
    run_id: int, task_id: int, run: ImportedRun, task: ImportedTask
) -> list[tuple[Any, ...]]:
    """initial, then each status on the way to the task's own, as the normal path records."""
    created, started, finished = _task_times(run, task)
    rows: list[tuple[Any, ...]] = [
        (run_id, task_id, "status", TaskStatus.INITIAL.value, None, created, None)
    ]
    if task.status is TaskStatus.INITIAL:
        return rows
    if started is not None:
        # Started by the executor (queued, running), then ended as ``finish_task`` records.
        path = transition_path(TaskStatus.INITIAL, TaskStatus.RUNNING)
        path += transition_path(TaskStatus.RUNNING, task.status)
    else:
        path = transition_path(TaskStatus.INITIAL, task.status)
    message = task.exception_message and f"{task.exception_type}: {task.exception_message}"
    previous = TaskStatus.INITIAL
    for i, status in enumerate(path):
        last = i == len(path) - 1
        ended = status in TASK_TERMINAL
        at = (finished if ended else None) or started or created
        rows.append(
            (run_id, task_id, "status", status.value, previous.value, at, message if last else None)
        )
        previous = status
    return rows
