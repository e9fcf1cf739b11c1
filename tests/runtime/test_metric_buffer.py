"""The metric buffer: nothing lost when a write fails, and memory bounded by back-pressure."""

from __future__ import annotations

import threading

import pytest

from pipetrail.errors import StoreError
from pipetrail.runtime.context import BACKLOG, MetricBuffer
from pipetrail.storage.metadata.base import MetricRow, SpoolBatch


class FlakyStore:
    """Records written batches; fails the first ``failures`` writes."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.written: list[MetricRow] = []
        self.batches = 0
        self.lock = threading.Lock()

    def write(self, batch: SpoolBatch) -> None:
        with self.lock:
            if self.failures:
                self.failures -= 1
                raise StoreError("store away")
            self.batches += 1
            self.written.extend(batch.metrics)


def _row(i: int) -> MetricRow:
    return MetricRow(1, 1, "loss", float(i), i, 1.7e9 + i)


def test_a_failed_write_keeps_the_points_in_order() -> None:
    store = FlakyStore(failures=1)
    buffer = MetricBuffer(store.write, interval=60)
    for i in range(5):
        buffer.add(_row(i))
    with pytest.raises(StoreError):
        buffer.flush()
    buffer.add(_row(5))
    buffer.close()
    assert [r.step for r in store.written] == [0, 1, 2, 3, 4, 5]


def test_back_pressure_bounds_what_is_pending() -> None:
    store = FlakyStore(failures=0)
    buffer = MetricBuffer(store.write, interval=60, batch=100)
    points = 100 * (3 * BACKLOG + 1)
    for i in range(points):
        buffer.add(_row(i))
        assert buffer.pending <= 100 * (BACKLOG + 1)
    buffer.close()
    assert [r.step for r in store.written] == list(range(points))
    assert store.batches >= 3
