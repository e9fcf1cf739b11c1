"""Lost runners: a run whose runner stopped beating is failed with the reason, so it can be retried."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import psutil

from pipetrail.storage.metadata.base import MetadataStore

__all__ = ["STALE_AFTER_SECONDS", "reap_lost_runs"]

#: A run whose heartbeat is older than this is lost (the runner beats every 5 s).
STALE_AFTER_SECONDS = 20.0
#: On the runner's own host, a dead process that missed a beat is enough.
MISSED_BEAT_SECONDS = 7.0


def reap_lost_runs(
    store: MetadataStore, *, stale_after_s: float = STALE_AFTER_SECONDS
) -> list[int]:
    """Fail every unfinished run whose runner is gone; returns their ids.

    A runner is gone when its heartbeat is older than ``stale_after_s``, or sooner when it ran
    on this host, its process no longer exists, and it has missed a heartbeat (the last check
    keeps two containers that share a host name from judging each other by process ids).
    """
    host = socket.gethostname()
    now = datetime.now(UTC)
    stale_before = now - timedelta(seconds=stale_after_s)
    lost = []
    for run in store.unfinished_runs():
        beat = run.heartbeat_at or run.created_at
        dead_here = bool(
            run.runner_host == host
            and run.runner_pid
            and beat < now - timedelta(seconds=MISSED_BEAT_SECONDS)
            and not _alive(run.runner_pid)
        )
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
    return lost


def _alive(pid: int) -> bool:
    try:
        process = psutil.Process(pid)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return bool(process.status() != psutil.STATUS_ZOMBIE)
