"""Metric series for the page's charts: min/max/last envelopes that keep every spike."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipetrail.core.model import MetricPoint
from pipetrail.core.series import bucket_ranges

if TYPE_CHECKING:
    from pipetrail.storage.metadata.base import MetadataStore

__all__ = ["BUCKETS", "EXACT_LIMIT", "Series", "envelope", "run_series"]

#: Buckets drawn per chart when the page embeds a series (about one per pixel column).
BUCKETS = 600
#: Series up to this many points are embedded exactly (the table view needs no request).
EXACT_LIMIT = 2000


@dataclass(frozen=True)
class Series:
    """One metric of one run, ready for the chart: ``x`` with ``min``, ``max`` and ``last``."""

    name: str
    count: int
    x_label: str
    x: list[float]
    lo: list[float]
    hi: list[float]
    last: list[float]
    exact: list[dict[str, Any]] | None
    steps: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "count": self.count,
            "x_label": self.x_label,
            "x": self.x,
            "min": self.lo,
            "max": self.hi,
            "last": self.last,
            "exact": self.exact,
            "steps": self.steps,
        }


def _finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


def envelope(
    xs: Sequence[float], values: Sequence[float], buckets: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Cut the points, in order, into ``buckets`` runs of near-equal length; keep each run's
    min, max and last value, by the same bucketing as the API (``core.series``).

    Every extreme survives: a spike shows as the band's edge in its bucket. Up to ``buckets``
    points come back unchanged (min = max = last). NaN and infinities are dropped.

    Returns:
        ``(x, min, max, last)``, where ``x`` is the x of each bucket's last point.
    """
    pairs = [(x, v) for x, v in zip(xs, values, strict=True) if _finite(v)]
    total = len(pairs)
    if total <= buckets:
        vals = [v for _, v in pairs]
        return [x for x, _ in pairs], vals, list(vals), list(vals)
    out_x: list[float] = []
    lo: list[float] = []
    hi: list[float] = []
    last: list[float] = []
    for start, end in bucket_ranges(total, buckets):
        chunk = pairs[start : end + 1]
        vals = [v for _, v in chunk]
        out_x.append(chunk[-1][0])
        lo.append(min(vals))
        hi.append(max(vals))
        last.append(vals[-1])
    return out_x, lo, hi, last


def run_series(
    store: MetadataStore, run_id: int, step_names: dict[int, str], *, buckets: int = BUCKETS
) -> list[Series]:
    """Every metric of a run, each as an envelope of at most ``buckets`` points.

    Args:
        store: the metadata store.
        run_id: the run.
        step_names: task id → step name, to say which step logged a metric.
        buckets: points per chart.
    """
    grouped: dict[str, list[tuple[int, MetricPoint]]] = {}
    for task_id, point in store.metric_history(run_id):
        grouped.setdefault(point.name, []).append((task_id, point))
    out = []
    for name in sorted(grouped):
        points = grouped[name]  # in the order logged, as the API serves them
        steps_logged = [p.step for _, p in points]
        # By step when every point has one and they only go up; else by position.
        by_step = (
            all(
                a is not None and b is not None and a <= b
                for a, b in itertools.pairwise(steps_logged)
            )
            and steps_logged[0] is not None
        )
        xs = [
            float(p.step) if by_step and p.step is not None else float(i)
            for i, (_, p) in enumerate(points)
        ]
        ys = [float(p.value) for _, p in points]
        x, lo, hi, last = envelope(xs, ys, buckets)
        exact = None
        if len(points) <= EXACT_LIMIT:
            exact = [
                {
                    "step": p.step,
                    # JSON has no NaN or infinity: say them as text.
                    "value": p.value if _finite(p.value) else str(p.value),
                    "timestamp": p.timestamp.isoformat(),
                }
                for _, p in points
            ]
        steps = sorted({step_names.get(t, "?") for t, _ in points})
        out.append(
            Series(name, len(points), "step" if by_step else "point", x, lo, hi, last, exact, steps)
        )
    return out
