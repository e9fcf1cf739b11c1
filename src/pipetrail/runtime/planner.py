"""Pure decisions of the engine: retry delays, and which steps a retry of a run reuses or re-runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipetrail.core.graph import Dag
from pipetrail.core.model import PipelineSpec, StepSpec, TaskRecord
from pipetrail.core.params import to_json_value
from pipetrail.core.status import TaskStatus

__all__ = ["StepPlan", "plan_retry", "retry_delay"]


def retry_delay(spec: StepSpec, attempt: int) -> float:
    """Seconds to wait before ``attempt`` (1 for the first retry): delay * backoff^(attempt-1)."""
    if attempt < 1 or spec.retry_delay_s <= 0:
        return 0.0
    return float(spec.retry_delay_s * spec.backoff ** (attempt - 1))


@dataclass(frozen=True)
class StepPlan:
    """What a retry does with one step.

    Attributes:
        step: the step's name.
        action: ``"reuse"`` (outputs taken from the origin run, not executed) or ``"run"``.
        reason: why, in words a person reads in ``--dry-run``.
        reuse: task index → origin task id of the tasks whose outputs are reused. For ``run``
            this holds the completed elements of a foreach that failed in part: only the rest run.
    """

    step: str
    action: str
    reason: str
    reuse: Mapping[int, int] = field(default_factory=dict)


def plan_retry(
    origin: PipelineSpec,
    origin_tasks: Sequence[TaskRecord],
    current: PipelineSpec,
    dag: Dag,
    *,
    origin_params: Mapping[str, Any],
    params: Mapping[str, Any],
    from_step: str | None = None,
) -> list[StepPlan]:
    """Decide, step by step in execution order, what a retry of a run reuses and re-runs.

    A step re-runs when it did not complete in the origin, when it is ``from_step`` or downstream
    of it, when it reads a parameter whose value changed, when its code changed (source hash),
    when it is new, or when anything upstream of it re-runs. Everything else is reused.
    """
    origin_steps = {s.name: s for s in origin.steps}
    changed = {
        name
        for name in set(params) | set(origin_params)
        if to_json_value(params.get(name)) != to_json_value(origin_params.get(name))
    }
    forced = set()
    if from_step is not None:
        forced = {from_step} | dag.descendants(from_step)
    plans: dict[str, StepPlan] = {}
    for name in dag.order:
        spec = current.step(name)
        before = origin_steps.get(name)
        completed = _completed_tasks(origin_tasks, name)
        failed_before = _step_failed(origin_tasks, name)
        upstream_rerun = [u for u in dag.upstream(name) if plans[u].action == "run"]
        reads_changed = sorted(changed & set(spec.params) | changed & set(spec.condition_args))
        if before is None:
            plans[name] = StepPlan(name, "run", "new step, not in the origin run")
        elif name in forced:
            why = "selected with --from" if name == from_step else f"downstream of {from_step!r}"
            plans[name] = StepPlan(name, "run", why)
        elif before.source_hash != spec.source_hash:
            plans[name] = StepPlan(name, "run", "its code changed since the origin run")
        elif reads_changed:
            plans[name] = StepPlan(
                name, "run", f"reads changed parameter {', '.join(reads_changed)}"
            )
        elif upstream_rerun:
            plans[name] = StepPlan(name, "run", f"upstream {upstream_rerun[0]!r} re-runs")
        elif completed and not failed_before:
            plans[name] = StepPlan(name, "reuse", "completed in the origin run", completed)
        elif completed and spec.foreach:
            plans[name] = StepPlan(
                name, "run", f"{len(completed)} element(s) completed, the rest did not", completed
            )
        else:
            plans[name] = StepPlan(name, "run", "did not complete in the origin run")
    return [plans[name] for name in dag.order]


def _completed_tasks(tasks: Sequence[TaskRecord], step: str) -> dict[int, int]:
    """Task index → id of the completed attempt, for a step's tasks in the origin run."""
    done: dict[int, int] = {}
    for task in tasks:
        if task.step == step and task.status is TaskStatus.COMPLETED and not task.allowed_failure:
            done[task.task_index] = task.id
    return done


def _step_failed(tasks: Sequence[TaskRecord], step: str) -> bool:
    """Whether any task index of the step ended without a completed attempt."""
    latest: dict[int, TaskRecord] = {}
    for task in tasks:
        if task.step == step:
            current = latest.get(task.task_index)
            if current is None or task.attempt >= current.attempt:
                latest[task.task_index] = task
    return (
        any(t.status is not TaskStatus.COMPLETED or t.allowed_failure for t in latest.values())
        or not latest
    )
