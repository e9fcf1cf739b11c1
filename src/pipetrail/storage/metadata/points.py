"""Metric points of one task as columns, and the blocks the store keeps them in.

A drain hands the store a task's points as :class:`MetricColumns`. The store keeps them as
blocks: one row per series (run, task, name) per write, holding that series' points of the
write as packed little-endian arrays (float64 values and times, int64 steps, a byte per point
saying it has no step). :func:`pack_blocks` makes a write's blocks and :func:`unpack_blocks`
reads blocks back as points in the order they were logged, with no Python work per point in the
usual cases (one series, or the same names in the same order at every step).

The order across series: the points of one write are numbered 0, 1, 2… in the order they were
logged; each block says where its points sit in that numbering (``first_position`` and
``position_stride`` when regular, else ``position_data``, the numbers packed). The block holding
point 0 starts a write's group, so a reader puts every write's points back in order, and the
writes in the order their first block was stored.
"""

from __future__ import annotations

import operator
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, NamedTuple, cast, overload

from pipetrail.storage.metadata.base import MetricRow

__all__ = [
    "BLOCK_COLUMNS",
    "BlockRead",
    "Latest",
    "MetricColumns",
    "pack_blocks",
    "unpack_blocks",
]

_LITTLE = sys.byteorder == "little"


class MetricColumns(Sequence[MetricRow]):
    """The points of one task attempt, one column per field, in the order they were logged.

    A sequence of :class:`MetricRow` to whoever iterates it, so it goes wherever rows go
    (``SpoolBatch.metrics``); a store that knows it takes the columns whole. The columns are
    lists, arrays or (from a spool) strided memoryviews over the spool's slots: nothing appends
    to them afterwards.

    Attributes:
        names: the series names by number (``ids`` index it).
        ids: per point, the number of its series' name.
        values, steps, times: per point; a point's step is meaningless where ``missing`` says so.
        missing: per point, a nonzero byte when it has no step; None when every point has one.
    """

    __slots__ = ("ids", "missing", "names", "run_id", "steps", "task_id", "times", "values")

    def __init__(
        self,
        run_id: int,
        task_id: int,
        names: Sequence[str] = (),
        ids: Sequence[int] = (),
        values: Sequence[float] = (),
        steps: Sequence[int] = (),
        times: Sequence[float] = (),
        missing: bytes | None = None,
    ) -> None:
        self.run_id = run_id
        self.task_id = task_id
        self.names = names
        self.ids = ids
        self.values = values
        self.steps = steps
        self.times = times
        self.missing = missing

    @classmethod
    def of_rows(cls, rows: Iterable[MetricRow]) -> list[MetricColumns]:
        """``rows`` as columns, one part per stretch of consecutive rows of the same task (so
        a part's points, and the parts, keep the order given)."""
        parts: list[tuple[MetricColumns, dict[str, int], bytearray]] = []
        for run_id, task_id, name, value, step, timestamp in rows:
            if not parts or parts[-1][0].task_id != task_id or parts[-1][0].run_id != run_id:
                parts.append((cls(run_id, task_id, [], [], [], [], []), {}, bytearray()))
            part, numbers, missing = parts[-1]
            number = numbers.get(name)
            if number is None:
                number = numbers[name] = len(numbers)
                cast("list[str]", part.names).append(name)
            cast("list[int]", part.ids).append(number)
            cast("list[float]", part.values).append(value)
            cast("list[float]", part.times).append(timestamp)
            cast("list[int]", part.steps).append(0 if step is None else step)
            missing.append(step is None)
        for part, _, missing in parts:
            part.missing = bytes(missing) if missing.count(0) != len(missing) else None
        return [part for part, _, _ in parts]

    def step_of(self, index: int) -> int | None:
        missing = self.missing
        return None if missing is not None and missing[index] else int(self.steps[index])

    def __len__(self) -> int:
        return len(self.times)

    @overload
    def __getitem__(self, index: int) -> MetricRow: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[MetricRow]: ...
    def __getitem__(self, index: int | slice) -> MetricRow | Sequence[MetricRow]:
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += len(self)
        return MetricRow(
            self.run_id,
            self.task_id,
            self.names[self.ids[index]],
            float(self.values[index]),
            self.step_of(index),
            float(self.times[index]),
        )

    def __iter__(self) -> Iterator[MetricRow]:
        run, task = repeat(self.run_id), repeat(self.task_id)
        names = map(self.names.__getitem__, self.ids)
        steps: Iterable[int | None] = self.steps
        if self.missing is not None:
            steps = [None if m else s for s, m in zip(self.steps, self.missing, strict=True)]
        return map(MetricRow, run, task, names, self.values, steps, self.times)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<MetricColumns run {self.run_id} task {self.task_id}: {len(self)} points>"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with its columns copied out (memoryviews over a spool do not pickle), so a
        task's last drain can travel with its outcome from a worker process."""
        columns = [_portable(c) for c in (self.ids, self.values, self.steps, self.times)]
        missing = None if self.missing is None else bytes(self.missing)
        return (_rebuild, (self.run_id, self.task_id, list(self.names), columns, missing))


