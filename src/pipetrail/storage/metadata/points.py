"""Metric points of one task as columns: how a drain hands its points to the store."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import repeat
from typing import Any, overload

from pipetrail.storage.metadata.base import MetricRow

__all__ = ["MetricColumns"]


class MetricColumns(Sequence[MetricRow]):
    """The points of one task attempt, one list per field, in the order they were logged.

    A sequence of :class:`MetricRow` to whoever iterates it, so it goes wherever rows go
    (``SpoolBatch.metrics``); a store that knows it takes the columns whole instead of building
    a tuple per point. The lists are owned by this object: nothing appends to them afterwards.
    """

    __slots__ = ("names", "run_id", "steps", "task_id", "times", "values")

    def __init__(
        self,
        run_id: int,
        task_id: int,
        names: list[str],
        values: list[float],
        steps: list[int | None],
        times: list[float],
    ) -> None:
        self.run_id = run_id
        self.task_id = task_id
        self.names = names
        self.values = values
        self.steps = steps
        self.times = times

    def __len__(self) -> int:
        return len(self.times)

    @overload
    def __getitem__(self, index: int) -> MetricRow: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[MetricRow]: ...
    def __getitem__(self, index: int | slice) -> MetricRow | Sequence[MetricRow]:
        if isinstance(index, slice):
            return list(self)[index]
        return MetricRow(
            self.run_id,
            self.task_id,
            self.names[index],
            self.values[index],
            self.steps[index],
            self.times[index],
        )

    def __iter__(self) -> Iterator[MetricRow]:
        run, task = repeat(self.run_id), repeat(self.task_id)
        return map(MetricRow, run, task, self.names, self.values, self.steps, self.times)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<MetricColumns run {self.run_id} task {self.task_id}: {len(self)} points>"

    def flat(self) -> list[Any]:
        """name, value, step, time of every point, one after the other (an INSERT's values)."""
        out: list[Any] = [None] * (4 * len(self.times))
        out[0::4] = self.names
        out[1::4] = self.values
        out[2::4] = self.steps
        out[3::4] = self.times
        return out
