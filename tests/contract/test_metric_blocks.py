"""Metric points stored in blocks: every point reads back exactly, in the order logged.

Blocks are one row per series per write; these tests cross their boundaries (a series over
several writes, several tasks and attempts, series interleaved regularly and not, points
without a step, a clock going back) on SQLite and PostgreSQL, through the store's own entry
points (``add_metrics``, a spool's drains, ``import_runs``) and through the migration that moves
points stored one per row into blocks and back.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, func, select, text

import pipetrail as pt
from pipetrail.core.model import MetricPoint
from pipetrail.core.status import RunStatus, TaskStatus
from pipetrail.runtime.context import MetricBuffer
from pipetrail.runtime.spool import TaskSpool
from pipetrail.storage.metadata.base import ImportedRun, ImportedTask, MetricRow
from pipetrail.storage.metadata.sql import migrate
from pipetrail.storage.metadata.sql.tables import metric_block
from pipetrail.workspace import Workspace


@pt.step
def only() -> None:
    pass


PIPELINE = pt.Pipeline("blocks", [only])
T0 = 1.7e9


def _tasks(ws: Workspace, count: int) -> tuple[int, list[int]]:
    from tests.contract.test_metadata_store import _new_run

    run = ws.store.create_run(_new_run(spec=PIPELINE.spec, params={}, param_types={}))
    ids = ws.store.create_tasks(run.id, [("only", 0, attempt) for attempt in range(count)])
    return run.id, [ids[("only", 0, attempt)] for attempt in range(count)]


def _expected(rows: Sequence[MetricRow]) -> list[tuple[int, MetricPoint]]:
    return [
        (r.task_id, MetricPoint(r.name, r.value, r.step, datetime.fromtimestamp(r.timestamp, UTC)))
        for r in rows
    ]


def _bits(history: Sequence[tuple[int, MetricPoint]]) -> list[tuple[int, str, bytes, object]]:
    """Each point with its value's exact bits (so -0.0 and 0.0 differ)."""
    return [(t, p.name, struct.pack("<d", p.value), p.step) for t, p in history]


def _check(ws: Workspace, run_id: int, rows: Sequence[MetricRow]) -> None:
    store = ws.store
    history = store.metric_history(run_id)
    assert history == _expected(rows)
    assert _bits(history) == _bits(_expected(rows))
    for name in {r.name for r in rows}:
        mine = [r for r in rows if r.name == name]
        assert store.metric_history(run_id, name) == _expected(mine), name
    assert store.count_metrics(run_id) == len(rows)


def _odd_values() -> Iterator[float]:
    """Values whose exact bits a store could lose: tiny, huge, negative zero, infinities."""
    yield from (0.1 + 0.2, -0.0, 5e-324, 1.7976931348623157e308, -math.inf, math.inf, 1 / 3)
    while True:
        yield from (2.5, -7.25)


def test_a_series_over_several_writes_tasks_and_attempts(workspace: Workspace) -> None:
    store = workspace.store
    run_id, (first, retry) = _tasks(workspace, 2)
    values = _odd_values()
    names = ["loss", "acc", "lr"]
    rows: list[MetricRow] = []
    clock = T0
    for write in range(4):
        batch = []
        for i in range(7 + write):  # the last round of names cut short in some writes
            clock += 0.25
            step = None if i % 5 == 4 else write * 100 + i // 3
            batch.append(MetricRow(run_id, first, names[i % 3], next(values), step, clock))
        store.add_metrics(batch)
        rows += batch
        other = [MetricRow(run_id, retry, "loss", float(write), write, clock + 0.1)]
        store.add_metrics(other)
        rows += other
    _check(workspace, run_id, rows)
    assert store.latest_metrics(run_id)["loss"] == 3.0
    with workspace.store.engine.connect() as conn:
        blocks = conn.execute(
            select(func.count()).select_from(metric_block).where(metric_block.c.run_id == run_id)
        ).scalar_one()
    assert blocks == 4 * 3 + 4, "one block per series per write"