class _Packed(NamedTuple):
    """A memoryview column as it is pickled: its items' format and bytes (contiguous)."""

    format: str
    data: bytes


def _portable(column: Sequence[Any]) -> Any:
    if isinstance(column, memoryview):
        return _Packed(column.format, column.tobytes())
    return column


def _column(portable: Any) -> Any:
    if isinstance(portable, _Packed):
        return cast(Any, memoryview(portable.data)).cast(portable.format)
    return portable


def _rebuild(
    run_id: int, task_id: int, names: list[str], columns: list[Any], missing: bytes | None
) -> MetricColumns:
    ids, values, steps, times = (_column(c) for c in columns)
    return MetricColumns(run_id, task_id, names, ids, values, steps, times, missing)


#: A block's columns, in the order :func:`pack_blocks` gives each block's values.
BLOCK_COLUMNS = (
    "run_id",
    "block_run_id",
    "name",
    "points",
    "first_step",
    "last_step",
    "first_time",
    "last_time",
    "first_position",
    "position_stride",
    "position_data",
    "value_data",
    "step_data",
    "step_missing",
    "time_data",
)


class Latest(NamedTuple):
    """A series' newest point in one write, with the write's minimum and maximum."""

    run_id: int
    name: str
    value: float
    step: int | None
    timestamp: float
    task_id: int
    min_value: float
    max_value: float


def pack_blocks(points: MetricColumns) -> tuple[list[tuple[Any, ...]], list[Latest]]:
    """The blocks of one task's points (tuples in :data:`BLOCK_COLUMNS` order, the block of the
    first point first) and each series' latest point, minimum and maximum.

    The newest point of a series is the one with the greatest time, the later logged of equal
    times (so a clock that goes back is handled).
    """
    count = len(points)
    if not count:
        return [], []
    blocks: list[tuple[Any, ...]] = []
    latest: list[Latest] = []
    run_id, task_id, names = points.run_id, points.task_id, points.names
    values, steps, times, missing = points.values, points.steps, points.times, points.missing
    # The series of one log_metrics call share their times: the newest is found once.
    seen_times, newest = b"", 0
    for start, number, lead, stride, pick in _series(points.ids, count, len(names)):
        if stride is not None:
            cut = slice(start + lead, pick[0], stride)
            vals, stps, tms = values[cut], steps[cut], times[cut]
            gaps = missing[cut] if missing is not None else None
            positions = None
        else:
            take = _taker(pick)
            vals, stps, tms = take(values), take(steps), take(times)
            gaps = bytes(take(missing)) if missing is not None else None
            positions = _pack([spot - start for spot in pick], "I")
        size = len(tms)
        if gaps is not None and gaps.count(0) == size:
            gaps = None
        last_time = tms[-1]
        time_data = _pack(tms, "d")
        if time_data != seen_times:
            seen_times, newest_time = time_data, max(tms)
            newest = size - 1 if last_time == newest_time else _last_index(tms, newest_time)
        first_step = None if gaps is not None and gaps[0] else int(stps[0])
        last_step = None if gaps is not None and gaps[-1] else int(stps[-1])
        all_missing = gaps is not None and gaps.count(0) == 0
        name = names[number]
        low, high = min(vals), max(vals)
        blocks.append(
            (
                run_id,
                task_id,
                name,
                size,
                first_step,
                last_step,
                float(tms[0]),
                float(last_time),
                lead,
                stride,
                positions,
                _pack(vals, "d"),
                None if all_missing else _pack(stps, "q"),
                gaps,
                time_data,
            )
        )
        step = None if gaps is not None and gaps[newest] else int(stps[newest])
        latest.append(
            Latest(
                run_id,
                name,
                float(vals[newest]),
                step,
                float(tms[newest]),
                task_id,
                float(low),
                float(high),
            )
        )
    return blocks, latest


