"""Metrics in the SQL store: points appended in blocks per series, the latest value of each
series kept."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, select
from sqlalchemy.exc import DBAPIError

from pipetrail.core.model import MetricPoint
from pipetrail.storage.metadata.base import MetricRow
from pipetrail.storage.metadata.points import (
    BLOCK_COLUMNS,
    BlockRead,
    Latest,
    MetricColumns,
    pack_blocks,
    unpack_blocks,
)
from pipetrail.storage.metadata.sql.engine import copy_rows, upsert
from pipetrail.storage.metadata.sql.session import SqlSession, patient
from pipetrail.storage.metadata.sql.tables import latest_metric, metric_block

__all__ = ["MetricRows", "append_blocks", "latest_rows", "metric_blocks"]

_LATEST = ("value", "step", "timestamp", "block_run_id")
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
_READ = tuple(
    metric_block.c[c]
    for c in (
        "block_run_id",
        "name",
        "first_position",
        "position_stride",
        "position_data",
        "value_data",
        "step_data",
        "step_missing",
        "time_data",
    )
)
_HISTORY = select(*_READ).where(metric_block.c.run_id == bindparam("run_id"))
_HISTORY_OF = _HISTORY.where(metric_block.c.name == bindparam("name"))
_COUNT = select(func.coalesce(func.sum(metric_block.c.points), 0)).where(
    metric_block.c.run_id == bindparam("run_id")
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
        parts = [rows] if isinstance(rows, MetricColumns) else MetricColumns.of_rows(rows)
        for run_id in {part.run_id for part in parts} - fenced:
            self._check_lease(conn, run_id)
        blocks, latest = metric_blocks(parts)
        append_blocks(conn, blocks)
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
        """(task id, point) pairs of a run's metrics, in the order they were logged: each
        write's points in their order, the writes in the order they were stored."""
        query, params = (
            (_HISTORY, {"run_id": run_id})
            if name is None
            else (_HISTORY_OF, {"run_id": run_id, "name": name})
        )
        with self._read() as conn:
            rows = conn.execute(query.order_by(metric_block.c.id), params).all()
        return unpack_blocks(map(BlockRead.of_row, rows), _point, every_series=name is None)

    @patient("read")
    def count_metrics(self, run_id: int) -> int:
        with self._read() as conn:
            return int(conn.execute(_COUNT, {"run_id": run_id}).scalar_one())


def _point(name: str, value: float, step: int | None, timestamp: float) -> MetricPoint:
    return MetricPoint(name, value, step, datetime.fromtimestamp(timestamp, UTC))


def metric_blocks(
    parts: Iterable[MetricColumns],
) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
    """The block rows of every part (in :data:`BLOCK_COLUMNS` order) and one ``latest_metric``
    row per (run, name) series among them: its newest point, minimum and maximum."""
    blocks: list[tuple[Any, ...]] = []
    latest: list[Latest] = []
    for part in parts:
        made, newest = pack_blocks(part)
        blocks.extend(made)
        latest.extend(newest)
    return blocks, latest_rows(latest)


def latest_rows(latest: Iterable[Latest]) -> list[dict[str, Any]]:
    """One ``latest_metric`` row per (run, name) of ``latest`` (the parts' own, in the order
    written): the newest point (the later given of equal times), the least and greatest value."""
    series: dict[tuple[int, str], Latest] = {}
    for item in latest:
        key = (item.run_id, item.name)
        seen = series.get(key)
        if seen is not None:
            newest = item if item.timestamp >= seen.timestamp else seen
            item = newest._replace(
                min_value=min(seen.min_value, item.min_value),
                max_value=max(seen.max_value, item.max_value),
            )
        series[key] = item
    return [
        {
            "run_id": s.run_id,
            "name": s.name,
            "value": s.value,
            "step": s.step,
            "timestamp": s.timestamp,
            "block_run_id": s.task_id,
            "min_value": s.min_value,
            "max_value": s.max_value,
        }
        for s in series.values()
    ]


def append_blocks(conn: Connection, blocks: Sequence[tuple[Any, ...]]) -> None:
    """Insert blocks (tuples in :data:`BLOCK_COLUMNS` order) in the order given: a binary COPY on
    PostgreSQL; on SQLite one ``executemany`` of a statement compiled once per connection."""
    if not blocks:
        return
    dialect = conn.dialect
    if dialect.name == "postgresql" or dialect.paramstyle != "qmark":
        try:
            copy_rows(conn, metric_block, BLOCK_COLUMNS, blocks)
        except dialect.loaded_dbapi.Error as exc:  # the driver's own: the store's are Core's
            raise DBAPIError.instance(
                "COPY metric_block", None, exc, dialect.loaded_dbapi.Error
            ) from exc
        return
    cursor: Any = conn.connection.cursor()
    try:
        cursor.executemany(_INSERT, blocks)
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(_INSERT, None, exc, dialect.loaded_dbapi.Error) from exc
    finally:
        cursor.close()


_INSERT = (
    f"INSERT INTO {metric_block.name} ({', '.join(BLOCK_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(BLOCK_COLUMNS))})"
)
