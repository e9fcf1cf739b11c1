"""Step and Task handles: one step of a run and its task attempts."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipetrail.client.artifacts import Artifact, ArtifactMap, DataArtifacts
from pipetrail.core.cost import StepCost
from pipetrail.core.model import ArtifactLink, TaskRecord
from pipetrail.core.status import TASK_TERMINAL, TaskStatus

if TYPE_CHECKING:
    from pipetrail.client.runs import Run

__all__ = ["Step", "Task", "TaskException"]


@dataclass(frozen=True)
class TaskException:
    """Why a task failed: ``str()`` reads ``"ValueError: bad row"``.

    Attributes:
        type: the exception's class name.
        message: its message.
        traceback: the recorded traceback, starting at the user's code (None if none was kept).
    """

    type: str
    message: str
    traceback: str | None = None

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


class Step:
    """One step of a run, with its task attempts."""

    def __init__(self, run: Run, name: str, tasks: list[TaskRecord]) -> None:
        self.run = run
        self.name = name
        self._tasks = tasks

    @property
    def pathspec(self) -> str:
        return f"{self.run.pathspec}/{self.name}"

    @property
    def tasks(self) -> list[Task]:
        """Every attempt, oldest first."""
        return [Task(self, t) for t in self._tasks]

    @property
    def task(self) -> Task | None:
        """The latest attempt."""
        return Task(self, self._tasks[-1]) if self._tasks else None

    @property
    def status(self) -> str:
        return self._tasks[-1].status.value if self._tasks else TaskStatus.INITIAL.value

    @property
    def created_at(self) -> datetime | None:
        """When the step's first task was created; None before it has one."""
        return min((t.created_at for t in self._tasks), default=None)

    @property
    def started_at(self) -> datetime | None:
        """When its first task (attempt) started; None before one has."""
        return min((t.started_at for t in self._tasks if t.started_at is not None), default=None)

    @property
    def finished_at(self) -> datetime | None:
        """When its last task (attempt, retries included) ended; None until every task has."""
        latest: dict[int, TaskRecord] = {}
        for task in self._tasks:
            latest[task.task_index] = task
        if not latest or any(t.status not in TASK_TERMINAL for t in latest.values()):
            return None
        return max((t.finished_at for t in self._tasks if t.finished_at is not None), default=None)

    @property
    def cost(self) -> StepCost | None:
        """What this step's attempts used (``run.cost`` for this step); None without a task."""
        return self.run.cost.step(self.name)

    def __repr__(self) -> str:
        return f"Step('{self.pathspec}', status={self.status!r})"


class Task:
    """One attempt of one task (Mage: block run)."""

    def __init__(self, step: Step, record: TaskRecord) -> None:
        self.step = step
        self._record = record

    @property
    def record(self) -> TaskRecord:
        return self._record

    @property
    def id(self) -> int:
        return self._record.id

    @property
    def pathspec(self) -> str:
        return f"{self.step.pathspec}/{self._record.task_index}"

    @property
    def attempt(self) -> int:
        return self._record.attempt

    @property
    def status(self) -> str:
        return self._record.status.value

    @property
    def successful(self) -> bool:
        return self._record.status is TaskStatus.COMPLETED

    @property
    def started_at(self) -> datetime | None:
        return self._record.started_at

    @property
    def finished_at(self) -> datetime | None:
        return self._record.finished_at

    @property
    def duration(self) -> float | None:
        return self._record.duration_s

    @property
    def resources(self) -> dict[str, Any]:
        return {
            "cpu_time_s": self._record.cpu_time_s,
            "peak_memory_bytes": self._record.peak_memory_bytes,
            "gpu_peak_memory_bytes": self._record.gpu_peak_memory_bytes,
            "gpu_time_s": self._record.gpu_time_s,
            "host": self._record.host,
            "pid": self._record.pid,
            "worker": self._record.worker,
        }

    @property
    def exception(self) -> TaskException | None:
        """Why the attempt failed (``str()`` is ``"Type: message"``); None unless it failed."""
        if self._record.exception_type is None:
            return None
        return TaskException(
            self._record.exception_type,
            self._record.exception_message or "",
            self._record.traceback,
        )

    @property
    def traceback(self) -> str | None:
        return self._record.traceback

    def _logs(self) -> dict[str, str]:
        return self.step.run._reader.store.logs(self._record.id)

    @property
    def stdout(self) -> str:
        return self._logs().get("stdout", "")

    @property
    def stderr(self) -> str:
        return self._logs().get("stderr", "")

    def _links(self, direction: str) -> list[ArtifactLink]:
        return [
            link
            for link in self.step.run._link_records()
            if link.task_id == self._record.id and link.direction == direction
        ]

    def _artifacts(self, direction: str) -> ArtifactMap:
        reader = self.step.run._reader

        def producer(link: ArtifactLink) -> Task | None:
            if link.direction == "output":
                return self
            if link.producer_task_id is None:
                return None
            return self.step.run._task_handle(link.producer_task_id)

        return ArtifactMap(
            [
                Artifact(link, reader, functools.partial(producer, link))
                for link in self._links(direction)
            ]
        )

    @property
    def inputs(self) -> ArtifactMap:
        """What the task consumed, by name: upstream values and external inputs."""
        return self._artifacts("input")

    @property
    def outputs(self) -> ArtifactMap:
        """What the task produced, by name: its return values and logged artifacts."""
        return self._artifacts("output")

    @property
    def data(self) -> DataArtifacts:
        return DataArtifacts(self.step.run._reader, self._links("output"))

    def __repr__(self) -> str:
        return f"Task('{self.pathspec}', attempt={self.attempt}, status={self.status!r})"