#: A write cut into stretches of fewer points a block than this is grouped by name instead.
_POINTS_PER_BLOCK = 64


def _series(
    ids: Sequence[int], count: int, names: int
) -> list[tuple[int, int, int, int | None, list[int]]]:
    """The series of a write's points: (start of its stretch, name number, first position in
    the stretch, stride, then [end] with a stride, else the points' indices), each stretch's
    series of its position 0 first. ``names``: how many names ``ids`` may number.

    A stretch is regular: one series, or the same names in the same order over and over
    (log_metrics of one dict), the last round maybe cut short; found with byte compares in C,
    so a point of another series now and then (the system sampler's) only cuts the write in
    three stretches. A write that would be cut into many small stretches is one stretch whose
    points are grouped by name (a Python pass over them), their positions packed.
    """
    raw = _pack(ids, "I")
    stretches: list[tuple[int, int, int]] = []
    start = blocks = 0
    while start < count:
        end, period = _regular(raw, start, count, names)
        stretches.append((start, end, period))
        blocks += min(period, end - start)
        start = end
    if len(stretches) == 1 or blocks * _POINTS_PER_BLOCK <= count:
        return [
            (start, int(ids[start + k]), k, period, [end])
            for start, end, period in stretches
            for k in range(min(period, end - start))
        ]
    found: dict[int, list[int]] = {}
    for index, number in enumerate(ids):
        spots = found.get(number)
        if spots is None:
            found[number] = [index]
        else:
            spots.append(index)
    return [(0, int(number), spots[0], None, spots) for number, spots in found.items()]


