"""The process executor: a pool of warm worker processes that survives crashes and stops tasks."""

from __future__ import annotations

import atexit
import contextlib
import importlib.machinery
import multiprocessing
import os
import pickle
import select
import signal
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerProcess
from pathlib import Path

from pipetrail.errors import PipetrailError, TaskCancelledError, WorkerLostError
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.runtime.task import TaskPayload, TaskServices, execute_task
from pipetrail.storage.metadata.base import TaskOutcome

__all__ = ["ProcessExecutor"]

# Modules every worker needs, imported once in the fork server so each worker starts warm.
# Named as strings: the fork server imports them, this module does not depend on them.
_PRELOAD = [
    "pipetrail.runtime.executors.pool",
    "pipetrail.storage.metadata.sql.store",
    "pipetrail.storage.artifacts.serializers",
    "sqlalchemy.dialects.sqlite",
    "sqlalchemy.dialects.postgresql",
    "fsspec.implementations.local",
    "blake3",
    "psutil",
]

#: Seconds a worker gets to exit after the stop message before it is killed.
_STOP_GRACE_S = 3.0
#: Seconds a running task gets after SIGTERM when the whole executor is cancelled.
_CANCEL_GRACE_S = 1.0
#: The message that tells an idle worker to exit.
_STOP = b""

_HINTS = {
    signal.SIGKILL: "; SIGKILL usually comes from the out-of-memory killer or a `kill -9`",
    signal.SIGSEGV: "; a crash in native code (an extension module) does this",
    signal.SIGBUS: "; a crash in native code (an extension module) does this",
    signal.SIGABRT: "; a failed assertion in native code does this",
}


@dataclass(frozen=True)
class _Raised:
    """A worker's report of an exception raised outside user code (user errors are outcomes)."""

    type_name: str
    message: str
    traceback: str
    pickled: bytes | None


def _serve(conn: Connection, factory: Callable[[], TaskServices], runner: int) -> None:
    """A worker's life: build the services once, then run payloads until told to stop."""
    # Ctrl-C reaches the whole process group; the runner decides what a cancel means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_runner, args=(runner,), daemon=True).start()
    services: TaskServices | None = None
    broken: BaseException | None = None
    try:
        services = factory()
    except Exception as exc:  # reported with every task, so the runner sees why
        broken = exc
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the runner has gone
        if data == _STOP:
            return
        reply: TaskOutcome | _Raised
        try:
            if services is None:
                raise PipetrailError(
                    f"worker process {os.getpid()} could not build its stores: "
                    f"{type(broken).__name__}: {broken}"
                ) from broken
            reply = _run(pickle.loads(data), services)
        except BaseException as exc:
            reply = _raised(exc)
        try:
            conn.send_bytes(_dumps(reply))
        except OSError:
            return


