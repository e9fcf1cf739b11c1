"""Lost runners: a run whose runner stopped beating is failed with the reason, so it can be retried."""

from __future__ import annotations

import contextlib
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

from pipetrail.core.model import RunRecord
from pipetrail.runtime.spool import salvage
from pipetrail.storage.metadata.base import MetadataStore

__all__ = ["REAP_SECONDS", "STALE_AFTER_SECONDS", "LostRunReaper", "reap_lost_runs"]

#: A run whose heartbeat is older than this is lost (the runner beats every 5 s).
STALE_AFTER_SECONDS = 20.0
#: On the runner's own host, a dead process that missed a beat is enough.
MISSED_BEAT_SECONDS = 7.0
#: How often a long-running process (the server, the scheduler) looks for lost runs.
REAP_SECONDS = 5.0


def reap_lost_runs(
    store: MetadataStore,
    spool_root: Path | None = None,
    *,
    stale_after_s: float = STALE_AFTER_SECONDS,
) -> list[int]:
    """Fail every unfinished run whose runner is gone; returns their ids.

    On the runner's own host the process decides: a runner whose process is gone (and has missed
    a heartbeat) is lost at once; one whose process is alive is not lost, however long it has
    been silent (stopped with SIGSTOP, a laptop lid, a paused VM), since it may go on. A runner
    on another host is lost when its heartbeat is older than ``stale_after_s``; if it was only
    paused, its lease is gone when it comes back, and it stops without writing (fencing).

    What the lost run's tasks had spooled on this host is drained into the store (``spool_root``).
    """
    host = socket.gethostname()
    now = datetime.now(UTC)
    stale_before = now - timedelta(seconds=stale_after_s)
    lost = []
    for run in store.unfinished_runs():
        beat = run.heartbeat_at or run.created_at
        here = bool(run.runner_host == host and run.runner_pid)
        if here and _runner_alive(run):
            continue
        dead_here = here and beat < now - timedelta(seconds=MISSED_BEAT_SECONDS)
        if beat >= stale_before and not dead_here:
            continue
        since = beat.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        reason = (
            f"runner lost: process {run.runner_pid} on {run.runner_host} is gone"
            if dead_here
            else f"runner lost: no heartbeat from {run.runner_host} since {since}"
        )
        reason += f"; resume with: pipetrail runs retry {run.pathspec}"
        if store.mark_lost(run.id, reason, stale_before=None if dead_here else stale_before):
            lost.append(run.id)
            if spool_root is not None:
                _salvage_tasks(store, spool_root, run)
    return lost


def _salvage_tasks(store: MetadataStore, spool_root: Path, run: RunRecord) -> None:
    """Drain the spools the lost run's tasks left on this host (metrics, output, artifacts)."""
    for task in store.tasks(run.id):
        if task.finished_at is None or task.exception_type == "RunnerLostError":
            # A spool that cannot be read must not keep the run from being reaped.
            with contextlib.suppress(Exception):
                salvage(store, spool_root, run.id, task.id)


def _runner_alive(run: RunRecord) -> bool:
    """Whether the run's runner process still exists here (and is that process, not a new one)."""
    try:
        process = psutil.Process(run.runner_pid or 0)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        # A process id used again by a process started after the run is not its runner.
        return bool(process.create_time() <= run.created_at.timestamp() + 1.0)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


class LostRunReaper:
    """A background thread that reaps lost runs every ``interval_s`` (servers, schedulers).

    Args:
        store: the metadata store to watch.
        spool_root: where this host's task spools are (drained for lost runs).
        interval_s: seconds between looks.
    """

    def __init__(
        self, store: MetadataStore, spool_root: Path | None, *, interval_s: float = REAP_SECONDS
    ) -> None:
        self._store = store
        self._spool_root = spool_root
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="pipetrail-reaper", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._interval + 5.0)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            # The store being away now and then must not end the server's reaping for good.
            with contextlib.suppress(Exception):
                reap_lost_runs(self._store, self._spool_root)
