"""The Executor protocol: submit a task attempt, get a future of its outcome, shut down."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Protocol

from pipetrail.runtime.task import TaskPayload
from pipetrail.storage.metadata.base import TaskOutcome

__all__ = ["Executor"]


class Executor(Protocol):
    """Runs task attempts; ``max_workers`` bounds how many run at once."""

    name: str
    max_workers: int
    #: Tasks run in the runner's own process: their start is written only if they run for a
    #: moment (runtime.starts), and ``queued`` with their end.
    defers_start: bool
    #: Tasks share the runner's host and spool folder: a task hands its last drain over (with
    #: its outcome), to be stored with its end in one transaction (``TaskOutcome.final``).
    hands_over: bool

    def submit(self, payload: TaskPayload) -> Future[TaskOutcome]:
        """Start one attempt; the future resolves to how it ended."""
        ...

    def cancel_task(self, task_id: int, grace_s: float = 5.0) -> bool:
        """Stop one queued or running task (its future then fails); whether there was one."""
        ...

    def shutdown(self, *, cancel: bool = False) -> None:
        """Release workers; with ``cancel``, stop running tasks too."""
        ...
