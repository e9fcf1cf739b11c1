"""Counts and headline numbers come from aggregates over every run, not the newest N.

1,500 runs are bulk-created (more than any old window: 200 for the dashboard, 1,000 for SLA
counts), then runs move through the normal path (complete, fail, cancel, lost); every count
is checked against the truth computed in Python, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pipetrail as pt
from pipetrail.core.model import RunCause
from pipetrail.core.status import RUN_TERMINAL, RunStatus, TaskStatus
from pipetrail.dashboard.listing import RunFilters, load_page
from pipetrail.scheduling.service import TriggerService
from pipetrail.storage.metadata.base import (
    ImportedRun,
    ImportedTask,
    NewRun,
    RunQuery,
    TriggerDefinition,
)
from pipetrail.workspace import Workspace


@pt.step
def work(n: int = 1) -> int:
    return n


WIDE = pt.Pipeline("agg-wide", [work])
NARROW = pt.Pipeline("agg-narrow", [work])
NOW = datetime.now(UTC)
MIX = (RunStatus.COMPLETED,) * 6 + (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.RUNNING)


def _run(i: int) -> ImportedRun:
    status = MIX[i % len(MIX)]
    # Spread over ten days, oldest first; run i is i * 10 minutes after the first.
    created = NOW - timedelta(days=10) + timedelta(minutes=10 * i)
    started = created + timedelta(seconds=1)
    finished = started + timedelta(seconds=10 + i % 7) if status in RUN_TERMINAL else None
    task_status = {
        RunStatus.COMPLETED: TaskStatus.COMPLETED,
        RunStatus.FAILED: TaskStatus.FAILED,
        RunStatus.CANCELLED: TaskStatus.CANCELLED,
        RunStatus.RUNNING: TaskStatus.RUNNING,
    }[status]
    return ImportedRun(
        new=NewRun(
            spec=(WIDE if i % 3 else NARROW).spec,
            params={"n": i},
            param_types={"n": "int"},
            variables={},
            user="agg",
            host="agg-host",
            trigger="cron",
            user_tags=("even",) if i % 2 == 0 else (),
            system_tags=("user:agg",),
            cause=RunCause("nightly", created),
            sla_due_at=created + timedelta(hours=1),
        ),
        status=status,
        created_at=created,
        started_at=started,
        finished_at=finished,
        tasks=[ImportedTask("work", task_status, started_at=started, finished_at=finished)],
    )


def _truth(workspace: Workspace, **query: object) -> tuple[Counter[str], float | None, int]:
    runs = workspace.store.list_runs(RunQuery(limit=None, **query))  # type: ignore[arg-type]
    counts = Counter(r.status.value for r in runs)
    ended = [r.duration_s for r in runs if r.status in RUN_TERMINAL and r.duration_s is not None]
    recent = sum(1 for r in runs if r.created_at >= NOW - timedelta(hours=24))
    return counts, (sum(ended) / len(ended) if ended else None), recent


def _check(workspace: Workspace, **query: object) -> None:
    counts, average, recent = _truth(workspace, **query)
    summary = workspace.store.summarize_runs(
        RunQuery(**query),  # type: ignore[arg-type]
        recent_since=NOW - timedelta(hours=24),
    )
    assert summary.counts == dict(counts), query
    assert summary.total == sum(counts.values())
    assert summary.recent == recent
    if average is None:
        assert summary.average_duration_s is None
    else:
        assert summary.average_duration_s is not None
        assert abs(summary.average_duration_s - average) < 1e-6
    assert workspace.store.count_runs(RunQuery(**query)) == summary.total  # type: ignore[arg-type]


def test_counts_are_right_past_every_window(workspace: Workspace) -> None:
    store = workspace.store
    ids = store.import_runs([_run(i) for i in range(1500)])
    assert len(ids) == 1500
    # The normal path on top: a completed and a failed run, a cancel, a lost runner.
    pt.run(WIDE, executor="inline", workspace=workspace)
    waiting = store.create_run(
        NewRun(WIDE.spec, {}, {}, {}, user="agg", host="h", trigger="cli", runner_pid=1)
    )
    store.set_run_status(waiting.id, RunStatus.RUNNING)
    store.mark_lost(waiting.id, "runner lost")
    cancelled = store.create_run(NewRun(WIDE.spec, {}, {}, {}, user="agg", host="h", trigger="cli"))
    store.set_run_status(cancelled.id, RunStatus.CANCELLED)

    for query in (
        {},
        {"pipeline": "agg-wide"},
        {"pipeline": "agg-narrow"},
        {"statuses": (RunStatus.FAILED, RunStatus.CANCELLED)},
        {"pipeline": "agg-wide", "statuses": (RunStatus.COMPLETED,)},
        {"tags": ("even",)},
        {"filter": "params.n >= 700"},
        {"trigger": "nightly"},
        {"pipeline": "no-such-pipeline"},
    ):
        _check(workspace, **query)

    stats = {s.name: s for s in store.pipeline_stats()}
    for name in ("agg-wide", "agg-narrow"):
        counts, _, _ = _truth(workspace, pipeline=name)
        assert stats[name].counts == dict(counts)
        assert stats[name].latest_run_id == store.list_runs(RunQuery(pipeline=name, limit=1))[0].id


def test_dashboard_headline_and_sla_counts_cover_every_run(workspace: Workspace) -> None:
    store = workspace.store
    store.import_runs([_run(i) for i in range(1500)])
    page = load_page(workspace.reader(), RunFilters(), now=NOW)
    counts, average, recent = _truth(workspace)
    assert page.headline.average_duration == average
    ended = sum(counts[s.value] for s in RUN_TERMINAL)
    assert page.headline.considered == 1500
    assert not page.headline.capped and not page.headline.last_24h_capped
    assert page.headline.success_rate == counts["completed"] / ended
    assert page.headline.last_24h == recent
    assert page.headline.running == counts["running"] + counts["initial"]
    assert len(page.rows) == 50 and page.has_more
    failed = load_page(
        workspace.reader(), RunFilters(statuses=(RunStatus.FAILED,), pipeline="agg-narrow"), now=NOW
    )
    assert (
        failed.headline.considered
        == _truth(workspace, pipeline="agg-narrow", statuses=(RunStatus.FAILED,))[0]["failed"]
    )
    assert failed.headline.considered > 0
    assert failed.headline.success_rate == 0.0

    # 1,100 of the runs miss their SLA: the trigger's count is all of them, not the newest 1,000.
    missed = store.list_runs(RunQuery(trigger="nightly", limit=1100))
    for run in missed:
        store.settle_sla(run.id, "missed", NOW)
    trigger = store.create_trigger(
        TriggerDefinition(
            name="nightly", pipeline_file="flow.py", pipeline_name="agg-wide", kind="api"
        )
    )
    assert TriggerService(store).overview(trigger).sla_missed == 1100


def test_run_endings_are_read_whole_in_pages(workspace: Workspace) -> None:
    """The scheduler's scan of run endings: however many ended in its window, it sees each
    once, oldest first (it used to read only the newest 1,000 and skip the rest)."""
    store = workspace.store
    store.import_runs([_run(i) for i in range(25)])
    since = NOW - timedelta(days=11)
    ended = store.runs_ended_since(since, limit=4)
    expected = sum(1 for i in range(25) if MIX[i % len(MIX)] in RUN_TERMINAL)
    assert len(ended) == expected > 8
    assert len({r.id for r in ended}) == expected
    keys = [(r.finished_at, r.id) for r in ended]
    assert keys == sorted(keys)
