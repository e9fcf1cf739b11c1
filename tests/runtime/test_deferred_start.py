"""Inline steps write their start only when they run for a moment; their end records the route.

A fast step's whole route (initial, queued, running, completed) is written with its end in one
transaction, each status at its own time; a step still running after the marker's delay is
seen ``running`` by any reader of the store while it runs.
"""

from __future__ import annotations

import pipetrail as pt
from pipetrail.core.status import TaskStatus
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

SLOW = """
import time

@pt.step
def quick():
    return 1

@pt.step
def slow(quick, db_url: str = ""):
    from pipetrail.storage.metadata.sql.store import SqlMetadataStore
    store = SqlMetadataStore(db_url, migrate_schema=False)
    me = next(t.id for t in store.tasks(pt.current.run_id) if t.step == "slow")
    seen = []
    try:
        for _ in range(100):  # up to 5 s for the marker to write the start
            status = store.get_task(me).status.value
            seen.append(status)
            if status == "running":
                break
            time.sleep(0.05)
    finally:
        store.close()
    return seen[-1]

pipeline = pt.Pipeline("deferred", [quick, slow])
"""


def test_a_slow_inline_step_is_seen_running_while_it_runs(
    workspace: Workspace, flow_file: FlowWriter
) -> None:
    pipeline = load_pipeline_file(flow_file(SLOW), "deferred")
    url = workspace.settings.db_url
    run = pt.run(pipeline, {"db_url": url}, executor="inline", workspace=workspace)
    assert run.status == "completed"
    assert run["slow"].task is not None
    assert run["slow"].task.data.slow == "running"
    events = run.events
    for step in run:
        assert step.task is not None
        history = [e.status for e in events if e.task_id == step.task.id]
        assert history == ["initial", "queued", "running", "completed"]
        times = [e.at for e in events if e.task_id == step.task.id]
        assert times == sorted(times)
        record = step.task.record
        assert record.host and record.pid and record.started_at and record.finished_at
        # The running event is the task's recorded start, not the time its end was written.
        running = next(e for e in events if e.task_id == step.task.id and e.status == "running")
        assert abs((running.at - record.started_at).total_seconds()) < 0.5


def test_a_deferred_start_is_not_written_after_its_end(
    workspace: Workspace, flow_file: FlowWriter
) -> None:
    """The marker writes a start only while the task is pending: an end that overtook it stands."""
    pipeline = load_pipeline_file(flow_file(SLOW), "deferred")
    run = pt.run(pipeline, {"db_url": ""}, executor="inline", workspace=workspace)
    task = run["quick"].task
    assert task is not None
    store = workspace.store
    assert store.set_task_status(task.id, TaskStatus.RUNNING, if_pending=True) is False
    assert store.get_task(task.id).status is TaskStatus.COMPLETED
    assert [e.status for e in run.events if e.task_id == task.id].count("running") == 1
