"""The compare page's model: parameters side by side, final metrics, histories, coordinates."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipetrail.client import Reader, Run
from pipetrail.dashboard.charts import run_series
from pipetrail.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from pipetrail.storage.metadata.base import MetadataStore

__all__ = ["CompareView", "Row", "compare_view", "parse_run_ids"]

#: Points per run in an overlaid history chart.
OVERLAY_BUCKETS = 300
#: More runs than this are not compared on one page.
MAX_RUNS = 50


@dataclass(frozen=True)
class Row:
    """One parameter or metric across the runs."""

    name: str
    values: tuple[Any, ...]
    present: tuple[bool, ...]
    differs: bool
    delta: float | None = None
    relative: float | None = None


@dataclass
class CompareView:
    """What the compare page shows; code, environment and artifacts for two runs only."""

    runs: list[Run]
    params: list[Row]
    metrics: list[Row]
    histories: list[dict[str, Any]]
    coordinates: dict[str, Any] | None
    code: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, Any] | None = None
    artifacts: list[dict[str, Any]] = field(default_factory=list)


def parse_run_ids(text: str) -> list[int]:
    """``"1,2, 3"`` or ``"iris/1,iris/2"`` → run ids, in order, without repeats.

    Raises:
        UsageError: a part that is neither a run id nor a pathspec ending in one.
    """
    ids: list[int] = []
    for part in filter(None, (p.strip() for p in text.replace(" ", ",").split(","))):
        tail = part.rsplit("/", 1)[-1].lstrip("#")
        if not tail.isdigit():
            raise UsageError(f"{part!r} is not a run id; use ids like ?runs=12,15 or iris/12")
        if int(tail) not in ids:
            ids.append(int(tail))
    return ids


def _same(value: Any) -> str:
    # JSON tells 1 from 1.0 and True from 1, which Python's == does not.
    return json.dumps(value, sort_keys=True, default=repr)


def _rows_from_comparison(comparison: Any) -> tuple[list[Row], list[Row]]:
    params = [Row(p.name, tuple(p.values), tuple(p.present), p.differs) for p in comparison.params]
    metrics = [
        Row(
            m.name,
            tuple(m.values),
            tuple(v is not None for v in m.values),
            m.differs,
            m.delta,
            m.relative,
        )
        for m in comparison.metrics
    ]
    return params, metrics


def _rows_by_hand(runs: list[Run]) -> tuple[list[Row], list[Row]]:
    per_params = [r.params for r in runs]
    per_metrics = [r.metrics for r in runs]
    params = []
    for name in sorted({n for p in per_params for n in p}):
        present = tuple(name in p for p in per_params)
        values = tuple(p.get(name) for p in per_params)
        keys = {(has, _same(v)) for has, v in zip(present, values, strict=True)}
        params.append(Row(name, values, present, len(keys) > 1))
    metrics = []
    for name in sorted({n for m in per_metrics for n in m}):
        mvalues = tuple(m.get(name) for m in per_metrics)
        delta = relative = None
        if len(mvalues) == 2 and mvalues[0] is not None and mvalues[1] is not None:
            delta = mvalues[1] - mvalues[0]
            relative = delta / abs(mvalues[0]) if mvalues[0] else None
        metrics.append(
            Row(
                name,
                mvalues,
                tuple(v is not None for v in mvalues),
                len(set(mvalues)) > 1,
                delta,
                relative,
            )
        )
    params.sort(key=lambda r: not r.differs)
    metrics.sort(key=lambda r: not r.differs)
    return params, metrics


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _coordinates(runs: list[Run], params: list[Row], metrics: list[Row]) -> dict[str, Any] | None:
    """Parallel coordinates for three runs or more: an axis per numeric parameter or metric
    that differs between them."""
    axes = [("params." + p.name, p.values) for p in params if p.differs] + [
        ("metrics." + m.name, m.values) for m in metrics
    ]
    dims = []
    for name, values in axes:
        nums = [_numeric(v) for v in values]
        known = [n for n in nums if n is not None]
        if len(known) < 2:
            continue
        lo, hi = min(known), max(known)
        if lo == hi:
            continue  # the same in every run: an axis that says nothing
        scaled = [None if n is None else (0.5 if hi == lo else (n - lo) / (hi - lo)) for n in nums]
        dims.append({"name": name, "min": lo, "max": hi, "values": nums, "scaled": scaled})
    if len(dims) < 2 or len(runs) < 3:
        return None
    return {"runs": [r.pathspec for r in runs], "dims": dims}


def _histories(runs: list[Run], store: MetadataStore) -> list[dict[str, Any]]:
    """For each metric logged by two or more runs: every run's envelope on one x axis."""
    per_run = [
        {s.name: s for s in run_series(store, r.id, {}, buckets=OVERLAY_BUCKETS)} for r in runs
    ]
    names = sorted({n for series in per_run for n in series})
    charts = []
    for name in names:
        holders = [i for i, series in enumerate(per_run) if name in series]
        if len(holders) < 2 or all(per_run[i][name].count <= 1 for i in holders):
            continue
        # One x axis for all: where a run has no point, the chart bridges the gap.
        xs = sorted({x for i in holders for x in per_run[i][name].x})
        lines = []
        for i in holders:
            s = per_run[i][name]
            at = {
                x: (lo, hi, last) for x, lo, hi, last in zip(s.x, s.lo, s.hi, s.last, strict=True)
            }
            lines.append(
                {
                    "run": runs[i].pathspec,
                    "index": i,
                    "min": [at[x][0] if x in at else None for x in xs],
                    "max": [at[x][1] if x in at else None for x in xs],
                    "last": [at[x][2] if x in at else None for x in xs],
                }
            )
        x_label = per_run[holders[0]][name].x_label
        charts.append({"name": name, "x_label": x_label, "x": xs, "lines": lines})
    return charts


def compare_view(ids: list[int], reader: Reader, store: MetadataStore) -> CompareView:
    """Read and compare the runs ``ids``.

    Raises:
        UsageError: fewer than two runs, or more than :data:`MAX_RUNS`.
        NotFoundError: an id that names no run.
    """
    if len(ids) < 2:
        raise UsageError("pick at least two runs to compare: /compare?runs=12,15")
    if len(ids) > MAX_RUNS:
        raise UsageError(f"{len(ids)} runs is too many for one page; compare at most {MAX_RUNS}")
    runs = []
    for run_id in ids:
        try:
            runs.append(Run(run_id, reader=reader))
        except NotFoundError:
            raise NotFoundError(f"no run with id {run_id} to compare") from None
    view = CompareView(runs, [], [], [], None)
    try:
        from pipetrail.client.comparison import compare
    except ImportError:  # the client's compare is not there yet: do the side-by-side here
        view.params, view.metrics = _rows_by_hand(runs)
    else:
        comparison = compare(*runs, reader=reader)
        view.params, view.metrics = _rows_from_comparison(comparison)
        if comparison.pairwise:
            view.code = [c.to_dict() for c in comparison.code if c.changed]
            env = comparison.environment
            view.environment = None if env is None else env.to_dict()
            view.artifacts = [a.to_dict() for a in comparison.artifacts]
    view.histories = _histories(runs, store)
    view.coordinates = _coordinates(runs, view.params, view.metrics)
    return view
