"""Metrics in the SQL store: points appended in batches, the latest value of each series kept."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from itertools import islice, repeat
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, select
from sqlalchemy.exc import DBAPIError

from pipetrail.core.model import MetricPoint
from pipetrail.storage.metadata.base import MetricRow
from pipetrail.storage.metadata.points import MetricColumns
from pipetrail.storage.metadata.sql.engine import copy_rows, insert_many_fast, upsert
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
        parts = [rows] if isinstance(rows, MetricColumns) else _by_task(rows)
        for run_id in {part.run_id for part in parts} - fenced:
            self._check_lease(conn, run_id)
        latest: list[dict[str, Any]] = []
        for part in parts:
            _append_points(conn, part)
            latest.extend(_latest_of(part))
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


_COLUMNS = ("run_id", "block_run_id", "name", "value", "step", "timestamp")
#: Most points in one multi-row INSERT (4 values each; SQLite binds at most 32,766).
_ROWS_PER_INSERT = 1024


def _by_task(rows: Sequence[MetricRow]) -> list[MetricColumns]:
    """``rows`` as columns, one part per stretch of consecutive rows of the same task (so the
    order they are inserted in, their ids' order, is the order given)."""
    parts: list[MetricColumns] = []
    part: MetricColumns | None = None
    for run_id, task_id, name, value, step, timestamp in rows:
        if part is None or part.task_id != task_id or part.run_id != run_id:
            part = MetricColumns(run_id, task_id, [], [], [], [])
            parts.append(part)
        part.names.append(name)
        part.values.append(value)
        part.steps.append(step)
        part.times.append(timestamp)
    return parts


def _append_points(conn: Connection, points: MetricColumns) -> None:
    """Insert one task's points in the order given: PostgreSQL streams them with COPY; SQLite
    takes multi-row INSERTs of up to 1,024 points (a fixed set of sizes, so each is compiled
    once per connection), a fraction of what one execution per point costs."""
    if not len(points):
        return
    dialect = conn.dialect
    if dialect.name == "postgresql":
        run, task = repeat(points.run_id), repeat(points.task_id)
        columns = (points.names, points.values, points.steps, points.times)
        rows = list(zip(run, task, *columns, strict=False))  # the repeats are endless
        try:
            copy_rows(conn, metric, _COLUMNS, rows)
        except dialect.loaded_dbapi.Error as exc:  # the driver's own: the store's errors are Core's
            raise DBAPIError.instance("COPY metric", None, exc, dialect.loaded_dbapi.Error) from exc
        return
    if dialect.paramstyle != "qmark":
        insert_many_fast(conn, metric, _COLUMNS, list(points))
        return
    flat = points.flat()
    head = [points.run_id, points.task_id]
    cursor: Any = conn.connection.cursor()
    start, left = 0, len(points)
    try:
        while left:
            size = _ROWS_PER_INSERT if left >= _ROWS_PER_INSERT else 1 << (left.bit_length() - 1)
            sql = _multi_insert(size)
            params = head + flat[start : start + 4 * size]
            try:
                cursor.execute(sql, params)
            except dialect.loaded_dbapi.Error as exc:
                raise DBAPIError.instance(sql, None, exc, dialect.loaded_dbapi.Error) from exc
            start += 4 * size
            left -= size
    finally:
        cursor.close()


_INSERTS: dict[int, str] = {}


def _multi_insert(size: int) -> str:
    """``INSERT`` of ``size`` points of one task: ``?1``, ``?2`` are its run and task, then
    name, value, step and time of each point."""
    sql = _INSERTS.get(size)
    if sql is None:
        values = ",".join(["(?1,?2,?,?,?,?)"] * size)
        sql = _INSERTS[size] = f"INSERT INTO {metric.name} ({', '.join(_COLUMNS)}) VALUES {values}"
    return sql


def _latest_of(points: MetricColumns) -> list[dict[str, Any]]:
    """The ``latest_metric`` rows of one task's points (as :func:`latest_rows`), with no Python
    work per point in the usual cases: times in the order logged, and one series, or the same
    names in the same order at every step (``log_metrics`` of one dict)."""
    names, values, times = points.names, points.values, points.times
    count = len(times)
    if not count:
        return []
    if not all(map(operator.le, times, islice(times, 1, None))):
        return latest_rows(list(points))  # the clock went back: compare every point
    # Times never decrease: a series' newest point is its last (the later of equal times).
    last = dict(zip(names, range(count), strict=True))
    period = len(last)
    extremes: dict[str, tuple[float, float]] = {}
    if period == 1:
        extremes[names[0]] = (min(values), max(values))
    elif count % period == 0 and names == names[:period] * (count // period):
        for k, name in enumerate(names[:period]):
            series = values[k::period]
            extremes[name] = (min(series), max(series))
    else:
        for name, value in zip(names, values, strict=True):
            seen = extremes.get(name)
            if seen is None:
                extremes[name] = (value, value)
            elif value < seen[0]:
                extremes[name] = (value, seen[1])
            elif value > seen[1]:
                extremes[name] = (seen[0], value)
    return [
        {
            "run_id": points.run_id,
            "name": name,
            "value": values[i],
            "step": points.steps[i],
            "timestamp": times[i],
            "block_run_id": points.task_id,
            "min_value": extremes[name][0],
            "max_value": extremes[name][1],
        }
        for name, i in last.items()
    ]
