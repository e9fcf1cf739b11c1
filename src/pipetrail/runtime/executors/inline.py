"""The in-process executor: runs each task in the calling thread, one at a time."""

from __future__ import annotations

from concurrent.futures import Future

from pipetrail.dsl import Pipeline
from pipetrail.runtime.task import TaskPayload, TaskServices, execute_task
from pipetrail.storage.metadata.base import TaskOutcome

__all__ = ["InlineExecutor"]


class InlineExecutor:
    """Runs tasks in this process; useful for debugging (breakpoints work) and tiny steps."""

    name = "inline"
    max_workers = 1

    def __init__(self, services: TaskServices, pipeline: Pipeline) -> None:
        self._services = services
        self._pipeline = pipeline

    def submit(self, payload: TaskPayload) -> Future[TaskOutcome]:
        future: Future[TaskOutcome] = Future()
        try:
            future.set_result(execute_task(payload, self._services, self._pipeline))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def shutdown(self, *, cancel: bool = False) -> None:
        return None
