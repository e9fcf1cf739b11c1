"""What the run loop knows of each step and task while a run executes (shared by its parts)."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field

from pipetrail.core.model import ArtifactRecord, StepSpec
from pipetrail.core.status import TaskStatus
from pipetrail.storage.metadata.base import TaskOutcome

__all__ = ["Outputs", "StepState", "TaskState"]

Outputs = dict[str, tuple[ArtifactRecord, int]]


@dataclass
class TaskState:
    """One task of a step: its current attempt, its future while it runs, its outputs."""

    index: int
    task_id: int
    attempt: int = 0
    status: TaskStatus = TaskStatus.INITIAL
    future: Future[TaskOutcome] | None = None
    submitted: float | None = None
    ready_at: float = 0.0
    warned: bool = False
    timed_out: bool = False
    outputs: Outputs = field(default_factory=dict)


@dataclass
class StepState:
    """One step of the run: waiting → active → done, its tasks by index, how it ended."""

    spec: StepSpec
    state: str = "waiting"  # waiting → active → done
    result: TaskStatus | None = None
    allowed_failure: bool = False
    failed_upstream: str | None = None
    tasks: dict[int, TaskState] = field(default_factory=dict)
    is_foreach: bool = False

    def outputs(self) -> list[Outputs]:
        return [self.tasks[i].outputs for i in sorted(self.tasks)]