def _regular(raw: bytes, start: int, count: int, names: int) -> tuple[int, int]:
    """(end, period) of the longest regular stretch of the packed name numbers ``raw`` from
    point ``start``: the names of its first ``period`` points, all different (so no more than
    ``names``), over and over."""
    item = 4
    first = raw[start * item : (start + 1) * item]
    at = raw.find(first, (start + 1) * item)
    while at > 0 and at % item:
        at = raw.find(first, at + 1)
    period = at // item - start if at > 0 else count - start
    round_ = raw[start * item : (start + period) * item]
    if period > names or len({round_[i : i + item] for i in range(0, len(round_), item)}) != period:
        return start + 1, 1  # a name twice in a round: this point alone
    left = count - start
    pattern = round_ * -(-left // period)
    body = raw[start * item :]
    if body == pattern[: len(body)]:
        return count, period
    low, high = period, left  # the stretch holds low points and not high ones
    while high - low > 1:
        middle = (low + high) // 2
        if body[: middle * item] == pattern[: middle * item]:
            low = middle
        else:
            high = middle
    return start + low, period


def _taker(pick: list[int]) -> Callable[[Any], Sequence[Any]]:
    if len(pick) == 1:
        return lambda column: [column[pick[0]]]
    getter = operator.itemgetter(*pick)
    return lambda column: cast("Sequence[Any]", getter(column))


def _last_index(times: Sequence[float], newest: float) -> int:
    listed = list(times)
    return len(listed) - 1 - listed[::-1].index(newest)


def _pack(column: Sequence[Any], code: str) -> bytes:
    """A column as packed little-endian items of ``array`` type ``code``."""
    if _LITTLE and isinstance(column, memoryview) and column.format == code:
        return column.tobytes()  # in C, strided or not
    packed = array(code, column)
    if not _LITTLE:
        packed.byteswap()
    return packed.tobytes()


def _unpack(data: bytes, code: str) -> list[Any]:
    if _LITTLE:
        return cast("list[Any]", memoryview(data).cast(code).tolist())  # type: ignore[call-overload]
    items = array(code)
    items.frombytes(data)
    items.byteswap()
    return items.tolist()


@dataclass(frozen=True, slots=True)
class BlockRead:
    """One stored block, as read: its task, name, where its points sit and their columns."""

    task_id: int
    name: str
    first_position: int
    position_stride: int | None
    position_data: bytes | None
    value_data: bytes
    step_data: bytes | None
    step_missing: bytes | None
    time_data: bytes

    @classmethod
    def of_row(cls, row: Sequence[Any]) -> BlockRead:
        """A block from a row of its columns in this class's field order, as a driver gives
        them (``bytes`` or ``memoryview``)."""
        task_id, name, first, stride, positions, values, steps, missing, times = row
        return cls(
            task_id,
            name,
            first,
            stride,
            None if positions is None else bytes(positions),
            bytes(values),
            None if steps is None else bytes(steps),
            None if missing is None else bytes(missing),
            bytes(times),
        )

    def columns(self) -> tuple[list[float], list[int | None], list[float]]:
        """Values, steps and times of the block's points, in the order logged."""
        values = _unpack(self.value_data, "d")
        times = _unpack(self.time_data, "d")
        if self.step_data is None:
            steps: list[int | None] = [None] * len(times)
        else:
            steps = _unpack(self.step_data, "q")
            if self.step_missing is not None:
                steps = [None if m else s for s, m in zip(steps, self.step_missing, strict=True)]
        return values, steps, times

    def positions(self, count: int) -> Sequence[int]:
        if self.position_stride is not None:
            start, stride = self.first_position, self.position_stride
            return range(start, start + stride * count, stride)
        return _unpack(self.position_data or b"", "I")


def unpack_blocks(
    blocks: Iterable[BlockRead],
    point: Callable[[str, float, int | None, float], Any],
    *,
    every_series: bool = True,
) -> list[tuple[int, Any]]:
    """(task id, ``point(name, value, step, time)``) of every point of ``blocks`` (in the order
    they were stored), in the order the points were logged.

    With ``every_series`` (``blocks`` are all of a run's) each write's blocks form a group,
    begun by its block at position 0, and its series are interleaved back; groups of different
    tasks may interleave (concurrent writers), those of one task never do. A group whose
    positions do not fit together (never written so) still gives every point, block by block.
    Without it (the blocks of one series) each block is its write's points of that series.
    """
    groups: list[tuple[int, list[BlockRead]]] = []
    open_: dict[int, list[BlockRead]] = {}
    for block in blocks:
        group = open_.get(block.task_id)
        if group is None or block.first_position == 0 or not every_series:
            group = open_[block.task_id] = []
            groups.append((block.task_id, group))
        group.append(block)
    out: list[tuple[int, Any]] = []
    for task_id, members in groups:
        decoded = []
        for block in members:
            values, steps, times = block.columns()
            decoded.append((block, list(map(point, repeat(block.name), values, steps, times))))
        if len(decoded) == 1:
            out.extend(zip(repeat(task_id), decoded[0][1], strict=False))
            continue
        total = sum(len(made) for _, made in decoded)
        ordered: list[Any] = [None] * total
        fits = True
        for block, made in decoded:
            spots = block.positions(len(made))
            if len(spots) != len(made) or (spots and not 0 <= spots[-1] < total):
                fits = False
                break
            if isinstance(spots, range):
                ordered[spots.start : spots.stop : spots.step] = made
            else:
                for spot, item in zip(spots, made, strict=True):
                    ordered[spot] = item
        if not fits or any(map(operator.is_, ordered, repeat(None))):
            ordered = [item for _, made in decoded for item in made]
        out.extend(zip(repeat(task_id), ordered, strict=False))
    return out
