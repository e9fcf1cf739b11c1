"""A run's cost summary: CPU seconds, peak memory and GPU seconds per step and in total.

One function, :func:`run_cost`, computes it from the run's task records; ``runs show``, the
REST run record, the Python client (``run.cost``) and the dashboard all show what it returns.
The system metrics the samples behind it leave (``system/...``) are listed after the user's
own metrics by :func:`user_metrics_first`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from pipetrail.core.model import RunRecord, TaskRecord

__all__ = ["SYSTEM_METRIC_PREFIX", "RunCost", "StepCost", "run_cost", "user_metrics_first"]

#: The namespace of the metrics pipetrail samples for every task (CPU %, RSS, GPU).
SYSTEM_METRIC_PREFIX = "system/"

_V = TypeVar("_V")


def user_metrics_first(metrics: Mapping[str, _V]) -> dict[str, _V]:
    """``metrics`` with the user's own first and the ``system/...`` ones after, order kept."""
    user = {k: v for k, v in metrics.items() if not k.startswith(SYSTEM_METRIC_PREFIX)}
    return {**user, **{k: v for k, v in metrics.items() if k.startswith(SYSTEM_METRIC_PREFIX)}}


@dataclass(frozen=True)
class StepCost:
    """What one step's attempts used in this run (retries included: they were paid for).

    Attributes:
        step: the step's name.
        tasks: its tasks (foreach items), counting each once.
        attempts: attempts that ran in this run (retries included, reused ones not).
        reused: tasks completed by reusing an earlier run's outputs (they cost nothing here).
        wall_time_s: from its first attempt's start to its last attempt's end (the step's
            latency); None before an attempt ran.
        task_time_s: the attempts' durations summed (a foreach's tasks side by side add up).
        cpu_time_s: CPU seconds of its attempts (user + system, their subprocesses included).
        peak_memory_bytes: the largest peak resident memory of one attempt.
        gpu_time_s: GPU seconds (utilisation times time over devices), None where no attempt
            measured any.
        gpu_peak_memory_bytes: the largest GPU memory peak of one attempt, where measured.
        share: its part of the run's cost (of GPU seconds when the run used a GPU, else of
            CPU seconds), from 0 to 1.
    """

    step: str
    tasks: int
    attempts: int
    reused: int
    wall_time_s: float | None
    task_time_s: float
    cpu_time_s: float
    peak_memory_bytes: int | None
    gpu_time_s: float | None
    gpu_peak_memory_bytes: int | None
    share: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``runs show --json``, REST)."""
        return {
            "step": self.step,
            "tasks": self.tasks,
            "attempts": self.attempts,
            "reused": self.reused,
            "wall_time_s": self.wall_time_s,
            "task_time_s": self.task_time_s,
            "cpu_time_s": self.cpu_time_s,
            "peak_memory_bytes": self.peak_memory_bytes,
            "gpu_time_s": self.gpu_time_s,
            "gpu_peak_memory_bytes": self.gpu_peak_memory_bytes,
            "share": self.share,
        }


@dataclass(frozen=True)
class RunCost:
    """A run's cost: totals, each step's part, and which step is slowest and costs most.

    Attributes:
        wall_time_s: the run's duration (to ``now`` while it runs); None before it started.
        task_time_s: every attempt's duration summed.
        cpu_time_s: CPU seconds of every attempt.
        peak_memory_bytes: the largest peak memory of one attempt (attempts in different
            processes may have run side by side; this is not their sum).
        gpu_time_s: GPU seconds of every attempt; None when none measured any.
        gpu_peak_memory_bytes: the largest GPU memory peak of one attempt, where measured.
        steps: each step that has a task, in the run's step order.
        slowest_step: the step with the longest wall time.
        costliest_step: the step with the most GPU seconds when the run used a GPU (a GPU
            second is priced far above a CPU second), otherwise the most CPU seconds.
        costliest_by: ``gpu_time_s`` or ``cpu_time_s``: the measure ``costliest_step`` and
            each step's ``share`` are taken over.
    """

    wall_time_s: float | None
    task_time_s: float
    cpu_time_s: float
    peak_memory_bytes: int | None
    gpu_time_s: float | None
    gpu_peak_memory_bytes: int | None
    steps: tuple[StepCost, ...]
    slowest_step: str | None
    costliest_step: str | None
    costliest_by: str

    def step(self, name: str) -> StepCost | None:
        """The cost of step ``name``; None if it has no task."""
        return next((s for s in self.steps if s.step == name), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``runs show --json`` under ``cost``, the REST run record's ``cost``)."""
        return {
            "wall_time_s": self.wall_time_s,
            "task_time_s": self.task_time_s,
            "cpu_time_s": self.cpu_time_s,
            "peak_memory_bytes": self.peak_memory_bytes,
            "gpu_time_s": self.gpu_time_s,
            "gpu_peak_memory_bytes": self.gpu_peak_memory_bytes,
            "slowest_step": self.slowest_step,
            "costliest_step": self.costliest_step,
            "costliest_by": self.costliest_by,
            "steps": [s.to_dict() for s in self.steps],
        }


