"""Metrics in the SQL store: points appended in batches, the latest value of each series kept."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, func, select

from pipetrail.core.model import MetricPoint
from pipetrail.storage.metadata.base import MetricRow
from pipetrail.storage.metadata.sql.engine import insert_many_fast, upsert
from pipetrail.storage.metadata.sql.session import SqlSession, patient
from pipetrail.storage.metadata.sql.tables import latest_metric, metric

__all__ = ["MetricRows"]


class MetricRows(SqlSession):
    """The metric half of the metadata store."""

    @patient("write")
    def add_metrics(self, rows: Sequence[MetricRow]) -> None:
        """Append metric points in one transaction and keep each series' latest value current."""
        if not rows:
            return
        # MetricRow is already a tuple in this column order, with epoch-float timestamps.
        columns = ("run_id", "block_run_id", "name", "value", "step", "timestamp")
        with self._write() as conn:
            insert_many_fast(conn, metric, columns, rows)
            self._latest(conn, rows)

    def _latest(self, conn: Connection, rows: Sequence[MetricRow]) -> None:
        latest: dict[tuple[int, str], MetricRow] = {}
        for r in rows:
            latest[(r.run_id, r.name)] = r
        upsert(
            conn,
            latest_metric,
            [
                {
                    "run_id": r.run_id,
                    "name": r.name,
                    "value": r.value,
                    "step": r.step,
                    "timestamp": r.timestamp,
                    "block_run_id": r.task_id,
                }
                for r in latest.values()
            ],
            ["run_id", "name"],
            update=["value", "step", "timestamp", "block_run_id"],
            where_newer="timestamp",
        )

    @patient("read")
    def latest_metrics(self, run_id: int) -> dict[str, float]:
        with self._read() as conn:
            rows = conn.execute(
                select(latest_metric.c.name, latest_metric.c.value)
                .where(latest_metric.c.run_id == run_id)
                .order_by(latest_metric.c.name)
            ).all()
        return {r.name: r.value for r in rows}

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
