"""Per-task resource use: wall time, CPU time, peak RSS, GPU memory and seconds, and the task's
system metrics (CPU %, RSS and GPU figures of its process tree, sampled every few seconds)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import psutil

__all__ = [
    "SAMPLE_INTERVAL_S",
    "SYSTEM_METRICS",
    "ResourceMeter",
    "ResourceUsage",
    "SystemSink",
    "gpu_seconds",
]

#: How often the shared sampler thread reads the process RSS while any meter is open.
SAMPLE_INTERVAL_S = 0.05
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

#: The system metrics a meter samples, in the namespace of the task's own metrics.
SYSTEM_METRICS = (
    "system/cpu_percent",
    "system/rss_bytes",
    "system/gpu_utilization_percent",
    "system/gpu_memory_bytes",
)

#: Receives one system sample: its time (seconds since the epoch) and value by metric name.
SystemSink = Callable[[float, Mapping[str, float]], None]


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
        gpu_time_s: GPU seconds from the system samples (utilisation times the time between
            samples, summed over the devices the block's processes use); ``None`` when no
            sample saw a GPU in use (no NVML, no device used, or system sampling off).
        system_samples: How many system metric samples the block recorded.
    """

    started_at: datetime
    finished_at: datetime
    duration_s: float
    cpu_time_s: float
    peak_rss_bytes: int
    start_rss_bytes: int
    gpu_peak_memory_bytes: int | None = None
    gpu_time_s: float | None = None
    system_samples: int = 0

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
            "gpu_time_s": self.gpu_time_s,
            "system_samples": self.system_samples,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResourceUsage:
        """Rebuild usage from :meth:`to_dict` output."""
        gpu = data.get("gpu_peak_memory_bytes")
        gpu_time = data.get("gpu_time_s")
        return cls(
            started_at=datetime.fromisoformat(str(data["started_at"])),
            finished_at=datetime.fromisoformat(str(data["finished_at"])),
            duration_s=float(data["duration_s"]),
            cpu_time_s=float(data["cpu_time_s"]),
            peak_rss_bytes=int(data["peak_rss_bytes"]),
            start_rss_bytes=int(data["start_rss_bytes"]),
            gpu_peak_memory_bytes=None if gpu is None else int(gpu),
            gpu_time_s=None if gpu_time is None else float(gpu_time),
            system_samples=int(data.get("system_samples", 0)),
        )


