"""The metadata store's contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

import pipetrail as pt
from pipetrail.core.status import RunStatus, TaskStatus
from pipetrail.errors import InvalidTransitionError, LeaseLostError, NotFoundError, StoreError
from pipetrail.storage.metadata.base import (
    LogChunk,
    MetricRow,
    NewRun,
    RunQuery,
    SpoolBatch,
    TaskOutcome,
)
from pipetrail.storage.metadata.sql import migrate
from pipetrail.storage.metadata.sql.store import SqlMetadataStore
from pipetrail.storage.metadata.sql.tables import run_param
from pipetrail.workspace import Workspace


@pt.step
def only(lr: float = 0.1):  # type: ignore[no-untyped-def]
    return lr


PIPELINE = pt.Pipeline("contract", [only])


def _new_run(**overrides: object) -> NewRun:
    values: dict[str, object] = {
        "spec": PIPELINE.spec,
        "params": {"lr": 0.1, "opt": {"name": "adam", "betas": [0.9, 0.99]}, "flag": True},
        "param_types": {"lr": "float", "opt": "dict", "flag": "bool"},
        "variables": {"env": "dev"},
        "user": "ana",
        "host": "box",
        "trigger": "cli",
        "user_tags": ("exp", "user:ana"),
        "system_tags": ("user:ana",),
        "environment": ("e" * 64, {"python_version": "3.11.7", "packages": {"x": "1"}}),
    }
    values.update(overrides)
    return NewRun(**values)  # type: ignore[arg-type]


def test_schema_matches_the_models_after_migrating(workspace: Workspace) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from pipetrail.storage.metadata.sql.tables import metadata

    with workspace.store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    config = Config()
    config.set_main_option("script_location", str(migrate._SCRIPTS))
    assert ScriptDirectory.from_config(config).get_current_head() == migrate.HEAD_REVISION
    assert migrate.current_revision(workspace.store.engine) == migrate.HEAD_REVISION


def test_create_run_records_identity_params_tags(workspace: Workspace) -> None:
    store = workspace.store
    run = store.create_run(_new_run())
    assert run.status is RunStatus.INITIAL and run.pipeline == "contract"
    assert run.params["opt"] == {"name": "adam", "betas": [0.9, 0.99]}
    assert run.user_tags == ("exp",), "a user tag equal to a system tag is not doubled"
    assert run.system_tags == ("user:ana",)
    assert run.version == PIPELINE.version and run.dag["steps"][0]["name"] == "only"
    assert run.created_at.tzinfo is not None
    with store.engine.connect() as conn:
        rows = {
            r.key: r for r in conn.execute(select(run_param).where(run_param.c.run_id == run.id))
        }
    assert rows["opt.betas.1"].value_num == 0.99
    assert rows["opt.name"].value_text == "adam"
    assert rows["flag"].type == "bool" and rows["lr"].type == "number"


def test_long_nested_params_are_kept_whole(workspace: Workspace) -> None:
    huge = {"vocab": ["w" * 50] * 2000}
    run = workspace.store.create_run(_new_run(params={"cfg": huge}, param_types={"cfg": "dict"}))
    assert workspace.store.get_run(run.id).params == {"cfg": huge}


def test_environments_are_stored_once(workspace: Workspace) -> None:
    store = workspace.store
    first = store.create_run(_new_run())
    second = store.create_run(_new_run())
    assert first.environment_hash == second.environment_hash
    assert store.count_environments() == 1


def test_run_transitions_follow_the_state_machine(workspace: Workspace) -> None:
    store = workspace.store
    run = store.create_run(_new_run())
    running = store.set_run_status(run.id, RunStatus.RUNNING)
    assert running.started_at is not None
    done = store.set_run_status(run.id, RunStatus.COMPLETED)
    assert done.finished_at is not None and done.duration_s is not None
    with pytest.raises(InvalidTransitionError, match="from 'completed' to 'running'"):
        store.set_run_status(run.id, RunStatus.RUNNING)
    assert [e.status for e in store.events(run.id)] == ["initial", "running", "completed"]


def test_task_lifecycle_and_outcome(workspace: Workspace) -> None:
    store = workspace.store
    run = store.create_run(_new_run())
    ids = store.create_tasks(run.id, [("only", 0, 0)])
    task_id = ids[("only", 0, 0)]
    store.set_task_status(task_id, TaskStatus.QUEUED)
    store.set_task_status(task_id, TaskStatus.RUNNING, host="h", pid=7)
    started = datetime.now(UTC)
    store.finish_task(
        task_id,
        TaskOutcome(
            TaskStatus.FAILED,
            started_at=started,
            finished_at=started + timedelta(seconds=2),
            cpu_time_s=1.5,
            peak_memory_bytes=123,
            exception_type="ValueError",
            exception_message="bad",
            traceback="Traceback…",
        ),
    )
    store.record_spool(
        SpoolBatch(
            run.id, task_id, logs=[LogChunk("stdout", 0, 3, "out"), LogChunk("stderr", 0, 3, "err")]
        )
    )
    task = store.get_task(task_id)
    assert task.status is TaskStatus.FAILED and task.duration_s == 2.0
    assert (task.cpu_time_s, task.peak_memory_bytes, task.pid) == (1.5, 123, 7)
    assert store.logs(task_id) == {"stdout": "out", "stderr": "err"}
    history = [(e.previous, e.status) for e in store.events(run.id) if e.task_id == task_id]
    assert history == [
        (None, "initial"),
        ("initial", "queued"),
        ("queued", "running"),
        ("running", "failed"),
    ]
    with pytest.raises(InvalidTransitionError):
        store.set_task_status(task_id, TaskStatus.RUNNING)


def test_metrics_history_and_latest(workspace: Workspace) -> None:
    store = workspace.store
    run = store.create_run(_new_run())
    task_id = store.create_tasks(run.id, [("only", 0, 0)])[("only", 0, 0)]
    base = datetime.now(UTC).timestamp()
    points = [MetricRow(run.id, task_id, "loss", 1.0 / (i + 1), i, base + i) for i in range(5)]
    store.add_metrics(points)
    # A late batch with an older timestamp does not replace the latest value.
    store.add_metrics([MetricRow(run.id, task_id, "loss", 99.0, 0, base - 10)])
    assert store.latest_metrics(run.id) == {"loss": 0.2}
    history = [p for _, p in store.metric_history(run.id, "loss")]
    assert [p.value for p in history][:5] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert history[0].timestamp.tzinfo is not None
    assert abs(history[0].timestamp.timestamp() - base) < 1e-5


def test_list_runs_filters(workspace: Workspace) -> None:
    store = workspace.store
    a = store.create_run(_new_run(user_tags=("keep",)))
    b = store.create_run(_new_run())
    store.set_run_status(b.id, RunStatus.RUNNING)
    store.set_run_status(b.id, RunStatus.FAILED, error="boom")
    assert [r.id for r in store.list_runs(RunQuery())] == [b.id, a.id]
    assert [r.id for r in store.list_runs(RunQuery(statuses=(RunStatus.FAILED,)))] == [b.id]
    assert [r.id for r in store.list_runs(RunQuery(tags=("keep",)))] == [a.id]
    assert store.list_runs(RunQuery(pipeline="other")) == []
    future = datetime.now(UTC) + timedelta(hours=1)
    assert store.list_runs(RunQuery(since=future)) == []
    assert store.get_run(b.id).error == "boom"


def test_missing_things_are_not_found(workspace: Workspace) -> None:
    with pytest.raises(NotFoundError, match="no run with id 12345"):
        workspace.store.get_run(12345)
    with pytest.raises(NotFoundError):
        workspace.store.get_task(12345)


def test_naive_timestamps_are_rejected(workspace: Workspace) -> None:
    workspace.store.create_run(_new_run())
    with pytest.raises(StoreError, match="naive datetime"):
        workspace.store.list_runs(RunQuery(since=datetime.now()))


def test_a_failed_metric_batch_leaves_nothing_half_written(workspace: Workspace) -> None:
    store = workspace.store
    run = store.create_run(_new_run())
    task_id = store.create_tasks(run.id, [("only", 0, 0)])[("only", 0, 0)]
    good = MetricRow(run.id, task_id, "x", 1.0, None, 1.7e9)
    orphan = MetricRow(run.id, task_id + 999, "x", 2.0, None, 1.7e9)  # no such task: FK fails
    with pytest.raises(StoreError):
        store.add_metrics([good, orphan])
    assert store.metric_history(run.id) == []
    assert store.latest_metrics(run.id) == {}


def test_bad_database_url_is_a_config_error() -> None:
    with pytest.raises(pt.PipetrailError, match="cannot read database URL"):
        SqlMetadataStore("not a url")


def test_pipeline_stats_and_versions_are_aggregates(workspace: Workspace) -> None:
    store = workspace.store
    first = store.create_run(_new_run())
    second = store.create_run(_new_run())
    store.set_run_status(second.id, RunStatus.RUNNING)
    store.set_run_status(second.id, RunStatus.FAILED, error="boom")
    [stats] = store.pipeline_stats()
    assert stats.name == "contract" and stats.latest_run_id == second.id
    assert stats.counts == {"initial": 1, "failed": 1}
    assert store.pipeline_stats("nope") == []
    [version] = store.pipeline_versions("contract")
    assert version.version == PIPELINE.version and version.run_count == 2
    assert version.latest_run_id == second.id
    assert version.first_seen_at == first.created_at
    assert (
        version.first_seen_at.tzinfo is not None and version.last_seen_at >= version.first_seen_at
    )


def test_spool_drains_are_idempotent_and_logs_append(workspace: Workspace) -> None:
    store = workspace.store
    run = store.create_run(_new_run())
    task_id = store.create_tasks(run.id, [("only", 0, 0)])[("only", 0, 0)]
    base = datetime.now(UTC).timestamp()
    first = SpoolBatch(
        run.id,
        task_id,
        metrics=[MetricRow(run.id, task_id, "loss", 1.0, 0, base)],
        offset=33,
        logs=[LogChunk("stdout", 0, 6, "hello\n")],
    )
    store.record_spool(first)
    # The same chunk again (a drain repeated after a crash) adds nothing; a new one appends.
    store.record_spool(SpoolBatch(run.id, task_id, logs=[LogChunk("stdout", 0, 6, "hello\n")]))
    store.record_spool(
        SpoolBatch(run.id, task_id, offset=66, logs=[LogChunk("stdout", 6, 7, "wörld\n")])
    )
    assert store.logs(task_id) == {"stdout": "hello\nwörld\n"}
    assert store.log_ends(task_id) == {"stdout": 13}
    assert [c.text for c in store.log_chunks(task_id, {"stdout": 6})] == ["wörld\n"]
    assert store.get_task(task_id).spool_offset == 66
    assert store.latest_metrics(run.id) == {"loss": 1.0}


def test_a_run_taken_from_its_holder_refuses_its_writes(workspace: Workspace) -> None:
    store = workspace.store
    run = store.create_run(_new_run())
    task_id = store.create_tasks(run.id, [("only", 0, 0)])[("only", 0, 0)]
    store.hold(run.id, run.lease)
    store.set_task_status(task_id, TaskStatus.QUEUED)
    assert store.mark_lost(run.id, "runner lost: test")
    assert store.get_run(run.id).lease == run.lease + 1
    events = len(store.events(run.id))
    writes: list[Callable[[], object]] = [
        lambda: store.heartbeat(run.id),
        lambda: store.record_event(run.id, "timeout", "late"),
        lambda: store.create_tasks(run.id, [("only", 0, 1)]),
        lambda: store.add_metrics([MetricRow(run.id, task_id, "x", 1.0, 0, 1.0)]),
        lambda: store.record_spool(
            SpoolBatch(run.id, task_id, logs=[LogChunk("stdout", 0, 1, "x")])
        ),
        lambda: store.cancel_requested(run.id),
        lambda: store.set_run_status(run.id, RunStatus.COMPLETED),
    ]
    for write in writes:
        with pytest.raises(LeaseLostError, match=f"run {run.id} was taken"):
            write()
    assert len(store.events(run.id)) == events
    assert store.logs(task_id) == {} and store.latest_metrics(run.id) == {}
    # Anyone who does not hold the run (a person, the reaper) still reads and acts on it.
    store.release(run.id)
    assert store.cancel_requested(run.id) is None
