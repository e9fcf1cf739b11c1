"""Per-task resource use: wall time, CPU time, peak RSS and, where CUDA is in use, GPU memory."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import psutil

__all__ = ["SAMPLE_INTERVAL_S", "ResourceMeter", "ResourceUsage"]

#: How often the shared sampler thread reads the process RSS while any meter is open.
SAMPLE_INTERVAL_S = 0.05


@dataclass(frozen=True, slots=True)
class ResourceUsage:
    """What one measured block used.

    Process-wide counters are reported as deltas or maxima over the block, so the values are
    per task even in a long-lived worker. Blocks that run concurrently in one process share its
    memory and CPU counters, and each sees the others' use.

    Attributes:
        started_at: UTC time the block started.
        finished_at: UTC time the block finished.
        duration_s: Elapsed time from a monotonic clock.
        cpu_time_s: User + system CPU time of the process (all threads) during the block.
        peak_rss_bytes: Largest resident set size of the process seen during the block: read at
            start and end and every :data:`SAMPLE_INTERVAL_S` in between, so shorter spikes
            can be missed.
        start_rss_bytes: Resident set size when the block started (the baseline for growth).
        gpu_peak_memory_bytes: Peak CUDA memory allocated through PyTorch on the busiest device,
            or ``None`` when PyTorch's CUDA was not in use.
    """

    started_at: datetime
    finished_at: datetime
    duration_s: float
    cpu_time_s: float
    peak_rss_bytes: int
    start_rss_bytes: int
    gpu_peak_memory_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("started_at", "finished_at"):
            moment: datetime = getattr(self, name)
            if moment.utcoffset() is None:
                raise ValueError(
                    f"ResourceUsage.{name} {moment.isoformat()!r} has no time zone; "
                    "pass a UTC-aware datetime such as datetime.now(UTC)."
                )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; times are ISO 8601 strings in UTC."""
        return {
            "started_at": self.started_at.astimezone(UTC).isoformat(),
            "finished_at": self.finished_at.astimezone(UTC).isoformat(),
            "duration_s": self.duration_s,
            "cpu_time_s": self.cpu_time_s,
            "peak_rss_bytes": self.peak_rss_bytes,
            "start_rss_bytes": self.start_rss_bytes,
            "gpu_peak_memory_bytes": self.gpu_peak_memory_bytes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResourceUsage:
        """Rebuild usage from :meth:`to_dict` output."""
        gpu = data.get("gpu_peak_memory_bytes")
        return cls(
            started_at=datetime.fromisoformat(str(data["started_at"])),
            finished_at=datetime.fromisoformat(str(data["finished_at"])),
            duration_s=float(data["duration_s"]),
            cpu_time_s=float(data["cpu_time_s"]),
            peak_rss_bytes=int(data["peak_rss_bytes"]),
            start_rss_bytes=int(data["start_rss_bytes"]),
            gpu_peak_memory_bytes=None if gpu is None else int(gpu),
        )


class ResourceMeter:
    """Context manager measuring the resources a block of code uses.

    Entering and exiting costs tens of microseconds: there is one sampler thread per process,
    started on first use and idle while no meter is open, that every open meter registers with.
    The block's exception, if any, propagates; usage is recorded either way.

    Example:
        >>> with ResourceMeter() as meter:
        ...     total = sum(range(1000))
        >>> meter.usage.cpu_time_s >= 0
        True
    """

    __slots__ = ("_cpu0", "_gpu_devices", "_peak", "_start_rss", "_started_at", "_t0", "_usage")

    def __init__(self) -> None:
        """Create a meter; measurement starts when the ``with`` block is entered."""
        self._started_at: datetime | None = None
        self._usage: ResourceUsage | None = None
        self._t0 = 0.0
        self._cpu0 = 0.0
        self._start_rss = 0
        self._peak = 0
        self._gpu_devices: int | None = None

    @property
    def usage(self) -> ResourceUsage:
        """The measurement, available once the ``with`` block has ended.

        Raises:
            RuntimeError: The block has not ended yet.
        """
        if self._usage is None:
            raise RuntimeError(
                "ResourceMeter.usage is read before the measured block ended; "
                "read it after the `with ResourceMeter() as meter:` block."
            )
        return self._usage

    def _observe(self, rss_bytes: int) -> None:
        """Fold one RSS sample into the peak (called by the sampler thread)."""
        if rss_bytes > self._peak:
            self._peak = rss_bytes

    def __enter__(self) -> ResourceMeter:
        if self._started_at is not None:
            raise RuntimeError(
                "ResourceMeter is single-use and this one was already entered; "
                "create a new ResourceMeter() for each block."
            )
        sampler = _sampler()
        self._gpu_devices = _reset_gpu_peaks()
        self._start_rss = self._peak = sampler.rss()
        sampler.register(self)
        self._started_at = datetime.now(UTC)
        self._cpu0 = time.process_time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        duration = time.perf_counter() - self._t0
        cpu = time.process_time() - self._cpu0
        finished_at = datetime.now(UTC)
        sampler = _sampler()
        self._observe(sampler.rss())
        sampler.unregister(self)
        started_at = self._started_at if self._started_at is not None else finished_at
        self._usage = ResourceUsage(
            started_at=started_at,
            finished_at=finished_at,
            duration_s=duration,
            cpu_time_s=max(cpu, 0.0),
            peak_rss_bytes=self._peak,
            start_rss_bytes=self._start_rss,
            gpu_peak_memory_bytes=_gpu_peak(self._gpu_devices),
        )


class _RssSampler:
    """The one thread per process that samples RSS for every open meter."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._meters: set[ResourceMeter] = set()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process()

    def rss(self) -> int:
        try:
            return int(self._process.memory_info().rss)
        except psutil.Error:
            return 0

    def register(self, meter: ResourceMeter) -> None:
        with self._wake:
            self._meters.add(meter)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="pipetrail-rss-sampler", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def unregister(self, meter: ResourceMeter) -> None:
        with self._wake:
            self._meters.discard(meter)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._meters:
                    self._wake.wait()
                meters = tuple(self._meters)
            rss = self.rss()
            for meter in meters:
                meter._observe(rss)
            time.sleep(SAMPLE_INTERVAL_S)


_SAMPLER: _RssSampler | None = None
_SAMPLER_LOCK = threading.Lock()


def _sampler() -> _RssSampler:
    global _SAMPLER
    if _SAMPLER is None:
        with _SAMPLER_LOCK:
            if _SAMPLER is None:
                _SAMPLER = _RssSampler()
    return _SAMPLER


def _forget_sampler_after_fork() -> None:
    # The child has no sampler thread and a different pid: start over lazily.
    global _SAMPLER, _SAMPLER_LOCK
    _SAMPLER = None
    _SAMPLER_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_sampler_after_fork)


def _initialized_cuda() -> Any | None:
    # Never import torch, and never initialize CUDA for a task that has not: that would cost
    # seconds and device memory in every worker merely importing torch.
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None) if torch is not None else None
    if cuda is None:
        return None
    try:
        return cuda if cuda.is_available() and cuda.is_initialized() else None
    except Exception:  # a broken CUDA install must not fail the measured task
        return None


def _reset_gpu_peaks() -> int | None:
    cuda = _initialized_cuda()
    if cuda is None:
        return None
    try:
        devices = int(cuda.device_count())
        for device in range(devices):
            cuda.reset_peak_memory_stats(device)
    except Exception:  # a broken CUDA install must not fail the measured task
        return None
    return devices


def _gpu_peak(devices_at_start: int | None) -> int | None:
    # CUDA first initialized inside the block: its peak since initialization is the block's.
    cuda = _initialized_cuda()
    if cuda is None:
        return None
    try:
        devices = devices_at_start if devices_at_start is not None else int(cuda.device_count())
        peaks = [int(cuda.max_memory_allocated(device)) for device in range(devices)]
    except Exception:  # a broken CUDA install must not fail the measured task
        return None
    return max(peaks, default=None)