class ResourceMeter:
    """Context manager measuring the resources a block of code uses.

    Entering and exiting costs tens of microseconds: there is one sampler thread per process,
    started on first use and idle while no meter is open, that every open meter registers with.
    The block's exception, if any, propagates; usage is recorded either way.

    With ``system_metrics_s`` and ``on_sample``, the same thread also samples the block's
    process tree (this process and its children) every ``system_metrics_s`` seconds: CPU %
    over the last interval, RSS and, where NVML sees NVIDIA GPUs used by those processes, their
    utilisation and memory; each sample goes to ``on_sample``. A block that took at least one
    sample takes a last one when it ends, so the series reaches its end; a block shorter than
    one interval takes none (its CPU time and peak memory are in :attr:`usage` either way).

    Args:
        system_metrics_s: seconds between system samples; 0 (the default) takes none.
        on_sample: where samples go (called from the sampler thread, and at the block's end).

    Example:
        >>> with ResourceMeter() as meter:
        ...     total = sum(range(1000))
        >>> meter.usage.cpu_time_s >= 0
        True
    """

    __slots__ = (
        "_children0",
        "_cpu0",
        "_gpu_devices",
        "_peak",
        "_probe",
        "_start_rss",
        "_started_at",
        "_t0",
        "_usage",
    )

    def __init__(
        self, *, system_metrics_s: float = 0.0, on_sample: SystemSink | None = None
    ) -> None:
        """Create a meter; measurement starts when the ``with`` block is entered."""
        self._started_at: datetime | None = None
        self._usage: ResourceUsage | None = None
        self._t0 = 0.0
        self._cpu0 = 0.0
        self._children0 = 0.0
        self._start_rss = 0
        self._peak = 0
        self._gpu_devices: int | None = None
        self._probe: _SystemProbe | None = None
        if system_metrics_s > 0 and on_sample is not None:
            self._probe = _SystemProbe(system_metrics_s, on_sample)

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

    def _observe(self, rss_bytes: int, now: float) -> None:
        """Fold one RSS sample into the peak; take a system sample when one is due.

        Called by the sampler thread.
        """
        if rss_bytes > self._peak:
            self._peak = rss_bytes
        probe = self._probe
        if probe is not None and now >= probe.due:
            probe.sample(now)

    def __enter__(self) -> ResourceMeter:
        if self._started_at is not None:
            raise RuntimeError(
                "ResourceMeter is single-use and this one was already entered; "
                "create a new ResourceMeter() for each block."
            )
        sampler = _sampler()
        self._gpu_devices = _reset_gpu_peaks()
        self._start_rss = self._peak = sampler.rss()
        self._started_at = datetime.now(UTC)
        self._children0 = _children_cpu()
        self._cpu0 = time.process_time()
        self._t0 = time.perf_counter()
        if self._probe is not None:
            self._probe.start(sampler.process, time.monotonic())
        sampler.register(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        sampler = _sampler()
        sampler.unregister(self)
        probe = self._probe
        if probe is not None:
            probe.stop()  # no periodic sample after the block's end (one under way finishes)
        duration = time.perf_counter() - self._t0
        # Children the block waited for (a subprocess it ran) count as its CPU time too.
        cpu = time.process_time() - self._cpu0 + _children_cpu() - self._children0
        finished_at = datetime.now(UTC)
        self._observe(sampler.rss(), float("-inf"))
        if probe is not None:
            # Dated when the block ended, though taken just after: the series ends with it.
            probe.finish(time.monotonic(), finished_at.timestamp())
        started_at = self._started_at if self._started_at is not None else finished_at
        self._usage = ResourceUsage(
            started_at=started_at,
            finished_at=finished_at,
            duration_s=duration,
            cpu_time_s=max(cpu, 0.0),
            peak_rss_bytes=self._peak,
            start_rss_bytes=self._start_rss,
            gpu_peak_memory_bytes=_gpu_peak(self._gpu_devices),
            gpu_time_s=None if probe is None else probe.gpu_time_s,
            system_samples=0 if probe is None else probe.samples,
        )


def _children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


class _SystemProbe:
    """The system samples of one meter: its process tree's CPU %, RSS and GPU use."""

    def __init__(self, interval: float, sink: SystemSink) -> None:
        self.interval = interval
        self.due = float("inf")
        self.samples = 0
        self.gpu_time_s: float | None = None
        self._sink = sink
        self._lock = threading.Lock()
        self._closed = False
        self._stopped = False
        self._process: psutil.Process | None = None
        self._started = 0.0
        self._last = 0.0
        #: CPU seconds of each process of the tree at the last sample, by (pid, start time).
        self._cpu: dict[tuple[int, float], float] = {}
        #: psutil handles of the children seen, by pid (each made once: that reads /proc).
        self._children: dict[int, psutil.Process] = {}

    def start(self, process: psutil.Process, now: float) -> None:
        self._process = process
        self._started = time.time()
        self._last = now
        self.due = now + self.interval
        with contextlib.suppress(Exception):
            if process.pid == os.getpid():  # this process: no /proc read needed
                times = os.times()
                self._cpu = {_key(process): times.user + times.system}
            else:
                self._cpu = {_key(process): _cpu_seconds(process)}

    def sample(self, now: float, at: float | None = None, *, last: bool = False) -> None:
        """Take one sample (at ``at``, default now) and hand it to the sink; never raises."""
        with self._lock:
            if self._closed or (self._stopped and not last) or self._process is None:
                return
            self.due = now + self.interval
            try:
                values = self._measure()
            except Exception:  # a vanished process, /proc unreadable: skip this sample
                return
            self.samples += 1
            with contextlib.suppress(Exception):
                self._sink(time.time() if at is None else at, values)

    def finish(self, now: float, at: float) -> None:
        """The last sample (if the block took any and the last is not just now), then no more."""
        if self.samples and now - self._last >= max(SAMPLE_INTERVAL_S, self.interval / 10):
            self.sample(now, at, last=True)
        with self._lock:
            self._closed = True

    def stop(self) -> None:
        """No periodic sample from now on; waits for one that is being taken."""
        with self._lock:
            self._stopped = True

    def _tree(self, main: psutil.Process) -> list[psutil.Process]:
        pids = _descendants(main.pid)
        if pids is None:  # no /proc/PID/task/TID/children here: psutil scans every process
            return [main, *main.children(recursive=True)]
        known = self._children
        tree = [main]
        for pid in pids:
            child = known.get(pid)
            if child is None:
                with contextlib.suppress(psutil.Error):
                    child = known[pid] = psutil.Process(pid)
            if child is not None:
                tree.append(child)
        for gone in set(known) - set(pids):
            del known[gone]
        return tree

    def _measure(self) -> dict[str, float]:
        assert self._process is not None
        with self._process.oneshot():
            now = time.monotonic()
            main_key = _key(self._process)
            main_cpu = _cpu_seconds(self._process)
            rss = int(self._process.memory_info().rss)
        busy = max(main_cpu - self._cpu.get(main_key, main_cpu), 0.0)
        cpu = {main_key: main_cpu}
        pids = {main_key[0]}
        tree: list[psutil.Process] = []
        with contextlib.suppress(Exception):
            tree = self._tree(self._process)[1:]
        for process in tree:
            try:
                with process.oneshot():
                    key = _key(process)
                    seconds = _cpu_seconds(process)
                    rss += int(process.memory_info().rss)
            except psutil.Error:
                continue  # ended since it was listed
            cpu[key] = seconds
            pids.add(key[0])
            previous = self._cpu.get(key)
            if previous is None:
                # First seen: a child started during the block brings all its CPU time; one
                # that was already running (a server the block talks to) only what follows.
                previous = 0.0 if key[1] >= self._started - 0.02 else seconds
            busy += max(seconds - previous, 0.0)
        elapsed = now - self._last
        self._cpu, self._last = cpu, now
        values = {
            "system/cpu_percent": 100.0 * busy / elapsed if elapsed > 0 else 0.0,
            "system/rss_bytes": float(rss),
        }
        devices = _nvml().usage(pids)
        if devices:
            values["system/gpu_utilization_percent"] = sum(u for u, _ in devices) / len(devices)
            values["system/gpu_memory_bytes"] = float(sum(m for _, m in devices))
            spent = gpu_seconds([(elapsed, [u for u, _ in devices])])
            self.gpu_time_s = (self.gpu_time_s or 0.0) + spent
        return values


def _descendants(pid: int) -> list[int] | None:
    """Every descendant of ``pid`` from Linux's per-thread children lists; None without them.

    A few small reads per process, where psutil's ``children()`` reads every process's stat
    (slow, and slower still while a busy task holds the GIL).
    """
    if not os.path.exists(f"/proc/{pid}/task/{pid}/children"):
        return None
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue  # ended meanwhile
        for tid in threads:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", "rb") as handle:
                    found = [int(p) for p in handle.read().split()]
            except OSError:
                continue  # the thread ended meanwhile
            out.extend(found)
            todo.extend(found)
    return out


def _key(process: psutil.Process) -> tuple[int, float]:
    return process.pid, process.create_time()


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def gpu_seconds(intervals: Iterable[tuple[float, Sequence[float]]]) -> float:
    """GPU seconds of a series of samples: utilisation times time, summed over devices.

    Each interval is (seconds it lasted, utilisation % of each device the task used in it);
    two devices busy at 50 % for 10 s make 10 GPU seconds, like one device at 100 %.

    Example:
        >>> gpu_seconds([(2.0, [100.0]), (2.0, [50.0, 50.0])])
        4.0
    """
    return sum(
        max(seconds, 0.0) * sum(min(max(u, 0.0), 100.0) for u in used) / 100.0
        for seconds, used in intervals
    )


class _Nvml:
    """NVIDIA's management library, loaded once per process on first use; absent = no GPU."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._module: Any = None
        self._handles: list[Any] | None = None

    def _load(self) -> list[Any]:
        if self._handles is None:
            self._handles = []
            try:
                import pynvml  # type: ignore[import-not-found,unused-ignore]

                pynvml.nvmlInit()
                self._handles = [
                    pynvml.nvmlDeviceGetHandleByIndex(i)
                    for i in range(int(pynvml.nvmlDeviceGetCount()))
                ]
                self._module = pynvml
            except Exception:  # not installed, no driver, no device: no GPU figures
                self._handles = []
        return self._handles

    def usage(self, pids: set[int]) -> list[tuple[float, int]]:
        """(utilisation %, memory bytes of ``pids``) of each device one of ``pids`` uses."""
        with self._lock:
            handles = self._load()
            if not handles:
                return []
            nvml = self._module
            out: list[tuple[float, int]] = []
            for handle in handles:
                try:
                    mine = [
                        p
                        for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)
                        if p.pid in pids
                    ]
                    if not mine:
                        continue
                    utilization = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                except Exception:  # a device that stopped answering: leave it out
                    continue
                memory = sum(int(p.usedGpuMemory or 0) for p in mine)
                out.append((utilization, memory))
            return out


_NVML: _Nvml | None = None


def _nvml() -> _Nvml:
    global _NVML
    if _NVML is None:
        _NVML = _Nvml()
    return _NVML


class _RssSampler:
    """The one thread per process that samples RSS (and system metrics) for every open meter."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._meters: set[ResourceMeter] = set()
        self._thread: threading.Thread | None = None
        self.process = psutil.Process()
        # /proc/self/statm kept open: a sample is one pread, not an open, a read and a close.
        try:
            self._statm = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self._statm = -1

    def rss(self) -> int:
        if self._statm >= 0:
            try:
                return int(os.pread(self._statm, 128, 0).split()[1]) * _PAGE_SIZE
            except (OSError, IndexError, ValueError):
                pass
        try:
            return int(self.process.memory_info().rss)
        except psutil.Error:
            return 0

    def register(self, meter: ResourceMeter) -> None:
        with self._wake:
            idle = not self._meters
            self._meters.add(meter)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="pipetrail-rss-sampler", daemon=True
                )
                self._thread.start()
            elif idle:  # only a thread with no meter waits to be woken
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
            now = time.monotonic()
            for meter in meters:
                meter._observe(rss, now)
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
    # The child has no sampler thread and a different pid: start over lazily. NVML handles
    # are not shared with a child either.
    global _SAMPLER, _SAMPLER_LOCK, _NVML
    _SAMPLER = None
    _SAMPLER_LOCK = threading.Lock()
    _NVML = None


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
