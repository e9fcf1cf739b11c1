"""Listings and searches load their runs in a constant number of queries, and lose nothing.

Statements are counted with SQLAlchemy's ``before_cursor_execute`` event on the store's
engine, on SQLite and PostgreSQL: reading the params and metrics of every run a search returns
costs the same number of statements for 10 runs as for 200, and what they read equals what the
store holds for each run alone.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from sqlalchemy import event

import pipetrail as pt
from pipetrail.core.model import RunRecord
from pipetrail.core.status import RunStatus, TaskStatus
from pipetrail.storage.metadata.base import ImportedRun, ImportedTask, NewRun, RunQuery
from pipetrail.workspace import Workspace


@pt.step
def fit(lr: float = 0.1, layers: int = 2) -> float:
    return lr


SPEC = pt.Pipeline("batched", [fit]).spec
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _runs(count: int, *, first: int = 0) -> list[ImportedRun]:
    """``count`` completed runs with two params, three metrics and tags that differ per run."""
    runs = []
    for i in range(first, first + count):
        created = START + timedelta(minutes=i)
        started = created + timedelta(seconds=1)
        points = [
            ("accuracy", 0.5 + i / 1000, 0, started.timestamp() + 1),
            ("accuracy", 0.6 + i / 1000, 1, started.timestamp() + 2),
            ("loss", 1.0 / (i + 1), 1, started.timestamp() + 2),
        ]
        if i % 3 == 0:
            points.append(("f1", i / 100, 0, started.timestamp() + 3))
        runs.append(
            ImportedRun(
                new=NewRun(
                    spec=SPEC,
                    params={"lr": i / 100, "layers": i % 4},
                    param_types={"lr": "float", "layers": "int"},
                    variables={"shard": str(i)},
                    user="ana",
                    host="laptop",
                    trigger="cli",
                    user_tags=(f"batch:{i % 2}",),
                    system_tags=("user:ana",),
                ),
                status=RunStatus.COMPLETED,
                created_at=created,
                started_at=started,
                finished_at=started + timedelta(seconds=10 + i),
                tasks=[
                    ImportedTask(
                        "fit",
                        TaskStatus.COMPLETED,
                        started_at=started,
                        finished_at=started + timedelta(seconds=9),
                        metrics=points,
                    )
                ],
            )
        )
    return runs


@contextmanager
def _counted(workspace: Workspace) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(workspace.store.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(workspace.store.engine, "before_cursor_execute", count)


def _search_and_read(workspace: Workspace, limit: int) -> tuple[int, list[tuple[Any, ...]]]:
    """Statements a search of ``limit`` runs takes with every run's params and metrics read."""
    with _counted(workspace) as statements:
        runs = pt.search_runs(
            "metrics.accuracy > 0.1 and status = 'completed'",
            order_by=["metrics.accuracy desc"],
            limit=limit,
            reader=workspace.reader(),
        )
        seen = [(r.id, r.params, r.metrics, r.user_tags) for r in runs]
    assert len(seen) == limit
    return len(statements), seen


def test_a_search_reads_params_and_metrics_in_the_same_queries_for_10_runs_as_for_200(
    workspace: Workspace,
) -> None:
    workspace.store.import_runs(_runs(220))
    few, _ = _search_and_read(workspace, 10)
    many, seen = _search_and_read(workspace, 200)
    assert few == many
    assert many <= 8, "the run rows, their tags and versions, and one query for all metrics"
    # What the page read is what the store holds for each run read alone.
    for run_id, params, metrics, tags in seen:
        alone = workspace.store.get_run(run_id)
        assert params == alone.params
        assert metrics == workspace.store.latest_metrics(run_id)
        assert tags == frozenset(alone.user_tags)
    # Newest point of each series; the best accuracy first.
    best = max(range(220), key=lambda i: 0.6 + i / 1000)
    assert seen[0][1] == {"lr": best / 100, "layers": best % 4}
    assert seen[0][2]["accuracy"] == 0.6 + best / 1000


def test_iterating_a_pipeline_is_paged_and_every_page_loads_its_metrics_at_once(
    workspace: Workspace,
) -> None:
    workspace.store.import_runs(_runs(250))
    reader = workspace.reader()
    before = pt.namespace()
    pt.namespace("user:ana")
    try:
        with _counted(workspace) as first:
            head = list(islice(pt.Pipeline("batched", reader=reader), 100))
        with _counted(workspace) as metrics:
            read = {run.id: run.metrics for run in head}
        every = list(pt.Pipeline("batched", reader=reader))
    finally:
        pt.namespace(before)
    assert [r.id for r in head] == sorted((r.id for r in head), reverse=True)
    assert len(first) <= 4, "one page: its rows, tags and versions, nothing more"
    assert len(metrics) <= 2, "one query (and its BEGIN) for the metrics of the whole page"
    assert len(every) == 250 and len({r.id for r in every}) == 250
    for run_id, values in read.items():
        assert values == workspace.store.latest_metrics(run_id)


def test_a_run_read_alone_has_every_field_the_store_recorded(workspace: Workspace) -> None:
    (run_id,) = workspace.store.import_runs(_runs(1, first=7))
    run = pt.Run(f"batched/{run_id}", reader=workspace.reader())
    record = run.record
    assert run.params == {"lr": 0.07, "layers": 3}
    assert run.param_types == {"lr": "float", "layers": "int"}
    assert run.variables == {"shard": "7"}
    assert run.metrics == {"accuracy": 0.607, "loss": 1.0 / 8}
    assert record.created_at == START + timedelta(minutes=7)
    assert record.started_at is not None and record.started_at.tzinfo is not None
    assert record.started_at.utcoffset() == timedelta(0)
    assert run.duration == 17.0
    assert record.git is None and record.cancel_requested_at is None
    assert run.status == "completed" and run.user_tags == frozenset({"batch:1"})
    # A stored record is a RunRecord like any other: equal, replaceable, picklable.
    again = workspace.store.get_run(run_id)
    assert isinstance(again, RunRecord) and again == record
    plain = RunRecord(**{f.name: getattr(record, f.name) for f in dataclasses.fields(RunRecord)})
    assert plain == record and record == plain
    changed = dataclasses.replace(record, status=RunStatus.FAILED)
    assert changed.status is RunStatus.FAILED and changed.params == record.params
    assert pickle.loads(pickle.dumps(record)) == record
    assert "params={'lr': 0.07, 'layers': 3}" in repr(record)


def test_runs_without_metrics_read_none_and_a_listing_of_many_pages_reads_all(
    workspace: Workspace,
) -> None:
    ids = workspace.store.import_runs(_runs(5))
    bare = dataclasses.replace(_runs(1, first=9)[0], tasks=[])
    (bare_id,) = workspace.store.import_runs([bare])
    listed = pt.list_runs(pipeline="batched", all_namespaces=True, reader=workspace.reader())
    assert [r.id for r in listed] == [bare_id, *reversed(ids)]
    assert listed[0].metrics == {}
    assert all(r.metrics for r in listed[1:])
    found = workspace.store.list_runs(RunQuery(pipeline="batched", limit=None))
    assert workspace.store.latest_metrics_of([r.id for r in found] + [10_000]) == {
        r.id: workspace.store.latest_metrics(r.id) for r in found
    } | {10_000: {}}