def _watch_runner(runner: int) -> None:
    """Exit as soon as the runner is gone (killed with -9), even in the middle of a long task.

    The worker's parent is the fork server, so only the runner's pid tells whether anyone is
    still waiting for the result; its run is marked lost and can be retried. A pidfd becomes
    readable the moment the runner exits, so the worker stops writing at once; where there is
    none, the pid is polled every 50 ms. What the task had spooled is salvaged by the reaper.
    """
    try:
        fd = os.pidfd_open(runner)
    except (AttributeError, OSError):
        fd = -1
    if fd >= 0:
        with contextlib.suppress(OSError):
            select.select([fd], [], [])
            os._exit(1)
    while True:
        time.sleep(0.05)
        try:
            os.kill(runner, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # alive, under another user
            continue


def _run(payload: TaskPayload, services: TaskServices) -> TaskOutcome:
    if payload.pipeline_file is None:
        raise PipetrailError(
            f"pipeline {payload.pipeline!r} has no file for workers to load; "
            "define it in a .py file or use the inline executor"
        )
    pipeline = load_pipeline_file(Path(payload.pipeline_file), payload.pipeline)
    return execute_task(payload, services, pipeline)


def _raised(exc: BaseException) -> _Raised:
    try:
        pickled: bytes | None = pickle.dumps(exc)
    except Exception:
        pickled = None
    text = "".join(traceback.format_exception(exc))
    return _Raised(type(exc).__qualname__, str(exc), text, pickled)


def _dumps(reply: TaskOutcome | _Raised) -> bytes:
    try:
        return pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        return pickle.dumps(_raised(exc), protocol=pickle.HIGHEST_PROTOCOL)


@dataclass(eq=False)
class _Task:
    payload: TaskPayload
    data: bytes
    future: Future[TaskOutcome]
    started: bool = False


class _Worker:
    """One worker process as the dispatcher sees it."""

    def __init__(self, process: ForkServerProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.pid: int = process.pid or 0
        self.sentinel: int = process.sentinel
        self.task: _Task | None = None
        self.served = 0
        self.eof = False
        self.cancelling = False
        self.killed = False
        self.kill_at: float | None = None

    @property
    def idle(self) -> bool:
        return self.task is None and not self.eof

    def send_signal(self, sig: signal.Signals) -> None:
        # Only while it is not known to have exited: by then its pid may be someone else's.
        if self.process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


#: Executors with live workers, shut down at interpreter exit (multiprocessing would otherwise
#: wait forever for idle workers in its own exit handler).
_live: weakref.WeakSet[ProcessExecutor] = weakref.WeakSet()
_atexit_registered = False


def _shutdown_live() -> None:
    for executor in list(_live):
        executor.shutdown(cancel=True)


class ProcessExecutor:
    """Runs tasks in ``max_workers`` long-lived processes started by a fork server.

    A worker that dies fails only the task it was running (with :class:`WorkerLostError`) and
    is replaced; ``cancel_task`` stops one task. Workers start on the first ``submit``.

    Args:
        factory: builds the worker's stores; must be picklable (a module-level function or
            a functools.partial of one).
        max_workers: processes in the pool; the CPU count by default.
    """

    name = "process"
    defers_start = False
    hands_over = True

    def __init__(self, factory: Callable[[], TaskServices], max_workers: int | None = None) -> None:
        self.max_workers = max_workers or os.cpu_count() or 2
        self._factory = factory
        self._lock = threading.Lock()
        self._queue: deque[_Task] = deque()
        self._workers: list[_Worker] = []
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._wake_pending = False
        self._closing = False
        self._broken: str | None = None
        self._spawned = 0

    def submit(self, payload: TaskPayload) -> Future[TaskOutcome]:
        """Queue one attempt; the future resolves to its outcome.

        The future fails with :class:`WorkerLostError` when the worker dies under the task,
        with :class:`TaskCancelledError` when ``cancel_task`` stopped it, and with the
        worker's exception when something outside user code failed (the pipeline file does
        not load, the stores cannot be opened).

        Raises:
            RuntimeError: the executor was shut down.
        """
        future: Future[TaskOutcome] = Future()
        try:
            data = pickle.dumps(replace(payload, capture_fds=True), pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            future.set_exception(exc)
            return future
        with self._lock:
            if self._closing:
                raise RuntimeError(
                    f"cannot submit step {payload.step!r}: the process executor was shut down"
                )
            if self._broken is not None:
                future.set_exception(PipetrailError(self._broken))
                return future
            if self._thread is None:
                self._start()
            self._queue.append(_Task(payload, data, future))
            self._wake()
        return future

    def cancel_task(self, task_id: int, grace_s: float = 5.0) -> bool:
        """Stop task ``task_id``: drop it when queued, terminate its worker when running.

        A running task's worker gets SIGTERM, then SIGKILL after ``grace_s`` seconds; its
        future fails with :class:`TaskCancelledError` and the worker is replaced. A queued
        task's future is cancelled.

        Returns:
            True when the task was queued or running (also when it is already being stopped),
            False when this executor does not hold it (unknown or already finished).
        """
        with self._lock:
            queued = next((t for t in self._queue if t.payload.task_id == task_id), None)
            if queued is None:
                worker = next(
                    (w for w in self._workers if w.task and w.task.payload.task_id == task_id),
                    None,
                )
                if worker is None:
                    return False
                self._terminate(worker, grace_s)
                self._wake()
                return True
            self._queue.remove(queued)
        _cancel_queued(queued)
        return True

    def running(self) -> dict[int, int]:
        """Task id → worker pid, for every task handed to a worker and not yet finished."""
        with self._lock:
            return {w.task.payload.task_id: w.pid for w in self._workers if w.task is not None}

    def shutdown(self, *, cancel: bool = False) -> None:
        """Stop the pool; safe to call more than once.

        Args:
            cancel: False waits for queued and running tasks to finish first. True cancels
                queued tasks and stops running ones (SIGTERM, then SIGKILL after a second);
                their futures fail with :class:`TaskCancelledError`.
        """
        dropped: list[_Task] = []
        with self._lock:
            self._closing = True
            thread = self._thread
            if cancel:
                dropped = list(self._queue)
                self._queue.clear()
                for worker in self._workers:
                    if worker.task is not None:
                        self._terminate(worker, _CANCEL_GRACE_S)
            if thread is not None:
                self._wake()
        for task in dropped:
            _cancel_queued(task)
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _start(self) -> None:
        """Start every worker and the dispatcher; called with the lock held."""
        global _atexit_registered
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        try:
            # Each start() only asks the fork server for a fork; the workers build their
            # services side by side while the next one is being forked.
            for _ in range(self.max_workers):
                self._workers.append(self._spawn())
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._thread = threading.Thread(
                target=self._dispatch, name="pipetrail-process-dispatcher", daemon=True
            )
            self._thread.start()
        except BaseException:
            self._thread = None
            self._close_wake()
            for worker in self._workers:
                worker.process.kill()
                worker.process.join()
                worker.conn.close()
            self._workers.clear()
            raise
        _live.add(self)
        if not _atexit_registered:
            # Registered after multiprocessing's own exit handler, so it runs first.
            atexit.register(_shutdown_live)
            _atexit_registered = True

    def _spawn(self) -> _Worker:
        context = multiprocessing.get_context("forkserver")
        ours, theirs = context.Pipe(duplex=True)
        self._spawned += 1
        process = context.Process(
            target=_serve,
            args=(theirs, self._factory, os.getpid()),
            name=f"pipetrail-worker-{self._spawned}",
        )
        try:
            with main_not_reimported():
                process.start()
        finally:
            theirs.close()  # the worker has its own copy; ours must go so its death reads as EOF
        return _Worker(process, ours)

    def _wake(self) -> None:
        """Wake the dispatcher; called with the lock held."""
        if self._wake_pending or self._wake_w < 0:
            return
        self._wake_pending = True
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    def _dispatch(self) -> None:
        try:
            self._serve_tasks()
        except BaseException as exc:  # a bug here must not leave futures hanging forever
            with self._lock:
                self._broken = (
                    f"the process executor stopped after an internal error: "
                    f"{type(exc).__name__}: {exc}"
                )
                lost = list(self._queue) + [w.task for w in self._workers if w.task is not None]
                self._queue.clear()
                for worker in self._workers:
                    worker.task = None
            for task in lost:
                if not task.future.done():
                    task.future.set_exception(PipetrailError(self._broken))
        finally:
            self._stop_workers()
            with self._lock:
                self._close_wake()
                _live.discard(self)

    def _close_wake(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _serve_tasks(self) -> None:
        while True:
            with self._lock:
                sends = self._assign()
                if self._closing and not self._queue and not any(w.task for w in self._workers):
                    return
                workers = list(self._workers)
                timeout = self._next_deadline()
            for worker, task in sends:
                try:
                    worker.conn.send_bytes(task.data)
                except OSError:  # died while idle: its sentinel tells the rest
                    with self._lock:
                        if worker.task is task and not worker.cancelling:
                            worker.task = None
                            worker.eof = True
                            self._queue.appendleft(task)
            waitables: list[Connection | int] = [self._wake_r]
            waitables += [w.conn for w in workers if not w.eof]
            waitables += [w.sentinel for w in workers]
            ready: set[object] = set(wait(waitables, timeout))
            replies: list[tuple[_Worker, TaskOutcome | Exception | None]] = []
            for worker in workers:
                if worker.conn in ready:
                    try:
                        data = worker.conn.recv_bytes()
                    except (EOFError, OSError):
                        replies.append((worker, None))
                    else:
                        replies.append((worker, _decode(data, worker.pid)))
            with self._lock:
                results = self._collect(ready, workers, replies)
            for future, value in results:
                if isinstance(value, BaseException):
                    future.set_exception(value)
                else:
                    future.set_result(value)

    def _assign(self) -> list[tuple[_Worker, _Task]]:
        """Pair queued tasks with idle workers (FIFO); called with the lock held."""
        sends: list[tuple[_Worker, _Task]] = []
        idle = [w for w in self._workers if w.idle]
        while self._queue and (idle or len(self._workers) < self.max_workers):
            if idle:
                worker = idle.pop(0)
            else:
                worker = self._spawn()
                self._workers.append(worker)
            task = self._queue.popleft()
            if not task.started:
                if not task.future.set_running_or_notify_cancel():
                    idle.insert(0, worker)
                    continue  # cancelled by its caller while queued
                task.started = True
            worker.task = task
            sends.append((worker, task))
        return sends

    def _next_deadline(self) -> float | None:
        deadlines = [w.kill_at for w in self._workers if w.kill_at is not None]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _collect(
        self,
        ready: set[object],
        workers: list[_Worker],
        replies: list[tuple[_Worker, TaskOutcome | Exception | None]],
    ) -> list[tuple[Future[TaskOutcome], TaskOutcome | BaseException]]:
        """Apply what the wait returned; called with the lock held. Returns futures to settle."""
        results: list[tuple[Future[TaskOutcome], TaskOutcome | BaseException]] = []
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 4096):
                    pass
            self._wake_pending = False
        now = time.monotonic()
        for worker in self._workers:
            if worker.kill_at is not None and now >= worker.kill_at:
                worker.send_signal(signal.SIGKILL)
                worker.killed = True
                worker.kill_at = None
        for worker, value in replies:
            if value is None:
                worker.eof = True  # dying; the sentinel follows
            elif worker.task is not None and not worker.cancelling:
                results.append((worker.task.future, value))
                worker.task = None
                worker.served += 1
        for worker in workers:
            if worker.sentinel in ready:
                results.extend(self._bury(worker))
        return results

    def _bury(
        self, worker: _Worker
    ) -> list[tuple[Future[TaskOutcome], TaskOutcome | BaseException]]:
        """Forget a dead worker, fail its task, start its replacement; lock held."""
        worker.process.join()
        code = worker.process.exitcode
        self._workers.remove(worker)
        results: list[tuple[Future[TaskOutcome], TaskOutcome | BaseException]] = []
        task = worker.task
        if task is not None and not worker.cancelling and not worker.eof and worker.conn.poll(0):
            # It finished, replied, then died: the reply wins.
            with contextlib.suppress(EOFError, OSError):
                results.append((task.future, _decode(worker.conn.recv_bytes(), worker.pid)))
                task = None
                worker.served += 1
        if task is not None:
            results.append((task.future, _ending(worker, task, code)))
        worker.conn.close()
        worker.process.close()
        # A worker that died before its first task is replaced only when a task needs one
        # (in _assign), so a pool that cannot start does not respawn in a loop.
        if not self._closing and (worker.served or task is not None):
            self._workers.append(self._spawn())
        return results

    def _terminate(self, worker: _Worker, grace_s: float) -> None:
        """SIGTERM the worker now, SIGKILL it after ``grace_s``; called with the lock held."""
        deadline = time.monotonic() + max(0.0, grace_s)
        if not worker.cancelling:
            worker.cancelling = True
            worker.send_signal(signal.SIGTERM)
        elif worker.killed:
            return
        worker.kill_at = deadline if worker.kill_at is None else min(worker.kill_at, deadline)

    def _stop_workers(self) -> None:
        """Ask every worker to exit, wait a little, kill the rest (dispatcher thread)."""
        with self._lock:
            workers = list(self._workers)
            self._workers.clear()
        for worker in workers:
            with contextlib.suppress(OSError):
                worker.conn.send_bytes(_STOP)
        deadline = time.monotonic() + _STOP_GRACE_S
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
        for worker in workers:
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
            worker.process.close()


_main_lock = threading.Lock()
_main_hidden = 0


@contextlib.contextmanager
def main_not_reimported() -> Iterator[None]:
    """Start processes without re-running the user's script in them.

    multiprocessing makes each new process import the parent's ``__main__`` file first, so a
    script that calls ``pt.run`` at its top level, with no ``if __name__ == "__main__":`` guard,
    would start a run inside every worker (and fail in its "bootstrapping phase"). Workers need
    nothing from ``__main__``: they import the pipeline's file themselves, where a top-level
    ``pt.run`` stops the import (runtime.loader). A ``__main__`` whose spec is named
    ``__main__`` is one multiprocessing leaves alone, so it gets that spec while processes start
    (counted, as executors may start processes from several threads at once).
    """
    global _main_hidden
    main = sys.modules.get("__main__")
    with _main_lock:
        if main is None or (_main_hidden == 0 and getattr(main, "__spec__", None) is not None):
            main = None  # run with -m (or embedded): imported by name, which is guarded
        else:
            if _main_hidden == 0:
                main.__spec__ = importlib.machinery.ModuleSpec("__main__", None)
            _main_hidden += 1
    try:
        yield
    finally:
        if main is not None:
            with _main_lock:
                _main_hidden -= 1
                if _main_hidden == 0:
                    main.__spec__ = None


def _cancel_queued(task: _Task) -> None:
    # A task put back in the queue after its worker vanished is already marked running.
    if not task.future.cancel():
        task.future.set_exception(
            TaskCancelledError(
                f"step {task.payload.step!r} (task {task.payload.task_id}) was cancelled "
                "before it started",
                step=task.payload.step,
            )
        )


def _decode(data: bytes, pid: int) -> TaskOutcome | Exception:
    """A worker's reply: the outcome, or the exception it reported, rebuilt where possible."""
    try:
        reply = pickle.loads(data)
    except Exception as exc:
        return PipetrailError(
            f"the reply of worker process {pid} cannot be read: {type(exc).__name__}: {exc}"
        )
    if isinstance(reply, TaskOutcome):
        return reply
    if not isinstance(reply, _Raised):
        return PipetrailError(f"worker process {pid} sent {type(reply).__name__!r}, not a reply")
    error = revive_error(reply.pickled, reply.type_name, reply.message)
    error.add_note(f"raised in worker process {pid}:\n{reply.traceback.rstrip()}")
    return error


def revive_error(pickled: bytes | None, type_name: str, message: str) -> Exception:
    """An exception sent from another process: itself when it unpickles here, else its text."""
    if pickled is not None:
        with contextlib.suppress(Exception):
            loaded = pickle.loads(pickled)
            # SystemExit and friends must not escape the caller's ``except Exception``.
            if isinstance(loaded, Exception):
                return loaded
    return PipetrailError(f"{type_name}: {message}")


def _ending(worker: _Worker, task: _Task, code: int | None) -> BaseException:
    """The exception a task's future fails with when its worker is gone."""
    step, task_id, pid = task.payload.step, task.payload.task_id, worker.pid
    how = _describe_exit(code)
    if worker.cancelling:
        return TaskCancelledError(
            f"step {step!r} (task {task_id}) was cancelled: worker process {pid} {how}",
            pid=pid,
            step=step,
        )
    hint = ""
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            hint = _HINTS.get(signal.Signals(-code), "")
    elif code is not None:
        hint = "; something in the step called os._exit() or the interpreter aborted"
    return WorkerLostError(
        f"worker process {pid} {how} while running step {step!r} (task {task_id}){hint}",
        pid=pid,
        exitcode=code,
        step=step,
    )


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "vanished"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"died with signal {-code} ({name})"
    return f"exited with code {code}"
