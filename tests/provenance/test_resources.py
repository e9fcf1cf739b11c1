"""Tests for per-task resource measurement."""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from types import ModuleType

import psutil
import pytest

from pipetrail.provenance.resources import ResourceMeter, ResourceUsage

MIB = 1024**2


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _burn_cpu(seconds: float) -> None:
    # Loop on CPU time, not wall time, so a loaded machine only makes the test slower.
    start = time.process_time()
    while time.process_time() - start < seconds:
        sum(range(1000))


def test_memory_held_at_the_end_of_the_block_is_in_the_peak() -> None:
    baseline = _rss()
    with ResourceMeter() as meter:
        block = b"\x01" * (100 * MIB)  # written, so every page is resident

    assert meter.usage.peak_rss_bytes >= baseline + 90 * MIB
    assert meter.usage.start_rss_bytes < baseline + 20 * MIB
    del block


def test_memory_freed_inside_the_block_is_caught_by_the_sampler() -> None:
    with ResourceMeter() as meter:
        block = b"\x01" * (100 * MIB)
        time.sleep(0.5)
        del block
        time.sleep(0.05)

    usage = meter.usage
    assert usage.peak_rss_bytes >= usage.start_rss_bytes + 90 * MIB
    assert _rss() < usage.peak_rss_bytes


def test_a_busy_loop_reports_cpu_time() -> None:
    with ResourceMeter() as meter:
        _burn_cpu(0.2)

    assert meter.usage.cpu_time_s >= 0.1
    assert meter.usage.duration_s >= 0.1


def test_a_sleep_reports_wall_time_but_little_cpu_time() -> None:
    with ResourceMeter() as meter:
        time.sleep(0.3)

    assert meter.usage.duration_s >= 0.29
    assert meter.usage.cpu_time_s < 0.1


def test_times_are_utc_aware_and_ordered() -> None:
    before = datetime.now(UTC)
    with ResourceMeter() as meter:
        time.sleep(0.01)
    after = datetime.now(UTC)

    usage = meter.usage
    assert usage.started_at.tzinfo is UTC
    assert before <= usage.started_at <= usage.finished_at <= after
    assert usage.duration_s <= (after - before).total_seconds()


def test_cpu_time_is_a_per_block_delta_not_a_process_total() -> None:
    _burn_cpu(0.2)

    with ResourceMeter() as meter:
        pass

    assert meter.usage.cpu_time_s < 0.05


def test_usage_is_recorded_when_the_block_raises() -> None:
    meter = ResourceMeter()
    with pytest.raises(KeyError), meter:
        raise KeyError("boom")

    assert meter.usage.duration_s >= 0


def test_usage_before_the_block_ends_is_an_error() -> None:
    meter = ResourceMeter()
    with pytest.raises(RuntimeError, match="after the"):
        _ = meter.usage
    with meter, pytest.raises(RuntimeError, match="after the"):
        _ = meter.usage


def test_a_meter_is_single_use() -> None:
    meter = ResourceMeter()
    with meter:
        pass

    with pytest.raises(RuntimeError, match="single-use"), meter:
        pass


def test_concurrent_meters_each_get_their_own_usage() -> None:
    usages: list[ResourceUsage] = []

    def task(seconds: float) -> None:
        with ResourceMeter() as meter:
            time.sleep(seconds)
        usages.append(meter.usage)

    threads = [threading.Thread(target=task, args=(0.1 * (i + 1),)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(usages) == 3
    for index, duration in enumerate(sorted(u.duration_s for u in usages)):
        assert duration >= 0.1 * (index + 1) - 0.01


def test_entering_and_exiting_costs_well_under_a_millisecond() -> None:
    rounds = 1000
    start = time.perf_counter()
    for _ in range(rounds):
        with ResourceMeter():
            pass
    per_round = (time.perf_counter() - start) / rounds

    assert per_round < 1e-3


def test_gpu_memory_is_none_without_torch() -> None:
    with ResourceMeter() as meter:
        pass

    assert "torch" not in sys.modules
    assert meter.usage.gpu_peak_memory_bytes is None


class _FakeCuda:
    def __init__(self, *, initialized: bool = True, fail: bool = False) -> None:
        self.initialized = initialized
        self.fail = fail
        self.peaks = [0, 0]
        self.resets: list[int] = []

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return self.initialized

    def device_count(self) -> int:
        if self.fail:
            raise RuntimeError("CUDA driver version is insufficient")
        return len(self.peaks)

    def reset_peak_memory_stats(self, device: int) -> None:
        self.resets.append(device)
        self.peaks[device] = 0

    def max_memory_allocated(self, device: int) -> int:
        return self.peaks[device]


def _install_fake_torch(monkeypatch: pytest.MonkeyPatch, cuda: _FakeCuda) -> None:
    torch = ModuleType("torch")
    torch.cuda = cuda  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", torch)


def test_gpu_peak_comes_from_torch_cuda_when_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = _FakeCuda()
    cuda.peaks = [7 * MIB, 3 * MIB]
    _install_fake_torch(monkeypatch, cuda)

    with ResourceMeter() as meter:
        cuda.peaks = [2 * MIB, 5 * MIB]

    assert cuda.resets == [0, 1]
    assert meter.usage.gpu_peak_memory_bytes == 5 * MIB


def test_cuda_first_used_inside_the_block_is_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = _FakeCuda(initialized=False)
    _install_fake_torch(monkeypatch, cuda)

    with ResourceMeter() as meter:
        cuda.initialized = True
        cuda.peaks = [4 * MIB, 0]

    assert cuda.resets == []  # CUDA is never initialized on the task's behalf
    assert meter.usage.gpu_peak_memory_bytes == 4 * MIB


def test_a_broken_cuda_never_fails_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    _install_fake_torch(monkeypatch, _FakeCuda(fail=True))

    with ResourceMeter() as meter:
        pass

    assert meter.usage.gpu_peak_memory_bytes is None


def test_torch_without_cuda_in_use_reports_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", ModuleType("torch"))  # a stub without torch.cuda

    with ResourceMeter() as meter:
        pass

    assert meter.usage.gpu_peak_memory_bytes is None


def test_usage_round_trips_through_json() -> None:
    with ResourceMeter() as meter:
        pass
    usage = meter.usage
    with_gpu = ResourceUsage(
        started_at=usage.started_at,
        finished_at=usage.finished_at + timedelta(seconds=1),
        duration_s=1.0,
        cpu_time_s=0.5,
        peak_rss_bytes=200 * MIB,
        start_rss_bytes=100 * MIB,
        gpu_peak_memory_bytes=MIB,
    )

    for original in (usage, with_gpu):
        assert ResourceUsage.from_dict(json.loads(json.dumps(original.to_dict()))) == original


def test_naive_times_are_rejected() -> None:
    with pytest.raises(ValueError, match="UTC-aware"):
        ResourceUsage(
            started_at=datetime(2024, 1, 1),
            finished_at=datetime(2024, 1, 1, tzinfo=UTC),
            duration_s=0.0,
            cpu_time_s=0.0,
            peak_rss_bytes=0,
            start_rss_bytes=0,
        )
