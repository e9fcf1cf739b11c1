"""Deleting runs in the metadata store, on SQLite and PostgreSQL (which enforces every foreign
key): every row under a run goes, rows of other runs that pointed at it keep their own record
with the pointer emptied, run_stats stays the truth, and refused runs are left whole."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

import pipetrail as pt
from pipetrail.core.status import RUN_TERMINAL, RunStatus, TaskStatus
from pipetrail.errors import NotFoundError
from pipetrail.governance.retention import delete_runs
from pipetrail.storage.metadata.base import (
    ImportedRun,
    ImportedTask,
    NewAlert,
    NewRun,
    RunQuery,
    TriggerDefinition,
)
from pipetrail.storage.metadata.governance import NewModelVersion
from pipetrail.storage.metadata.sql.tables import (
    artifact,
    artifact_link,
    block_run,
    latest_metric,
    log_chunk,
    metadata,
    metric_block,
    pipeline_run,
    run_event,
    run_param,
    run_tag,
)
from pipetrail.workspace import Workspace

FAIL = {"train": False}


@pt.step
def load(rows: int = 3) -> list[int]:
    print(f"loading {rows} rows")
    pt.log_metric("rows", rows)
    return list(range(rows))


@pt.step
def train(load: list[int]) -> float:
    if FAIL["train"]:
        raise RuntimeError("train failed on purpose")
    pt.log_artifact({"weights": load}, "model")
    return float(sum(load))


FLOW = pt.Pipeline("ret-flow", [load, train])
LOAD_ONLY = pt.Pipeline("ret-load", [load])
NOW = datetime.now(UTC)


def _run(ws: Workspace, *, fail: bool = False, rows: int = 3) -> pt.Run:
    FAIL["train"] = fail
    try:
        return pt.run(FLOW, {"rows": rows}, executor="inline", workspace=ws)
    finally:
        FAIL["train"] = False


def _rows_of(ws: Workspace, run_id: int) -> dict[str, int]:
    """How many rows of each per-run table belong to ``run_id``."""
    tasks = select(block_run.c.id).where(block_run.c.run_id == run_id)
    counts = {}
    with ws.store.engine.connect() as conn:
        for table in (metric_block, latest_metric, artifact_link, run_event, run_param, run_tag):
            counts[table.name] = conn.execute(
                select(func.count()).select_from(table).where(table.c.run_id == run_id)
            ).scalar_one()
        counts["log_chunk"] = conn.execute(
            select(func.count()).select_from(log_chunk).where(log_chunk.c.block_run_id.in_(tasks))
        ).scalar_one()
        counts["block_run"] = conn.execute(
            select(func.count()).select_from(block_run).where(block_run.c.run_id == run_id)
        ).scalar_one()
        counts["pipeline_run"] = conn.execute(
            select(func.count()).select_from(pipeline_run).where(pipeline_run.c.id == run_id)
        ).scalar_one()
    return counts


def _dangling(ws: Workspace) -> list[str]:
    """Every foreign key value of every table that names no row: none may exist."""
    found = []
    with ws.store.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for fk in table.foreign_keys:
                column, target = fk.parent, fk.column
                orphans = conn.execute(
                    select(func.count())
                    .select_from(table)
                    .where(column.is_not(None), column.not_in(select(target)))
                ).scalar_one()
                if orphans:
                    found.append(f"{table.name}.{column.name}: {orphans}")
    return found


def _table_counts(ws: Workspace) -> dict[str, int]:
    with ws.store.engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in metadata.sorted_tables
        }


def _stats_are_the_truth(ws: Workspace) -> None:
    runs = ws.store.list_runs(RunQuery(limit=None))
    for name in {r.pipeline for r in runs} | {None}:
        mine = [r for r in runs if name is None or r.pipeline == name]
        summary = ws.store.summarize_runs(RunQuery(pipeline=name))
        assert summary.counts == dict(Counter(r.status.value for r in mine)), name
        ended = [r.duration_s for r in mine if r.status in RUN_TERMINAL and r.duration_s]
        if ended:
            assert summary.average_duration_s is not None
            assert abs(summary.average_duration_s - sum(ended) / len(ended)) < 1e-6
        else:
            assert summary.average_duration_s is None
    stats = {s.name: s.counts for s in ws.store.pipeline_stats()}
    for name, counts in stats.items():
        assert counts == dict(Counter(r.status.value for r in runs if r.pipeline == name))


def test_a_run_goes_with_every_row_under_it_and_pointers_at_it_are_emptied(
    workspace: Workspace,
) -> None:
    store = workspace.store
    origin = _run(workspace, fail=True)
    assert origin.status == "failed"
    retry = pt.retry(origin, executor="inline", workspace=workspace)
    assert isinstance(retry, pt.Run) and retry.successful
    assert retry.origin_pathspec == origin.pathspec
    # A tick that started the origin, and an alert about it.
    trig = store.create_trigger(
        TriggerDefinition(name="t", pipeline_file="flow.py", pipeline_name=None, kind="api")
    )
    tick_at = datetime(2026, 1, 1, tzinfo=UTC)
    assert store.claim_tick(trig.id, tick_at)
    assert store.settle_tick(trig.id, tick_at, run_id=origin.id)
    store.enqueue_alerts(
        [NewAlert("failed:x", "run_failed", "hook", {"run": origin.id}, run_id=origin.id)], NOW
    )
    before = _rows_of(workspace, origin.id)
    assert all(before[t] > 0 for t in ("metric_block", "log_chunk", "artifact_link", "block_run"))
    reused = [t for t in store.tasks(retry.id) if t.reused_from_task_id is not None]
    assert reused, "the retry reuses the origin's completed load step"

    report = delete_runs(store, [origin.id], actor="ana")

    [outcome] = report.outcomes
    assert outcome.deleted and outcome.refused is None
    assert outcome.cleared["origin_run_id"] == [retry.id]
    assert outcome.cleared["trigger_tick.run_id"]
    assert outcome.cleared["alert.run_id"]
    assert set(_rows_of(workspace, origin.id).values()) == {0}
    assert _dangling(workspace) == []
    # The retry keeps its own record, with the pointer emptied and a note saying why.
    kept = store.get_run(retry.id)
    assert kept.origin_run_id is None and kept.status is RunStatus.COMPLETED
    notes = [e for e in store.events(retry.id) if e.kind == "note"]
    assert [n.message for n in notes] == [f"its origin run {origin.pathspec} was deleted by ana"]
    assert all(t.reused_from_task_id is None for t in store.tasks(retry.id))
    assert store.links(retry.id), "the retry's own links (to the reused outputs) stay"
    tick = store.get_tick(trig.id, tick_at)
    assert tick is not None and tick.run_id is None
    assert tick.skip_reason == f"its run {origin.pathspec} was deleted"
    assert [a.run_id for a in store.alerts(trigger_name=None)] == [None]
    [event] = store.governance_events(run_id=origin.id, action="run_deleted")
    assert event.actor == "ana" and event.run_id == origin.id
    assert event.detail["pipeline"] == "ret-flow" and event.detail["status"] == "failed"
    _stats_are_the_truth(workspace)
    with pytest.raises(NotFoundError, match=f"no run with id {origin.id}"):
        store.get_run(origin.id)


def test_a_dry_run_writes_nothing(workspace: Workspace) -> None:
    origin = _run(workspace, fail=True)
    retry = pt.retry(origin, executor="inline", workspace=workspace)
    assert isinstance(retry, pt.Run)
    before = _table_counts(workspace)

    report = delete_runs(workspace.store, [origin.id, retry.id], actor="ana", dry_run=True)

    assert report.dry_run and [o.facts.run_id for o in report.deleted] == [origin.id, retry.id]
    cleared = report.outcomes[0].cleared
    assert cleared["origin_run_id"] == [retry.id]
    reused = [t.id for t in workspace.store.tasks(retry.id) if t.reused_from_task_id]
    assert cleared["reused_from_task_id"] == reused
    assert _table_counts(workspace) == before
    assert workspace.store.get_run(retry.id).origin_run_id == origin.id


def _new_run(ws: Workspace, **extra: Any) -> int:
    return ws.store.create_run(
        NewRun(FLOW.spec, {}, {}, {}, user="u", host="h", trigger="cli", **extra)
    ).id


def test_refusals_name_the_reason_and_leave_the_run_whole(workspace: Workspace) -> None:
    store = workspace.store
    waiting = _new_run(workspace)
    running = _new_run(workspace)
    store.set_run_status(running, RunStatus.RUNNING)
    registered = _run(workspace)
    link = next(k for k in store.links(registered.id) if k.name == "model")
    store.register_model_version(
        NewModelVersion("churn", registered.id, link.task_id, "model", link.artifact.key, "ana")
    )
    store.move_alias("churn", "production", 1, "ana", None)
    kept = _run(workspace, rows=4)
    kept.add_tag("keep")
    retried = _run(workspace, fail=True, rows=5)
    _new_run(workspace, origin_run_id=retried.id)  # its retry, waiting to start
    free = _run(workspace, rows=6)
    ids = [waiting, running, registered.id, kept.id, retried.id, free.id]
    before = {i: _rows_of(workspace, i) for i in ids}

    report = delete_runs(store, ids, actor="ana")

    reasons = {o.facts.run_id: o.refused for o in report.refused}
    assert reasons[waiting] == (
        f"run ret-flow/{waiting} is still initial; wait for it to end or cancel it first: "
        f"pipetrail runs cancel {waiting}"
    )
    assert "is still running" in (reasons[running] or "")
    assert reasons[registered.id] == (
        f"run {registered.pathspec} produced registered model version churn/1 "
        "(alias production); a run a model version comes from is kept"
    )
    assert reasons[kept.id] == (
        f"run {kept.pathspec} is tagged 'keep'; to delete it, remove the tag first: "
        f"pipetrail runs tag {kept.id} --remove keep"
    )
    assert "is the origin or upstream of run" in (reasons[retried.id] or "")
    assert [o.facts.run_id for o in report.deleted] == [free.id]
    for run_id in ids[:-1]:
        assert _rows_of(workspace, run_id) == before[run_id]
    assert _dangling(workspace) == []
    # Once the tag is off, the kept run goes.
    kept.remove_tag("keep")
    assert delete_runs(store, [kept.id], actor="ana").deleted


def test_run_stats_stay_the_truth_after_deleting_many(workspace: Workspace) -> None:
    mix = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.RUNNING)
    imported = []
    for i in range(40):
        status = mix[i % len(mix)]
        created = NOW - timedelta(days=40 - i)
        started = created + timedelta(seconds=1)
        finished = started + timedelta(seconds=3 + i) if status in RUN_TERMINAL else None
        task = TaskStatus(status.value)
        imported.append(
            ImportedRun(
                new=NewRun(FLOW.spec, {"rows": i}, {"rows": "int"}, {}, "u", "h", "cli"),
                status=status,
                created_at=created,
                started_at=started,
                finished_at=finished,
                tasks=[ImportedTask("load", task, started_at=started, finished_at=finished)],
            )
        )
    ids = workspace.store.import_runs(imported)
    _run(workspace)  # and one through the normal path

    report = delete_runs(workspace.store, ids[::3], actor="ana")

    chosen = range(0, 40, 3)
    assert len(report.deleted) == sum(1 for j in chosen if mix[j % len(mix)] in RUN_TERMINAL)
    assert {o.facts.status for o in report.refused} == {"running"}
    _stats_are_the_truth(workspace)
    assert _dangling(workspace) == []


def test_gc_rows_and_references(workspace: Workspace) -> None:
    store = workspace.store
    first = _run(workspace, rows=7)
    second = _run(workspace, rows=8)
    keys_first = {k.artifact.key for k in store.links(first.id)}
    keys_second = {k.artifact.key for k in store.links(second.id)}
    assert keys_first - keys_second, "the runs made different values"
    delete_runs(store, [first.id], actor="ana")

    referenced = store.referenced_keys()
    assert keys_second <= referenced and not (keys_first - keys_second) & referenced
    code = store.get_run(second.id).code_key
    assert code is not None and code in referenced
    gone = keys_first - keys_second
    young = {sorted(gone)[0]}
    dry = store.collect_rows(young, dry_run=True)
    assert dry.artifacts == len(gone) - 1
    assert store.collect_rows(young).artifacts == len(gone) - 1
    with store.engine.connect() as conn:
        left = set(conn.execute(select(artifact.c.key)).scalars())
    assert gone & left == young and keys_second <= left
    assert store.collect_rows(set()).artifacts == 1


def test_housekeeping_is_claimed_once_per_period(workspace: Workspace) -> None:
    store = workspace.store
    assert store.claim_housekeeping("retention", NOW, 3600)
    assert not store.claim_housekeeping("retention", NOW + timedelta(minutes=59), 3600)
    assert store.claim_housekeeping("other", NOW, 3600), "each job has its own period"
    assert store.claim_housekeeping("retention", NOW + timedelta(hours=1), 3600)
    assert not store.claim_housekeeping("retention", NOW + timedelta(hours=1), 3600)


def test_a_run_upstream_of_a_model_version_is_its_lineage_and_stays(workspace: Workspace) -> None:
    store = workspace.store
    origin = _run(workspace, fail=True)
    retry = pt.retry(origin, executor="inline", workspace=workspace)
    assert isinstance(retry, pt.Run) and retry.successful
    # The same value as the origin's load, made by a run of its own: equal content is no lineage.
    same_content = pt.run(LOAD_ONLY, {"rows": 3}, executor="inline", workspace=workspace)
    link = next(k for k in store.links(retry.id) if k.name == "model")
    store.register_model_version(
        NewModelVersion("churn", retry.id, link.task_id, "model", link.artifact.key, "ana")
    )

    assert store.model_lineage() == {origin.id: ("churn/1",)}
    report = delete_runs(store, [origin.id, same_content.id], actor="ana")

    [refused] = report.refused
    assert refused.refused == (
        f"run {origin.pathspec} is upstream of registered model version churn/1: a run whose "
        "outputs a model version's run consumed is part of its lineage"
    )
    assert [o.facts.run_id for o in report.deleted] == [same_content.id]
