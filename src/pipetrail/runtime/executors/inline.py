"""The in-process executor: runs each task in the calling thread, one at a time."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from pipetrail.dsl import Pipeline
from pipetrail.errors import StepTimeoutError
from pipetrail.runtime.task import TaskPayload, TaskServices, execute_task
from pipetrail.storage.metadata.base import TaskOutcome

__all__ = ["InlineExecutor"]


class InlineExecutor:
    """Runs tasks in this process; useful for debugging (breakpoints work) and tiny steps.

    A step's timeout (policy ``failed`` or ``cancelled``) interrupts it with StepTimeoutError
    through SIGALRM, which works when the run is driven from the main thread.
    """

    name = "inline"
    max_workers = 1
    defers_start = True
    hands_over = True

    def __init__(self, services: TaskServices, pipeline: Pipeline) -> None:
        self._services = services
        self._pipeline = pipeline

    def submit(self, payload: TaskPayload) -> Future[TaskOutcome]:
        future: Future[TaskOutcome] = Future()
        step = self._pipeline.steps[payload.step]
        limit = step.timeout_s if step.on_timeout != "warning" else None
        try:
            with _alarm(limit, step.name):
                future.set_result(execute_task(payload, self._services, self._pipeline))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def cancel_task(self, task_id: int, grace_s: float = 5.0) -> bool:
        """Tasks run to their end inside ``submit``; there is never one to cancel from outside."""
        return False

    def shutdown(self, *, cancel: bool = False) -> None:
        return None


@contextmanager
def _alarm(seconds: float | None, step: str) -> Iterator[None]:
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(_signum: int, _frame: Any) -> None:
        raise StepTimeoutError(f"step {step!r} exceeded its timeout of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
