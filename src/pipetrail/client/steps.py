"""Step and Task handles: one step of a run and its task attempts."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipetrail.client.artifacts import DataArtifacts
from pipetrail.core.model import ArtifactLink, TaskRecord
from pipetrail.core.status import TaskStatus

if TYPE_CHECKING:
    from pipetrail.client.runs import Run

__all__ = ["Step", "Task"]


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
            "host": self._record.host,
            "pid": self._record.pid,
        }

    @property
    def exception(self) -> str | None:
        if self._record.exception_type is None:
            return None
        return f"{self._record.exception_type}: {self._record.exception_message}"

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

    @property
    def inputs(self) -> list[ArtifactLink]:
        return self._links("input")

    @property
    def outputs(self) -> list[ArtifactLink]:
        return self._links("output")

    @property
    def data(self) -> DataArtifacts:
        return DataArtifacts(self.step.run._reader, self.outputs)

    def __repr__(self) -> str:
        return f"Task('{self.pathspec}', attempt={self.attempt}, status={self.status!r})"
