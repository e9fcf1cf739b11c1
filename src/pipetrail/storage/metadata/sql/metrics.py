"""Metrics in the SQL store: points appended in batches, the latest value of each series kept."""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, select

from pipetrail.core.model import MetricPoint
from pipetrail.storage.metadata.base import MetricRow
from pipetrail.storage.metadata.sql.engine import insert_many_fast, upsert
from pipetrail.storage.metadata.sql.session import SqlSession, patient
from pipetrail.storage.metadata.sql.tables import latest_metric, metric

__all__ = ["MetricRows", "latest_rows"]

_LATEST = ("value", "step", "timestamp", "block_run_id")
#: Most run ids bound in one ``IN (…)``.
_IN_CHUNK = 1000
#: The latest values of one run, and of the runs ``ids``: built once (compiled once, cached).
_LATEST_ONE = (
    select(latest_metric.c.name, latest_metric.c.value)
    .where(latest_metric.c.run_id == bindparam("run_id"))
    .order_by(latest_metric.c.name)
)
_LATEST_OF = (
    select(latest_metric.c.run_id, latest_metric.c.name, latest_metric.c.value)
    .where(latest_metric.c.run_id.in_(bindparam("ids", expanding=True)))
    .order_by(latest_metric.c.run_id, latest_metric.c.name)
)


def _merge_latest(new: Any) -> dict[str, Any]:
    """A series' latest value on a clash: the newest point wins, whatever order batches arrive
    in; the running minimum and maximum take both."""
    table = latest_metric
    newer = new.timestamp >= table.c.timestamp
    return {
        **{c: case((newer, new[c]), else_=table.c[c]) for c in _LATEST},
        "min_value": case(
            (new.min_value < table.c.min_value, new.min_value), else_=table.c.min_value
        ),
        "max_value": case(
            (new.max_value > table.c.max_value, new.max_value), else_=table.c.max_value
        ),
    }


class MetricRows(SqlSession):
    """The metric half of the metadata store."""

    @patient("write")
    def add_metrics(self, rows: Sequence[MetricRow]) -> None:
        """Append metric points in one transaction and keep each series' latest value current."""
        if not rows:
            return
        with self._write() as conn:
            self._insert_metrics(conn, rows)

    def _insert_metrics(
        self, conn: Connection, rows: Sequence[MetricRow], *, fenced: AbstractSet[int] = frozenset()
    ) -> None:
        """``fenced``: runs whose lease this transaction checked already."""
        for run_id in {r.run_id for r in rows} - fenced:
            self._check_lease(conn, run_id)
        # MetricRow is already a tuple in this column order, with epoch-float timestamps.
        columns = ("run_id", "block_run_id", "name", "value", "step", "timestamp")
        insert_many_fast(conn, metric, columns, rows)
        self._latest(conn, rows)

    def _latest(self, conn: Connection, rows: Sequence[MetricRow]) -> None:
        """Keep each series' latest value, and its minimum and maximum, in one row for search."""
        latest = latest_rows(rows)
        upsert(conn, latest_metric, latest, ["run_id", "name"], merge=_merge_latest)

    @patient("read")
    def latest_metrics(self, run_id: int) -> dict[str, float]:
        with self._read() as conn:
            rows = conn.execute(_LATEST_ONE, {"run_id": run_id}).all()
        return {name: value for name, value in rows}

    @patient("read")
    def latest_metrics_of(self, run_ids: Sequence[int]) -> dict[int, dict[str, float]]:
        """The latest value of each metric of many runs, by run id, in one query per 1,000
        runs (a page of runs reads its metrics at once, not one query per run).

        The rows are the driver's tuples: a SQLAlchemy ``Row`` for each of a page's thousands
        of (run, name, value) rows cost more than the query.
        """
        # Imported here: this function's edit stays its own (the write side above is shared).
        from pipetrail.storage.metadata.sql.run_records import chunks, driver_rows

        found: dict[int, dict[str, float]] = {run_id: {} for run_id in run_ids}
        with self._read() as conn:
            for chunk in chunks(list(found)):
                for run_id, name, value in driver_rows(conn, _LATEST_OF, {"ids": chunk}):
                    found[run_id][name] = value
        return found

    @patient("read")
    def metric_history(self, run_id: int, name: str | None = None) -> list[tuple[int, MetricPoint]]:
        """(task id, point) pairs of a run's metrics, in the order they were logged."""
        query = select(metric).where(metric.c.run_id == run_id)
        if name is not None:
            query = query.where(metric.c.name == name)
        with self._read() as conn:
            rows = conn.execute(query.order_by(metric.c.id)).all()
        return [(r.block_run_id, MetricPoint(r.name, r.value, r.step, r.timestamp)) for r in rows]

    @patient("read")
    def count_metrics(self, run_id: int) -> int:
        with self._read() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(metric).where(metric.c.run_id == run_id)
                ).scalar_one()
            )


def latest_rows(rows: Sequence[MetricRow]) -> list[dict[str, Any]]:
    """A ``latest_metric`` row per (run, name) series in ``rows``: its newest point, min, max."""
    # One pass, no allocation per point: the newest row and the extremes of each series.
    series: dict[tuple[int, str], list[Any]] = {}
    for r in rows:
        key = (r.run_id, r.name)
        seen = series.get(key)
        if seen is None:
            series[key] = [r, r.value, r.value]
            continue
        if r.timestamp >= seen[0].timestamp:
            seen[0] = r
        if r.value < seen[1]:
            seen[1] = r.value
        elif r.value > seen[2]:
            seen[2] = r.value
    return [
        {
            "run_id": newest.run_id,
            "name": newest.name,
            "value": newest.value,
            "step": newest.step,
            "timestamp": newest.timestamp,
            "block_run_id": newest.task_id,
            "min_value": low,
            "max_value": high,
        }
        for newest, low, high in series.values()
    ]
