"""The task spool and the metric path: every point whose call returned is kept, exactly.

Points go through ``log_metric`` / ``log_metrics`` in a real step (inline executor, so the
drain thread, the back-pressure flushes and the final flush all run) into a real store on
SQLite and PostgreSQL; the spool file is read back as a salvage would read it, including a
point cut short at every byte by the death of its process.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest

import pipetrail as pt
from pipetrail.errors import UsageError
from pipetrail.runtime.spool import POINT, TaskSpool, read_records, tag_event
from pipetrail.storage.metadata.base import MetricRow
from pipetrail.workspace import Workspace

#: Past the drain's batch (10,000) several times (tests/runtime/test_metric_buffer.py takes the
#: back-pressure limit, BACKLOG batches, with small batches).
POINTS = 45_000
NAMES = [f"m{i}" for i in range(10)]


@pt.step
def single(points: int = 10) -> None:
    for i in range(points):
        pt.log_metric("loss", 1.0 / (i + 1), step=i)
    pt.log_metric("unstepped", 7)


@pt.step
def batched(points: int = 10) -> None:
    for i in range(points // len(NAMES)):
        pt.log_metrics({name: i + k / 10 for k, name in enumerate(NAMES)}, step=i)
        if i == 5:
            pt.set_tag("halfway")
    with pytest.raises(UsageError, match="'bad': value must be a finite number"):
        pt.log_metrics({"kept-not": 1.0, "bad": math.nan}, step=0)


def test_every_single_point_is_stored_in_order(workspace: Workspace) -> None:
    run = pt.run(
        pt.Pipeline("spool-single", [single]),
        {"points": POINTS},
        executor="inline",
        workspace=workspace,
    )
    assert run.status == "completed", run.error
    history = workspace.store.metric_history(run.id, "loss")
    assert [p.step for _, p in history] == list(range(POINTS))
    assert [p.value for _, p in history] == [1.0 / (i + 1) for i in range(POINTS)]
    assert workspace.store.count_metrics(run.id) == POINTS + 1
    assert run.metrics == {"loss": 1.0 / POINTS, "unstepped": 7.0}
    (unstepped,) = run.metric_history("unstepped")
    assert unstepped.step is None


def test_every_batched_point_is_stored_and_a_bad_call_keeps_none(workspace: Workspace) -> None:
    run = pt.run(
        pt.Pipeline("spool-batched", [batched]),
        {"points": POINTS},
        executor="inline",
        workspace=workspace,
    )
    assert run.status == "completed", run.error
    calls = POINTS // len(NAMES)
    assert workspace.store.count_metrics(run.id) == calls * len(NAMES)
    for k, name in enumerate(NAMES):
        history = run.metric_history(name)
        assert [(p.step, p.value) for p in history] == [(i, i + k / 10) for i in range(calls)]
    assert run.metrics == {name: calls - 1 + k / 10 for k, name in enumerate(NAMES)}
    assert "halfway" in run.user_tags


def _spool_points(folder: Path, rows: list[MetricRow], *, batched: bool = False) -> TaskSpool:
    spool = TaskSpool(folder)
    if batched:
        spool.metrics(rows)
    else:
        for row in rows:
            spool.metric(row)
    return spool


def _rows(count: int, names: list[str]) -> list[MetricRow]:
    return [
        MetricRow(3, 4, names[i % len(names)], i * 0.5, None if i % 7 == 0 else i, 1.7e9 + i)
        for i in range(count)
    ]


@pytest.mark.parametrize("batched", [False, True])
def test_the_spool_reads_back_every_point_past_its_first_megabyte(
    tmp_path: Path, batched: bool
) -> None:
    rows = _rows(40_000, NAMES)  # about 1.5 MB of points: the map grows under them
    spool = _spool_points(tmp_path / "3-4", rows[:20_000], batched=batched)
    spool.event(tag_event("between"))
    middle = spool.position
    if batched:
        spool.metrics(rows[20_000:])
    else:
        for row in rows[20_000:]:
            spool.metric(row)
    spool.close()
    contents = read_records(tmp_path / "3-4" / "records", 3, 4)
    assert contents.metrics == rows
    assert contents.events == [{"kind": "tag", "tag": "between"}]
    assert contents.end == spool.position
    assert read_records(tmp_path / "3-4" / "records", 3, 4, middle).metrics == rows[20_000:]


def test_a_point_cut_short_at_any_byte_is_left_out_and_the_rest_kept(tmp_path: Path) -> None:
    rows = _rows(4, ["loss"])
    whole = _spool_points(tmp_path / "whole", rows)
    before = _spool_points(tmp_path / "cut", rows[:3])
    whole.close()
    before.close()
    written = (tmp_path / "whole" / "points").read_bytes()
    last = written[before.position : whole.position]
    points = tmp_path / "cut" / "points"
    records = tmp_path / "cut" / "records"
    for cut in range(1, len(last)):
        data = bytearray(points.read_bytes())
        data[before.position : before.position + len(last)] = last[:cut] + bytes(len(last) - cut)
        points.write_bytes(bytes(data))
        contents = read_records(records, 3, 4)
        assert contents.metrics == rows[:3], f"cut after {cut} bytes"
        assert contents.end == before.position
    points.write_bytes(written)
    assert read_records(records, 3, 4).metrics == rows


def test_a_slot_never_written_is_skipped_by_salvage_and_waited_for_by_the_drain(
    tmp_path: Path,
) -> None:
    # A thread that took a slot and died (or is still packing it) leaves zeros there: salvage
    # keeps the points on either side; a live drain stops before it and takes it later.
    rows = _rows(5, ["loss", "acc"])
    spool = _spool_points(tmp_path / "3-4", rows)
    gap = 2 * POINT.size
    saved = spool._map[gap : gap + POINT.size]
    spool._map[gap : gap + POINT.size] = bytes(POINT.size)
    taken, end = spool.take(0, 100)
    assert (list(taken), end) == ([r._replace(run_id=0, task_id=0) for r in rows[:2]], 2)
    contents = read_records(tmp_path / "3-4" / "records", 3, 4)
    assert contents.metrics == rows[:2] + rows[3:]
    assert contents.end == spool.position
    spool._map[gap : gap + POINT.size] = saved
    taken, end = spool.take(2, 100)
    assert (list(taken), end) == ([r._replace(run_id=0, task_id=0) for r in rows[2:]], 5)
    spool.close()


@pt.step
def threaded(points: int = 10) -> None:
    def log(worker: int) -> None:
        for i in range(points):
            if i % 3 == 0:
                pt.log_metrics({f"w{worker}a": float(i), f"w{worker}b": -float(i)}, step=i)
            else:
                pt.log_metric(f"w{worker}", float(i), step=i)

    threads = [threading.Thread(target=log, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_points_logged_by_several_threads_at_once_are_each_stored_once(
    workspace: Workspace,
) -> None:
    points = 12_000  # per thread, past the drain's batch: drains run while they log
    run = pt.run(
        pt.Pipeline("spool-threads", [threaded]),
        {"points": points},
        executor="inline",
        workspace=workspace,
    )
    assert run.status == "completed", run.error
    for w in range(4):
        single = [i for i in range(points) if i % 3]
        assert [(p.step, p.value) for p in run.metric_history(f"w{w}")] == [
            (i, float(i)) for i in single
        ]
        paired = [i for i in range(points) if i % 3 == 0]
        assert [p.value for p in run.metric_history(f"w{w}b")] == [-float(i) for i in paired]
        assert [p.step for p in run.metric_history(f"w{w}a")] == paired
