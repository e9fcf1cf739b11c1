"""Metric blocks packed and read back without a store: any write's points come back exactly."""

from __future__ import annotations

import math
import pickle
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipetrail.runtime.spool import TaskSpool
from pipetrail.storage.metadata.base import MetricRow
from pipetrail.storage.metadata.points import (
    BLOCK_COLUMNS,
    BlockRead,
    MetricColumns,
    pack_blocks,
    unpack_blocks,
)

_READ = [BLOCK_COLUMNS.index(c) for c in ("block_run_id", "name")] + [
    BLOCK_COLUMNS.index(c)
    for c in (
        "first_position",
        "position_stride",
        "position_data",
        "value_data",
        "step_data",
        "step_missing",
        "time_data",
    )
]


def _point(name: str, value: float, step: int | None, timestamp: float) -> tuple[object, ...]:
    return (name, struct.pack("<d", value), step, timestamp)


def _round_trip(parts: list[MetricColumns]) -> list[tuple[int, tuple[object, ...]]]:
    stored = [block for part in parts for block in pack_blocks(part)[0]]
    blocks = [BlockRead.of_row([block[i] for i in _READ]) for block in stored]
    return unpack_blocks(blocks, _point)


def _expected(rows: list[MetricRow]) -> list[tuple[int, tuple[object, ...]]]:
    return [(r.task_id, _point(r.name, r.value, r.step, r.timestamp)) for r in rows]


values = st.floats(allow_nan=False) | st.sampled_from([-0.0, math.inf, -math.inf, 5e-324])
steps = st.none() | st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
point = st.tuples(
    st.sampled_from([1, 2]), st.sampled_from(["a", "b", "c", "d"]), values, steps, st.floats(0, 2e9)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(point, max_size=80), st.integers(1, 5))
def test_any_write_reads_back_in_order_with_exact_values(
    points: list[tuple[int, str, float, int | None, float]], repeat: int
) -> None:
    # Repeated rounds give regular stretches; the random tail breaks them anywhere.
    head = points[: len(points) // 2] * repeat
    rows = [MetricRow(7, task, name, v, s, t) for task, name, v, s, t in head + points]
    assert _round_trip(MetricColumns.of_rows(rows)) == _expected(rows)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("xyz"), values, steps), max_size=60), st.integers(0, 9))
def test_points_taken_from_a_spool_at_any_cut_read_back_exactly(
    tmp_path_factory: pytest.TempPathFactory, points: list[tuple[str, float, int | None]], cut: int
) -> None:
    folder = tmp_path_factory.mktemp("spool") / "1-1"
    spool = TaskSpool(folder)
    for name, value, step in points:
        spool.point(name, value, step, 1.7e9)
    first, end = spool.take(0, cut)
    rest, _ = spool.take(end, 1000)
    for part in (first, rest):
        part.run_id, part.task_id = 7, 1
    rows = [MetricRow(7, 1, name, value, step, 1.7e9) for name, value, step in points]
    assert _round_trip([first, rest]) == _expected(rows)
    spool.close()


def test_columns_pickle_whole_from_a_spool_and_empty(tmp_path: Path) -> None:
    """A task's last drain travels pickled from a worker process with its outcome."""
    spool = TaskSpool(tmp_path / "spool")
    for i in range(7):
        spool.point("a" if i % 2 else "b", i / 3, None if i == 3 else i, 1_700_000_000.5 + i)
    taken, _ = spool.take(0, 100)
    assert isinstance(taken.values, memoryview)
    back = pickle.loads(pickle.dumps(taken))
    assert list(back) == list(taken) and len(back) == 7
    assert (back.run_id, back.task_id, back.missing) == (taken.run_id, taken.task_id, taken.missing)
    empty = MetricColumns(3, 4)
    assert list(pickle.loads(pickle.dumps(empty))) == []
    spool.close()