def test_series_interleaved_with_no_regular_order_and_no_steps(workspace: Workspace) -> None:
    run_id, (task,) = _tasks(workspace, 1)
    order = ["a", "b", "a", "a", "c", "b", "c", "c", "c", "a", "b"]
    rows = [
        MetricRow(run_id, task, name, float(i), None if name == "c" or i == 0 else i, T0 + i)
        for i, name in enumerate(order)
    ]
    workspace.store.add_metrics(rows)
    _check(workspace, run_id, rows)
    assert [p.step for _, p in workspace.store.metric_history(run_id, "c")] == [None] * 4


def _blocks(ws: Workspace, run_id: int) -> int:
    with ws.store.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(metric_block)
                .where(metric_block.c.run_id == run_id)
            ).scalar_one()
        )


def test_a_point_of_another_series_cuts_a_regular_write_in_stretches(
    workspace: Workspace,
) -> None:
    # 10 names logged together, with one system sample in the middle: three regular stretches
    # (10 + 1 + 10 blocks), each read back in its place.
    run_id, (task,) = _tasks(workspace, 1)
    rows: list[MetricRow] = []
    for i in range(200):
        at = T0 + i
        rows += [MetricRow(run_id, task, f"m{k}", i + k / 10, i, at) for k in range(10)]
        if i == 90:
            rows.append(MetricRow(run_id, task, "system/cpu_percent", 12.5, None, at))
    workspace.store.add_metrics(rows)
    _check(workspace, run_id, rows)
    assert _blocks(workspace, run_id) == 21


def test_a_write_with_no_long_regular_stretch_is_grouped_by_name(workspace: Workspace) -> None:
    run_id, (task,) = _tasks(workspace, 1)
    rows = [MetricRow(run_id, task, "ab"[i % 3 != 0], float(i), i, T0 + i / 8) for i in range(300)]
    workspace.store.add_metrics(rows)
    _check(workspace, run_id, rows)
    assert _blocks(workspace, run_id) == 2, "one block per name, its positions packed"


def test_one_write_of_several_tasks_keeps_each_stretch(workspace: Workspace) -> None:
    run_id, (a, b) = _tasks(workspace, 2)
    rows = [
        MetricRow(run_id, task, name, float(i), i, T0 + i)
        for i, (task, name) in enumerate(
            [(a, "x"), (a, "y"), (b, "x"), (b, "x"), (a, "y"), (a, "x"), (b, "z")]
        )
    ]
    workspace.store.add_metrics(rows)
    _check(workspace, run_id, rows)


def test_the_latest_point_is_the_newest_in_time_when_the_clock_goes_back(
    workspace: Workspace,
) -> None:
    run_id, (task,) = _tasks(workspace, 1)
    times = [T0 + 5, T0 + 9, T0 + 1, T0 + 9, T0 + 2]
    rows = [MetricRow(run_id, task, "m", float(i), i, t) for i, t in enumerate(times)]
    workspace.store.add_metrics(rows)
    _check(workspace, run_id, rows)
    with workspace.store.engine.connect() as conn:
        latest = conn.execute(
            text("SELECT value, step, min_value, max_value FROM latest_metric WHERE run_id = :r"),
            {"r": run_id},
        ).one()
    assert tuple(latest) == (3.0, 3, 0.0, 4.0), "the later logged of two equal newest times"


