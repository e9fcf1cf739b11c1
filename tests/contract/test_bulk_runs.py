"""Runs recorded in bulk (``import_runs``) read back as runs recorded by a real ``pt.run``.

On SQLite and PostgreSQL: a real run is made, rebuilt as an ``ImportedRun`` from what the store
holds, imported, and both are compared field by field (run, tasks, events, metrics, search).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import pipetrail as pt
from pipetrail.core.model import EventRecord, RunRecord, TaskRecord
from pipetrail.core.status import RunStatus, TaskStatus
from pipetrail.errors import UsageError
from pipetrail.storage.metadata.base import ImportedRun, ImportedTask, NewRun, RunQuery
from pipetrail.storage.metadata.sql.store import SqlMetadataStore
from pipetrail.workspace import Workspace


@pt.step
def prepare(rows: int = 10) -> int:
    return rows


@pt.step
def train(prepare: int, lr: float = 0.05, optimizer: str = "adam") -> float:
    for step in range(3):
        pt.log_metrics(
            {
                "accuracy": 0.8 + step * 0.05,
                "loss": 1.0 - step * 0.2,
                "f1": 0.7 + step * 0.01,
                "precision": 0.9,
                "recall": 0.6 + step * 0.1,
            },
            step=step,
        )
    return lr * prepare


PIPELINE = pt.Pipeline("bulk-contract", [prepare, train])


def _imported(store: SqlMetadataStore, record: RunRecord) -> ImportedRun:
    """The real run as an import: what ``create_run`` got, how it went, its tasks' points."""
    environment = None
    if record.environment_hash is not None:
        environment = (record.environment_hash, store.get_environment(record.environment_hash))
    new = NewRun(
        spec=PIPELINE.spec,
        params=record.params,
        param_types=record.param_types,
        variables=record.variables,
        user=record.user,
        host=record.host,
        trigger=record.trigger,
        user_tags=record.user_tags,
        system_tags=record.system_tags,
        git=record.git,
        code_key=record.code_key,
        environment=environment,
        origin_run_id=record.origin_run_id,
        runner_pid=record.runner_pid,
        timeout_s=record.timeout_s,
    )
    history = store.metric_history(record.id)
    tasks = [
        ImportedTask(
            step=t.step,
            status=t.status,
            task_index=t.task_index,
            attempt=t.attempt,
            created_at=t.created_at,
            started_at=t.started_at,
            finished_at=t.finished_at,
            cpu_time_s=t.cpu_time_s,
            peak_memory_bytes=t.peak_memory_bytes,
            gpu_peak_memory_bytes=t.gpu_peak_memory_bytes,
            gpu_time_s=t.gpu_time_s,
            exception_type=t.exception_type,
            exception_message=t.exception_message,
            traceback=t.traceback,
            host=t.host,
            pid=t.pid,
            worker=t.worker,
            note=t.note,
            allowed_failure=t.allowed_failure,
            spool_offset=t.spool_offset,
            metrics=[
                (p.name, p.value, p.step, p.timestamp.timestamp())
                for task_id, p in history
                if task_id == t.id
            ],
        )
        for t in store.tasks(record.id)
    ]
    return ImportedRun(
        new=new,
        status=record.status,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        error=record.error,
        tasks=tasks,
    )


def _run_fields(record: RunRecord) -> dict[str, Any]:
    fields = dataclasses.asdict(record)
    # The heartbeat thread may beat once more after the run ended; the id is the store's.
    for name in ("id", "heartbeat_at"):
        fields.pop(name)
    return fields


def _task_fields(task: TaskRecord) -> dict[str, Any]:
    fields = dataclasses.asdict(task)
    for name in ("id", "run_id", "reused_from_task_id"):
        fields.pop(name)
    return fields


def _histories(events: list[EventRecord], tasks: list[TaskRecord]) -> dict[str, list[Any]]:
    """Each run's and task's own history (the interleaving of the two is the engine's)."""
    names = {t.id: f"{t.step}/{t.task_index}/{t.attempt}" for t in tasks}
    found: dict[str, list[Any]] = {}
    for e in events:
        key = "run" if e.task_id is None else names[e.task_id]
        found.setdefault(key, []).append((e.kind, e.previous, e.status, e.message))
    return found


def test_a_bulk_run_reads_back_as_the_real_run(workspace: Workspace) -> None:
    store = workspace.store
    real = pt.run(
        PIPELINE, {"lr": 0.01}, tags=["phase:bulk"], executor="inline", workspace=workspace
    )
    record = store.get_run(real.id)
    assert record.status is RunStatus.COMPLETED

    (copy_id,) = store.import_runs([_imported(store, record)])

    copy = store.get_run(copy_id)
    assert copy_id != record.id
    assert _run_fields(copy) == _run_fields(record)
    real_tasks, copy_tasks = store.tasks(record.id), store.tasks(copy_id)
    assert [_task_fields(t) for t in copy_tasks] == [_task_fields(t) for t in real_tasks]
    assert _histories(store.events(copy_id), copy_tasks) == _histories(
        store.events(record.id), real_tasks
    )
    assert store.latest_metrics(copy_id) == store.latest_metrics(record.id)
    assert [p for _, p in store.metric_history(copy_id)] == [
        p for _, p in store.metric_history(record.id)
    ]
    # Search sees both the same way: params, latest / min / max metrics, tags, status.
    found = store.list_runs(
        RunQuery(
            filter="params.lr = 0.01 and metrics.accuracy > 0.85 and min(metrics.loss) < 0.7 "
            "and tags.phase = 'bulk' and status = 'completed'",
            order_by=("metrics.accuracy desc",),
        )
    )
    assert [r.id for r in found] == [copy_id, record.id]
    # And the client's handle reads it like the real one.
    handle = pt.Run(f"{PIPELINE.name}/{copy_id}", reader=workspace.reader())
    assert handle.params == real.params
    assert handle.metrics == real.metrics
    assert handle.tags == real.tags


