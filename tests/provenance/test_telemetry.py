"""System metrics of a task: CPU %, RSS (and GPU figures where NVML sees a GPU) as its metrics."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psutil
import pytest

import pipetrail as pt
from pipetrail.client import Run
from pipetrail.config import Settings
from pipetrail.core.model import MetricPoint
from pipetrail.provenance import resources
from pipetrail.provenance.resources import ResourceMeter, gpu_seconds
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

MIB = 1024**2

BUSY = """
import time

@pt.step
def busy() -> int:
    pt.log_metric("loss", 0.5)
    block = []
    start = time.monotonic()
    while time.monotonic() - start < 1.5:
        if len(block) < 60:
            block.append(b"\\x01" * 2**20)  # written, so resident: about 60 MB held
        sum(range(2000))
    pt.log_metric("loss", 0.25)
    return len(block)

pipeline = pt.Pipeline("busy", [busy])
"""

QUICK = """
@pt.step
def quick() -> int:
    pt.log_metric("loss", 1.0)
    return 1

pipeline = pt.Pipeline("quick", [quick])
"""

CHILD = """
import subprocess
import sys

@pt.step
def spawn() -> int:
    # The child burns CPU for a second: it is in the task's process tree, not in its process.
    code = "import time\\ns = time.process_time()\\nwhile time.process_time() - s < 1.0: pass"
    return subprocess.run([sys.executable, "-c", code], check=True).returncode

