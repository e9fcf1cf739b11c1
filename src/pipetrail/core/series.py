"""Metric histories for charts: per-bucket min/max/last envelopes that never drop a spike.

A series longer than the chart's width is cut into that many buckets of consecutive points (in
the order logged, which is step order for a training loop); each bucket keeps its smallest,
largest and last value, so a one-point spike shows as the bucket's max. Shorter series are sent
exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pipetrail.core.model import MetricPoint

__all__ = ["Bucket", "bucket_ranges", "envelope"]


@dataclass(frozen=True)
class Bucket:
    """Summary of the points ``start_index..end_index`` (inclusive)."""

    start_index: int
    end_index: int
    step_start: int | None
    step_end: int | None
    time_start: datetime
    time_end: datetime
    min: float
    max: float
    last: float

    @property
    def count(self) -> int:
        return self.end_index - self.start_index + 1


def bucket_ranges(total: int, buckets: int) -> list[tuple[int, int]]:
    """``(start, end)`` index pairs (inclusive) cutting ``total`` points into at most
    ``buckets`` consecutive runs whose sizes differ by at most one: the one rule every chart of
    a metric uses (the API's envelopes and the dashboard's embedded series alike).
    """
    count = min(buckets, total)
    return [(b * total // count, (b + 1) * total // count - 1) for b in range(count)]


def envelope(points: Sequence[MetricPoint], buckets: int) -> list[Bucket]:
    """Cut ``points`` into at most ``buckets`` runs of near-equal length and summarise each.

    Raises:
        ValueError: ``buckets`` is less than 1.
    """
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    result = []
    for start, end in bucket_ranges(len(points), buckets):
        values = [p.value for p in points[start : end + 1]]
        first, last = points[start], points[end]
        result.append(
            Bucket(
                start_index=start,
                end_index=end,
                step_start=first.step,
                step_end=last.step,
                time_start=first.timestamp,
                time_end=last.timestamp,
                min=min(values),
                max=max(values),
                last=last.value,
            )
        )
    return result