def _plain(index: int, status: RunStatus, at: datetime, **changes: Any) -> ImportedRun:
    new = NewRun(
        spec=PIPELINE.spec,
        params={"lr": 0.001 * (index + 1), "optimizer": "sgd", "rows": index},
        param_types={"lr": "float", "optimizer": "str", "rows": "int"},
        variables={},
        user="seed",
        host="seed-host",
        trigger="cli",
        user_tags=(f"batch:{index % 3}",),
        system_tags=("user:seed",),
    )
    finished = (
        at + timedelta(seconds=30)
        if status
        in (
            RunStatus.COMPLETED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
        )
        else None
    )
    started = at + timedelta(seconds=1) if status is not RunStatus.INITIAL else None
    task_status = {
        RunStatus.COMPLETED: TaskStatus.COMPLETED,
        RunStatus.FAILED: TaskStatus.FAILED,
        RunStatus.CANCELLED: TaskStatus.CANCELLED,
        RunStatus.RUNNING: TaskStatus.RUNNING,
        RunStatus.INITIAL: TaskStatus.INITIAL,
    }[status]
    task = ImportedTask(
        step="train",
        status=task_status,
        started_at=started,
        finished_at=finished,
        metrics=[("accuracy", 0.5 + index / 1000, 0, at.timestamp() + 2)] if started else [],
    )
    fields: dict[str, Any] = {
        "new": new,
        "status": status,
        "created_at": at,
        "started_at": started,
        "finished_at": finished,
        "tasks": [task],
    }
    fields.update(changes)
    return ImportedRun(**fields)


def test_many_runs_in_one_call_every_status(workspace: Workspace) -> None:
    store = workspace.store
    start = datetime(2026, 1, 1, tzinfo=UTC)
    statuses = list(RunStatus)
    runs = [_plain(i, statuses[i % len(statuses)], start + timedelta(minutes=i)) for i in range(50)]
    ids = store.import_runs(runs)
    assert len(ids) == 50 and ids == sorted(ids)
    for run_id, run in zip(ids, runs, strict=True):
        record = store.get_run(run_id)
        assert record.status is run.status
        assert record.created_at == run.created_at
        assert record.params == run.new.params
        assert record.user_tags == run.new.user_tags
        assert record.pathspec == f"bulk-contract/{run_id}"
        history = [e.status for e in store.events(run_id) if e.task_id is None]
        expected = {
            RunStatus.INITIAL: ["initial"],
            RunStatus.RUNNING: ["initial", "running"],
        }.get(run.status, ["initial", "running", run.status.value])
        assert history == expected
    # The normal path goes on after a bulk import: new ids follow, nothing clashes.
    after = pt.run(PIPELINE, executor="inline", workspace=workspace)
    assert after.id > ids[-1]
    assert store.count_runs(RunQuery()) == 51
    assert store.count_runs(RunQuery(statuses=(RunStatus.FAILED,))) == 10
    assert len(store.list_runs(RunQuery(filter="params.rows >= 40", limit=None))) == 10


def test_a_run_that_cannot_have_happened_writes_nothing(workspace: Workspace) -> None:
    store = workspace.store
    at = datetime(2026, 1, 1, tzinfo=UTC)
    good = _plain(0, RunStatus.COMPLETED, at)
    unfinished = _plain(1, RunStatus.COMPLETED, at, finished_at=None)
    with pytest.raises(UsageError, match=r"run 1 of the import .*needs finished_at"):
        store.import_runs([good, unfinished])
    backwards = _plain(2, RunStatus.FAILED, at, started_at=at + timedelta(days=1))
    with pytest.raises(UsageError, match="created_at <= started_at <= finished_at"):
        store.import_runs([backwards])
    naive = _plain(3, RunStatus.COMPLETED, at, created_at=datetime(2026, 1, 1))
    with pytest.raises(UsageError, match="naive datetime"):
        store.import_runs([naive])
    running_task = dataclasses.replace(
        good, tasks=[dataclasses.replace(good.tasks[0], status=TaskStatus.RUNNING)]
    )
    with pytest.raises(UsageError, match=r"run 0 of the import .*'running' in a 'completed' run"):
        store.import_runs([running_task])
    naive_task = dataclasses.replace(
        good, tasks=[dataclasses.replace(good.tasks[0], finished_at=datetime(2026, 1, 1))]
    )
    with pytest.raises(UsageError, match=r"run 1 of the import .*task .*naive datetime"):
        store.import_runs([good, naive_task])
    no_start = _plain(4, RunStatus.COMPLETED, at, started_at=None)
    with pytest.raises(UsageError, match=r"run 0 of the import .*'initial' to 'completed'"):
        store.import_runs([no_start])
    assert store.count_runs(RunQuery()) == 0
    assert store.import_runs([]) == []