def test_points_drained_from_a_spool_in_many_writes_read_back_exactly(
    workspace: Workspace, tmp_path: Path
) -> None:
    # A batch of 7 points: writes cut the calls of 3 names anywhere, single points between.
    run_id, (task,) = _tasks(workspace, 1)
    spool = TaskSpool(tmp_path / f"{run_id}-{task}")
    buffer = MetricBuffer(
        workspace.store.record_spool, run_id=run_id, task_id=task, spool=spool, batch=7
    )
    rows: list[MetricRow] = []
    names = ["m0", "m1", "m2"]
    ids = buffer.name_ids(tuple(names))
    for i in range(40):
        at = T0 + i
        if i % 4 == 3:
            step = None if i % 8 == 3 else i
            buffer.point("single", -i / 7, step, at)
            rows.append(MetricRow(run_id, task, "single", -i / 7, step, at))
        else:
            values = [i + k / 3 for k in range(3)]
            buffer.points(ids, values, i, at)
            rows += [
                MetricRow(run_id, task, n, v, i, at) for n, v in zip(names, values, strict=True)
            ]
        if i % 6 == 5:
            buffer.flush()
    buffer.close()
    spool.remove()
    _check(workspace, run_id, rows)


def test_imported_runs_keep_their_points(workspace: Workspace) -> None:
    from tests.contract.test_metadata_store import _new_run

    at = datetime.fromtimestamp(T0, UTC)
    points = [("a", 1.0, 0, T0), ("b", -0.0, None, T0), ("a", 3.0, 1, T0 + 1)]
    tasks = [
        ImportedTask(step="only", status=TaskStatus.COMPLETED, attempt=attempt, metrics=points)
        for attempt in range(2)
    ]
    run = ImportedRun(
        new=_new_run(spec=PIPELINE.spec, params={}, param_types={}),
        status=RunStatus.COMPLETED,
        created_at=at,
        started_at=at,
        finished_at=at,
        tasks=tasks,
    )
    [run_id] = workspace.store.import_runs([run])
    rows = [
        MetricRow(run_id, task.id, *point)
        for task in workspace.store.tasks(run_id)
        for point in points
    ]
    _check(workspace, run_id, rows)
    assert workspace.store.latest_metrics(run_id) == {"a": 3.0, "b": 0.0}


def _alembic(conn: Connection, to: str, *, down: bool) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrate._SCRIPTS))
    config.attributes["connection"] = conn
    (command.downgrade if down else command.upgrade)(config, to)
    conn.commit()


def test_the_migration_moves_points_into_blocks_and_back(workspace: Workspace) -> None:
    store = workspace.store
    run_id, (a, b) = _tasks(workspace, 2)
    logged = [
        MetricRow(run_id, a, "x", 0.5, 0, T0),
        # Not -0.0: a row of the old table on SQLite keeps it as 0 (blocks keep its sign).
        MetricRow(run_id, a, "y", -2.5, None, T0),
        MetricRow(run_id, a, "x", 1.5, 1, T0 + 1),
    ]
    store.add_metrics(logged)
    # Points stored one per row, in an order no single write gives: the writes of two tasks
    # interleaved point by point (concurrent writers), names in no regular order.
    raw = [
        MetricRow(run_id, b, "x", 2.0, 0, T0 + 2),
        MetricRow(run_id, a, "y", 5e-324, 7, T0 + 2),
        MetricRow(run_id, b, "z", math.inf, None, T0 + 3),
        MetricRow(run_id, b, "x", 4.0, 1, T0 + 3),
        MetricRow(run_id, a, "x", 1 / 3, 2, T0 + 4),
    ]
    engine = store.engine
    try:
        with engine.connect() as conn:
            _alembic(conn, "0008", down=True)
            stored = conn.execute(
                text("SELECT run_id, block_run_id, name, value, step, timestamp FROM metric")
            ).all()
            assert [MetricRow(*r) for r in stored] == logged, "downgraded: one row per point"
            for r in raw:
                conn.execute(
                    text(
                        "INSERT INTO metric (run_id, block_run_id, name, value, step, timestamp)"
                        " VALUES (:run_id, :task_id, :name, :value, :step, :timestamp)"
                    ),
                    r._asdict(),
                )
            conn.commit()
    finally:
        with engine.connect() as conn:
            _alembic(conn, "head", down=False)
    assert migrate.current_revision(engine) == migrate.HEAD_REVISION
    _check(workspace, run_id, logged + raw)
