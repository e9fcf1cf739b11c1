"""The process executor: a pool of warm worker processes that run tasks by artifact hash."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

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

_services: TaskServices | None = None


def _init_worker(factory: Callable[[], TaskServices]) -> None:
    global _services
    # Ctrl-C reaches the whole process group; the runner decides what a cancel means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _services = factory()


def _run(payload: TaskPayload) -> TaskOutcome:
    if _services is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("worker started without its services")
    if payload.pipeline_file is None:
        raise RuntimeError(f"pipeline {payload.pipeline!r} has no file for workers to load")
    pipeline = load_pipeline_file(Path(payload.pipeline_file), payload.pipeline)
    return execute_task(payload, _services, pipeline)


class ProcessExecutor:
    """Runs tasks in ``max_workers`` long-lived processes (started by a fork server).

    Args:
        factory: builds the worker's stores; must be picklable (a module-level function or
            a functools.partial of one).
        max_workers: processes in the pool; the CPU count by default.
    """

    name = "process"

    def __init__(self, factory: Callable[[], TaskServices], max_workers: int | None = None) -> None:
        self.max_workers = max_workers or os.cpu_count() or 2
        self._factory = factory
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        return ProcessPoolExecutor(
            max_workers=self.max_workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(self._factory,),
        )

    def submit(self, payload: TaskPayload) -> Future[TaskOutcome]:
        payload = _with_fd_capture(payload)
        try:
            return self._pool.submit(_run, payload)
        except BrokenProcessPool:
            # A worker died (killed, out of memory); start a fresh pool for what comes next.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            return self._pool.submit(_run, payload)

    def shutdown(self, *, cancel: bool = False) -> None:
        if cancel:
            for process in list(getattr(self._pool, "_processes", {}).values()):
                if process.is_alive():
                    process.terminate()
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)


def _with_fd_capture(payload: TaskPayload) -> TaskPayload:
    from dataclasses import replace

    return replace(payload, capture_fds=True)
