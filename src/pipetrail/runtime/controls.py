"""The run loop's controls: heartbeat, cancel requests, timeouts and the runner's lease."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
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

__all__ = ["CONTROL_SECONDS", "HEARTBEAT_SECONDS", "RunControls", "watching"]

_log = logging.getLogger(__name__)

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
        #: Held while the control thread looks at this run (see _control_tick).
        self._tick_lock = threading.Lock()
        self._last_beat = time.monotonic()
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

    def _control_tick(self) -> None:
        """One look at the run, from the process's control thread: heartbeat, cancel, timeout.

        Cancel requests reach the loop within a second. A store that is away makes the tick
        skip a beat, not wait: the loop itself waits.
        """
        with self._tick_lock:
            if self._stop.is_set() or self._lost is not None:
                return
            self.store.limit_patience(2.0)
            try:
                if time.monotonic() - self._last_beat >= HEARTBEAT_SECONDS:
                    self.store.heartbeat(self.run.id)
                    self._last_beat = time.monotonic()
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
            except Exception:  # the store is away; the next tick tries again
                return

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


class _ControlThread:
    """The one thread of a process that looks after every run the process drives.

    Each run it watches gets a tick every ``CONTROL_SECONDS``, the first one that long after
    the run began: a run that ends sooner costs no thread at all. The thread waits without
    polling while no run is watched.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._runs: dict[int, tuple[float, RunControls]] = {}
        self._thread: threading.Thread | None = None

    def add(self, run: RunControls) -> None:
        with self._lock:
            self._runs[id(run)] = (time.monotonic() + CONTROL_SECONDS, run)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="pipetrail-control", daemon=True
                )
                self._thread.start()
            self._lock.notify()

    def remove(self, run: RunControls) -> None:
        """Stop watching ``run``; once this returns, no tick of it touches the store."""
        with self._lock:
            self._runs.pop(id(run), None)
        # A tick in flight holds the run's lock: wait it out (bounded by the store's patience).
        if run._tick_lock.acquire(timeout=CONTROL_SECONDS + 5.0):
            run._tick_lock.release()

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._runs:
                    self._lock.wait()
                now = time.monotonic()
                due = [run for at, run in self._runs.values() if at <= now]
                for run in due:
                    self._runs[id(run)] = (now + CONTROL_SECONDS, run)
                nearest = min(at for at, _ in self._runs.values())
            for run in due:
                try:
                    run._control_tick()
                except Exception:  # one run's fault must not stop the others' heartbeats
                    _log.exception("control tick of run %s failed", run.run.pathspec)
            with self._lock:
                wait = nearest - time.monotonic()
                if wait > 0:
                    self._lock.wait(wait)


_CONTROL = _ControlThread()


@contextlib.contextmanager
def watching(run: RunControls) -> Iterator[None]:
    """Have the process's control thread look after ``run`` while the block runs."""
    _CONTROL.add(run)
    try:
        yield
    finally:
        with run._interrupt_lock:
            run._stop.set()
        _CONTROL.remove(run)
