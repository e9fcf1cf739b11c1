"""The run loop's controls: heartbeat, cancel requests, timeouts and the runner's lease."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import TYPE_CHECKING

from pipetrail.core.model import PipelineSpec, RunRecord
from pipetrail.core.status import TASK_TERMINAL, RunStatus, TaskStatus
from pipetrail.errors import InvalidTransitionError, LeaseLostError
from pipetrail.runtime.run_state import StepState
from pipetrail.runtime.spool import salvage
from pipetrail.storage.metadata.base import MetadataStore

if TYPE_CHECKING:
    from pipetrail.runtime.engine import RunObserver, RunRequest
    from pipetrail.runtime.executors.base import Executor
    from pipetrail.runtime.task import TaskServices

__all__ = ["CONTROL_SECONDS", "HEARTBEAT_SECONDS", "RunControls"]

#: How often the runner writes its heartbeat; a run is lost when it stops (runtime.recovery).
HEARTBEAT_SECONDS = 5.0
#: How often the runner looks for a cancel request and checks timeouts.
CONTROL_SECONDS = 0.5


class RunControls:
    """What runs beside the loop of one run, and how the loop is told to stop.

    The control thread beats the heartbeat, reads cancel requests (which reach the loop within
    a second) and checks the run's timeout; the loop checks its tasks' timeouts. A run taken
    from this runner (its lease moved on) stops it without a further write.
    """

    services: TaskServices
    store: MetadataStore
    run: RunRecord
    request: RunRequest
    spec: PipelineSpec
    steps: dict[str, StepState]
    observer: RunObserver

    def _init_controls(self, request: RunRequest, spec: PipelineSpec) -> None:
        self._stop = threading.Event()
        self._interrupt_lock = threading.Lock()
        self._cancel_reason: str | None = None
        self._cancel_status = RunStatus.CANCELLED
        #: Set when the run was taken from this runner (its lease moved on): write nothing.
        self._lost: LeaseLostError | None = None
        self._inline = False
        self._main_thread = threading.current_thread() is threading.main_thread()
        self._run_timeout = request.timeout_s or spec.timeout_s
        self._run_deadline: float | None = None
        self._run_warned = False

    def _raise_if_lost(self, executor: Executor | None = None) -> None:
        """Stop at once, writing nothing, when the run was taken from this runner."""
        if self._lost is None:
            return
        if executor is not None:
            executor.shutdown(cancel=True)
        raise LeaseLostError(
            f"run {self.run.pathspec} was taken from this runner: it was declared lost while "
            "this runner was not heard from (paused, or cut off from the store), and its record "
            "was ended then; this runner stopped and wrote nothing more into it. See: "
            f"pipetrail runs show {self.run.pathspec}",
            run_id=self.run.id,
        ) from self._lost

    def _control(self) -> None:
        """Runs beside the loop: heartbeat, cancel requests (they reach the loop within 1 s)."""
        # A store that is away makes this thread skip a beat, not wait: the loop itself waits.
        self.store.limit_patience(2.0)
        last_beat = time.monotonic()
        while not self._stop.wait(CONTROL_SECONDS):
            try:
                if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                    self.store.heartbeat(self.run.id)
                    last_beat = time.monotonic()
                if self._cancel_reason is None:
                    self._check_run_timeout()
                if self._cancel_reason is None:
                    # Also where a runner that was paused learns its run was taken from it.
                    reason = self.store.cancel_requested(self.run.id)
                    if reason is not None:
                        self._request_stop(reason, RunStatus.CANCELLED)
            except LeaseLostError as lost:
                self._lost = lost
                self._request_stop(str(lost), RunStatus.FAILED)
                return
            except Exception:  # the store is away; the next tick tries again
                continue

    def _request_stop(self, reason: str, status: RunStatus) -> None:
        with self._interrupt_lock:
            self._cancel_status = status
            self._cancel_reason = reason
            if self._inline and self._main_thread and not self._stop.is_set():
                # An inline step runs in the main thread: interrupt it as Ctrl-C would. A real
                # signal (unlike _thread.interrupt_main) also wakes a blocking sleep or read.
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    def _check_run_timeout(self) -> None:
        if self._run_deadline is None or self._run_warned or time.monotonic() <= self._run_deadline:
            return
        limit = f"run exceeded its timeout of {self._run_timeout:g} s"
        policy = self.request.on_timeout or self.spec.on_timeout
        if policy == "warning":
            self._run_warned = True
            self.store.record_event(self.run.id, "timeout", f"{limit} (policy: warning)")
        else:
            self._run_warned = True
            status = RunStatus.CANCELLED if policy == "cancelled" else RunStatus.FAILED
            self._request_stop(limit, status)

    def _check_timeouts(self, executor: Executor) -> None:
        now = time.monotonic()
        for step in self.steps.values():
            limit_s = step.spec.timeout_s
            if limit_s is None or step.state != "active":
                continue
            for task in step.tasks.values():
                if task.future is None or task.submitted is None or task.timed_out or task.warned:
                    continue
                if now - task.submitted <= limit_s:
                    continue
                if step.spec.on_timeout == "warning":
                    task.warned = True
                    self.store.record_event(
                        self.run.id,
                        "timeout",
                        f"step {step.spec.name!r} is over its timeout of {limit_s:g} s "
                        "(policy: warning); it goes on",
                        task_id=task.task_id,
                    )
                elif executor.cancel_task(task.task_id, grace_s=2.0):
                    task.timed_out = True

    def _cancel_open_tasks(self, reason: str) -> None:
        for step in self.steps.values():
            for task in step.tasks.values():
                if task.status in TASK_TERMINAL:
                    continue
                # Its process was stopped (the executor is shut down): keep what it logged.
                salvage(self.store, self.services.spool_root, self.run.id, task.task_id)
                current = self.store.get_task(task.task_id).status
                if current not in TASK_TERMINAL:
                    with contextlib.suppress(InvalidTransitionError):
                        self.store.set_task_status(
                            task.task_id, TaskStatus.CANCELLED, message=reason
                        )
                task.status = TaskStatus.CANCELLED
                self.observer.task_changed(step.spec.name, task.attempt, TaskStatus.CANCELLED)
            if step.state != "done":
                step.state, step.result = "done", TaskStatus.CANCELLED