def run_cost(
    run: RunRecord, tasks: Sequence[TaskRecord], *, now: datetime | None = None
) -> RunCost:
    """The cost summary of ``run`` from its task records (every attempt).

    Args:
        run: the run (its step order and duration).
        tasks: its task records, every attempt (``store.tasks(run.id)``).
        now: for a run or attempt still going, the time its wall time runs to; without it,
            only ended attempts count towards wall times, and a running run has none.
    """
    order = [str(s["name"]) for s in run.dag.get("steps", [])]
    by_step: dict[str, list[TaskRecord]] = {}
    for task in tasks:
        by_step.setdefault(task.step, []).append(task)
    names = [n for n in order if n in by_step] + [n for n in by_step if n not in order]
    raw = [_step_cost(name, by_step[name], now) for name in names]

    gpu_values = [s.gpu_time_s for s in raw if s.gpu_time_s is not None]
    gpu_total = sum(gpu_values) if gpu_values else None
    by_gpu = gpu_total is not None and gpu_total > 0
    measure = "gpu_time_s" if by_gpu else "cpu_time_s"

    def value(s: StepCost) -> float:
        return (s.gpu_time_s or 0.0) if by_gpu else s.cpu_time_s

    total = sum(value(s) for s in raw)
    steps = tuple(replace(s, share=value(s) / total if total > 0 else 0.0) for s in raw)
    timed = [s for s in steps if s.wall_time_s is not None]
    # max() keeps the first of equals: ties go to the step that comes first in the run.
    slowest = max(timed, key=lambda s: s.wall_time_s or 0.0, default=None)
    costly = [s for s in steps if value(s) > 0]
    costliest = max(costly, key=value, default=None)
    return RunCost(
        wall_time_s=_run_wall(run, now),
        task_time_s=sum(s.task_time_s for s in steps),
        cpu_time_s=sum(s.cpu_time_s for s in steps),
        peak_memory_bytes=_max(s.peak_memory_bytes for s in steps),
        gpu_time_s=gpu_total,
        gpu_peak_memory_bytes=_max(s.gpu_peak_memory_bytes for s in steps),
        steps=steps,
        slowest_step=None if slowest is None else slowest.step,
        costliest_step=None if costliest is None else costliest.step,
        costliest_by=measure,
    )


def _step_cost(name: str, tasks: list[TaskRecord], now: datetime | None) -> StepCost:
    ran = [t for t in tasks if t.reused_from_task_id is None]
    reused = {t.task_index for t in tasks if t.reused_from_task_id is not None}
    starts = [t.started_at for t in ran if t.started_at is not None]
    ends: list[datetime] = []
    task_time = 0.0
    for t in ran:
        if t.started_at is None:
            continue
        end = t.finished_at or now
        if end is None:
            continue
        ends.append(end)
        task_time += max((end - t.started_at).total_seconds(), 0.0)
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else None
    gpu = [t.gpu_time_s for t in ran if t.gpu_time_s is not None]
    return StepCost(
        step=name,
        tasks=len({t.task_index for t in tasks}),
        attempts=len(starts),
        reused=len(reused),
        wall_time_s=None if wall is None else max(wall, 0.0),
        task_time_s=task_time,
        cpu_time_s=sum(t.cpu_time_s or 0.0 for t in ran),
        peak_memory_bytes=_max(t.peak_memory_bytes for t in ran),
        gpu_time_s=sum(gpu) if gpu else None,
        gpu_peak_memory_bytes=_max(t.gpu_peak_memory_bytes for t in ran),
    )


def _run_wall(run: RunRecord, now: datetime | None) -> float | None:
    if run.started_at is None:
        return None
    end = run.finished_at or now
    if end is None:
        return None
    return max((end - run.started_at).total_seconds(), 0.0)


def _max(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None
