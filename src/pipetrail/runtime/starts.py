"""Marking a task ``running`` only once it has run long enough for anyone to look.

A step run in the runner's own process (the inline executor) need not commit ``running`` before
its code starts: the engine acts on a task's end, not on its start, and the task's end is
committed with the whole route it took (``initial → queued → running → completed``, each at its
real time) in one transaction. A fast step thus costs one write instead of three. A step still
running after ``delay_s`` is marked ``running`` by one background thread per process, so the
dashboard, ``runs show`` and the reaper see it as they would any other.

If the process dies before that, the task is left ``initial``; the run is then reaped as lost
like any run whose runner died, and the task ends ``failed`` with that reason.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from pipetrail.core.status import TaskStatus
from pipetrail.storage.metadata.base import MetadataStore

__all__ = ["StartMarker"]

_log = logging.getLogger(__name__)

#: Seconds a deferred task runs before it is marked running in the store.
DEFAULT_DELAY_S = 0.2
#: Seconds the marker's thread waits with nothing to mark before it ends (the next start
#: makes another): a workspace closed and forgotten leaves no thread behind for long.
IDLE_S = 5.0


@dataclass(frozen=True)
class _Start:
    task_id: int
    started_at: datetime
    host: str
    pid: int
    worker: str | None


class StartMarker:
    """Writes ``running`` for the tasks of one store that are still running after ``delay_s``.

    ``begin`` when a task starts, ``settle`` when it ends: ``settle`` says whether ``running``
    was written (waiting for a write in flight), so the end can be recorded from the right
    status.
    """

    def __init__(self, store: MetadataStore, delay_s: float = DEFAULT_DELAY_S) -> None:
        self._store = store
        self._delay_s = delay_s
        self._lock = threading.Condition()
        self._due: list[tuple[float, int]] = []
        self._pending: dict[int, _Start] = {}
        self._writing: set[int] = set()
        self._written: set[int] = set()
        self._thread: threading.Thread | None = None

    def begin(
        self, task_id: int, started_at: datetime, host: str, pid: int, worker: str | None
    ) -> None:
        with self._lock:
            self._pending[task_id] = _Start(task_id, started_at, host, pid, worker)
            idle = not self._due
            # Every delay is the same, so a new start is never due before those queued: the
            # thread needs waking only when it waits for the first.
            heapq.heappush(self._due, (time.monotonic() + self._delay_s, task_id))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="pipetrail-start-marker", daemon=True
                )
                self._thread.start()
            elif idle:
                self._lock.notify()

    def settle(self, task_id: int) -> bool:
        """Forget ``task_id``; whether ``running`` was committed for it."""
        with self._lock:
            while task_id in self._writing:
                self._lock.wait()
            self._pending.pop(task_id, None)
            if task_id in self._written:
                self._written.discard(task_id)
                return True
            return False

    def _serve(self) -> None:
        while True:
            with self._lock:
                while True:
                    while self._due and self._due[0][1] not in self._pending:
                        heapq.heappop(self._due)
                    if not self._due:
                        if not self._lock.wait(IDLE_S) and not self._due:
                            self._thread = None
                            return
                        continue
                    wait = self._due[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._lock.wait(wait)
                _, task_id = heapq.heappop(self._due)
                start = self._pending.pop(task_id)
                self._writing.add(task_id)
            written = False
            try:
                written = self._store.set_task_status(
                    start.task_id,
                    TaskStatus.RUNNING,
                    host=start.host,
                    pid=start.pid,
                    worker=start.worker,
                    at=start.started_at,
                    if_pending=True,
                )
            except Exception as exc:  # the task's end records its start all the same
                _log.debug("could not mark task %s running: %s", task_id, exc)
            with self._lock:
                self._writing.discard(task_id)
                if written:
                    self._written.add(task_id)
                self._lock.notify_all()
