"""Run and task statuses as a state machine defined as data."""

from __future__ import annotations

from enum import StrEnum

from pipetrail.errors import InvalidTransitionError

__all__ = [
    "RUN_TERMINAL",
    "RUN_TRANSITIONS",
    "TASK_TERMINAL",
    "TASK_TRANSITIONS",
    "InvalidTransitionError",
    "RunStatus",
    "TaskStatus",
    "check_run_transition",
    "check_task_transition",
    "transition_path",
]


class RunStatus(StrEnum):
    """Where a pipeline run is in its life."""

    INITIAL = "initial"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskStatus(StrEnum):
    """Where one task attempt (Mage: block run) is in its life."""

    INITIAL = "initial"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UPSTREAM_FAILED = "upstream_failed"
    CONDITION_FAILED = "condition_failed"


RUN_TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
TASK_TERMINAL = frozenset(
    {
        TaskStatus.COMPLETED,
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
        TaskStatus.UPSTREAM_FAILED,
        TaskStatus.CONDITION_FAILED,
    }
)

RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.INITIAL: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.RUNNING: frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}

_NOT_STARTED_ENDS = frozenset(
    {TaskStatus.UPSTREAM_FAILED, TaskStatus.CONDITION_FAILED, TaskStatus.CANCELLED}
)

TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    # initial -> completed: a task that needs no execution (outputs reused by a retry, a
    # foreach over no items); the event says which.
    TaskStatus.INITIAL: frozenset({TaskStatus.QUEUED, TaskStatus.FAILED, TaskStatus.COMPLETED})
    | _NOT_STARTED_ENDS,
    TaskStatus.QUEUED: frozenset({TaskStatus.RUNNING, TaskStatus.FAILED, TaskStatus.CANCELLED}),
    TaskStatus.RUNNING: frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
    TaskStatus.UPSTREAM_FAILED: frozenset(),
    TaskStatus.CONDITION_FAILED: frozenset(),
}


def check_run_transition(current: RunStatus, new: RunStatus) -> None:
    """Raise InvalidTransitionError unless a run may go from ``current`` to ``new``."""
    if new not in RUN_TRANSITIONS[current]:
        raise InvalidTransitionError(f"a run cannot go from {current.value!r} to {new.value!r}")


def check_task_transition(current: TaskStatus, new: TaskStatus) -> None:
    """Raise InvalidTransitionError unless a task may go from ``current`` to ``new``."""
    if new not in TASK_TRANSITIONS[current]:
        raise InvalidTransitionError(f"a task cannot go from {current.value!r} to {new.value!r}")


def transition_path(current: TaskStatus, target: TaskStatus) -> list[TaskStatus]:
    """The statuses a task passes through from ``current`` to ``target``, each one an event.

    A task finishing straight from ``initial`` or ``queued`` (a worker that died before it said
    ``running``) goes through the shortest legal route; a direct step is taken when allowed.

    Raises:
        InvalidTransitionError: when no legal route leads there.
    """
    if current == target:
        return []
    route = {
        TaskStatus.INITIAL: [TaskStatus.QUEUED, TaskStatus.RUNNING],
        TaskStatus.QUEUED: [TaskStatus.RUNNING],
    }
    path: list[TaskStatus] = []
    here = current
    for middle in route.get(current, []):
        if target in TASK_TRANSITIONS[here]:
            break
        path.append(middle)
        here = middle
    check_task_transition(here, target)
    path.append(target)
    return path