pipeline = pt.Pipeline("spawn", [spawn])
"""


def _workspace(home: Path, every: float) -> Workspace:
    return Workspace(Settings.for_home(home, system_metrics_s=every))


@pytest.fixture
def sampled(tmp_path: Path) -> Iterator[Workspace]:
    ws = _workspace(tmp_path / "home", 0.2)
    try:
        yield ws
    finally:
        ws.close()


def _integrated_cpu_s(run: Run, points: list[MetricPoint]) -> float:
    """CPU seconds the samples add up to: each CPU % over the time since the previous one."""
    task = run.steps[0].task
    assert task is not None and task.started_at is not None
    previous = task.started_at
    total = 0.0
    for point in points:
        total += point.value / 100 * (point.timestamp - previous).total_seconds()
        previous = point.timestamp
    return total


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_a_busy_task_records_cpu_and_memory_samples(
    sampled: Workspace, flow_file: FlowWriter, executor: str
) -> None:
    run = pt.run(load_pipeline_file(flow_file(BUSY)), executor=executor, workspace=sampled)

    assert run.status == "completed", run.error
    task = run["busy"].task
    assert task is not None and task.started_at and task.finished_at
    cpu = run.metric_history("system/cpu_percent")
    rss = run.metric_history("system/rss_bytes")
    # 1.5 s at one sample per 0.2 s, and one at the end; a loaded machine may delay a few.
    assert len(cpu) >= 4 and len(rss) == len(cpu)
    for point in cpu + rss:
        assert point.step is None
        assert task.started_at <= point.timestamp <= task.finished_at
    cores = psutil.cpu_count() or 1
    assert all(0 <= p.value <= 100 * cores + 10 for p in cpu)
    # The samples add up to the CPU time the task was charged (a busy loop, so most of it).
    cpu_time = task.resources["cpu_time_s"]
    assert cpu_time > 0.2
    assert _integrated_cpu_s(run, cpu) == pytest.approx(cpu_time, rel=0.35, abs=0.15)
    # Memory: the process's own size, about 60 MB more while the block is held, and less
    # again in the sample at the end (taken once the step returned and freed it).
    assert all(20 * MIB < p.value < 4096 * MIB for p in rss)
    assert max(p.value for p in rss) - rss[-1].value > 30 * MIB
    # One namespace with the user's metrics; no GPU figures on a machine without NVML.
    assert run.metrics["loss"] == 0.25
    assert {"system/cpu_percent", "system/rss_bytes"} <= set(run.metrics)
    assert not any(name.startswith("system/gpu") for name in run.metrics)
    assert task.resources["gpu_time_s"] is None


def test_zero_turns_system_metrics_off(tmp_path: Path, flow_file: FlowWriter) -> None:
    ws = _workspace(tmp_path / "home", 0)
    try:
        run = pt.run(load_pipeline_file(flow_file(BUSY)), executor="inline", workspace=ws)
    finally:
        ws.close()

    assert run.status == "completed", run.error
    assert set(run.metrics) == {"loss"}
    task = run["busy"].task
    assert task is not None and task.resources["cpu_time_s"] > 0.2


def test_a_task_shorter_than_one_interval_takes_no_sample(
    sampled: Workspace, flow_file: FlowWriter
) -> None:
    # Short tasks cost nothing extra: their CPU time and peak memory are in their resources.
    run = pt.run(load_pipeline_file(flow_file(QUICK)), executor="inline", workspace=sampled)

    assert run.status == "completed", run.error
    assert set(run.metrics) == {"loss"}
    task = run["quick"].task
    assert task is not None and task.resources["peak_memory_bytes"] > 0


def test_a_child_process_is_part_of_the_task(sampled: Workspace, flow_file: FlowWriter) -> None:
    run = pt.run(load_pipeline_file(flow_file(CHILD)), executor="inline", workspace=sampled)

    assert run.status == "completed", run.error
    cpu = run.metric_history("system/cpu_percent")
    assert len(cpu) >= 3
    # The child's second of CPU shows in the samples and in the task's CPU time.
    assert _integrated_cpu_s(run, cpu) > 0.5
    task = run["spawn"].task
    assert task is not None and task.resources["cpu_time_s"] >= 0.8


def test_samples_go_to_the_sink_while_the_block_runs() -> None:
    seen: list[tuple[float, dict[str, float]]] = []
    with ResourceMeter(system_metrics_s=0.2, on_sample=lambda at, v: seen.append((at, dict(v)))):
        start = psutil.Process().cpu_times()
        while sum(psutil.Process().cpu_times()[:2]) - sum(start[:2]) < 0.5:
            sum(range(1000))
        # End half an interval after a periodic sample: the block's end is then a sample too.
        while not seen or time.time() - seen[-1][0] < 0.1:
            time.sleep(0.01)
        taken = len(seen)
        ending = time.time()

    assert taken >= 2  # during the block, not only at its end
    # ... and one more as the block ends, so the series reaches the task's end.
    assert len(seen) > taken
    assert seen[-1][0] >= ending
    assert [at for at, _ in seen] == sorted(at for at, _ in seen)
    assert all(set(v) == {"system/cpu_percent", "system/rss_bytes"} for _, v in seen)


def test_a_failing_sink_never_fails_the_block() -> None:
    def sink(at: float, values: object) -> None:
        raise RuntimeError("store away")

    with ResourceMeter(system_metrics_s=0.05, on_sample=sink) as meter:
        start = psutil.Process().cpu_times()
        while sum(psutil.Process().cpu_times()[:2]) - sum(start[:2]) < 0.3:
            sum(range(1000))

    assert meter.usage.system_samples >= 2


def test_without_nvml_there_are_no_gpu_figures() -> None:
    # This machine has no NVIDIA driver (and nvidia-ml-py may be absent): no devices, no error.
    assert resources._Nvml().usage({psutil.Process().pid}) == []


def test_an_nvml_that_fails_to_start_means_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = ModuleType("pynvml")

    def init() -> None:
        raise OSError("NVML Shared Library Not Found")

    broken.nvmlInit = init  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    monkeypatch.setattr(resources, "_NVML", None)

    seen: list[dict[str, float]] = []
    with ResourceMeter(system_metrics_s=0.05, on_sample=lambda at, v: seen.append(dict(v))) as m:
        start = psutil.Process().cpu_times()
        while sum(psutil.Process().cpu_times()[:2]) - sum(start[:2]) < 0.2:
            sum(range(1000))

    assert seen and all(not any(k.startswith("system/gpu") for k in v) for v in seen)
    assert m.usage.gpu_time_s is None


@pytest.mark.parametrize(
    ("intervals", "expected"),
    [
        ([], 0.0),
        ([(5.0, [])], 0.0),  # no device in use
        ([(5.0, [100.0])], 5.0),
        ([(2.0, [50.0]), (2.0, [25.0])], 1.5),
        ([(10.0, [50.0, 50.0])], 10.0),  # two half-busy devices: as much as one busy one
        ([(4.0, [100.0, 100.0, 100.0, 100.0])], 16.0),
        ([(3.0, [120.0])], 3.0),  # a reading above 100 % counts as 100 %
        ([(-1.0, [100.0]), (1.0, [-5.0])], 0.0),  # clock steps and bad readings add nothing
    ],
)
def test_gpu_seconds_are_utilisation_times_time_over_devices(
    intervals: list[tuple[float, list[float]]], expected: float
) -> None:
    assert gpu_seconds(intervals) == pytest.approx(expected)
