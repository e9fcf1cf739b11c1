"""Starting a tick's run in a process of its own, so neither a crash of the run nor of the
scheduler takes the other with it."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import psutil

__all__ = ["LaunchOrder", "Launcher", "SubprocessLauncher"]


@dataclass(frozen=True)
class LaunchOrder:
    """Run the tick of ``trigger`` at ``scheduled_at`` (caused by ``upstream_run_id``)."""

    trigger: str
    scheduled_at: datetime
    upstream_run_id: int | None = None


class Launcher(Protocol):
    """Starts tick runs; tells whether a launcher process it or another started is alive."""

    def launch(self, order: LaunchOrder) -> int: ...
    def alive(self, pid: int) -> bool: ...
    def reap(self) -> None: ...


class SubprocessLauncher:
    """Each run in a new session (a scheduler stopped or killed leaves its runs running).

    Args:
        command: the argv prefix of the ``pipetrail`` command (``[python, -m, pipetrail.cli]``).
        log_dir: where each launch's own output goes (the run's steps are recorded in the store).
        env: the environment of the runs (the scheduler's settings, so they use its stores).
        cwd: their working directory.
    """

    def __init__(
        self,
        command: Sequence[str],
        log_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.command = list(command)
        self.log_dir = log_dir
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._children: set[int] = set()

    def launch(self, order: LaunchOrder) -> int:
        argv = [*self.command, "scheduler", "fire", order.trigger, "--at"]
        argv.append(order.scheduled_at.isoformat())
        if order.upstream_run_id is not None:
            argv += ["--upstream", str(order.upstream_run_id)]
        if self.cwd is not None:
            argv += ["--cwd", str(self.cwd)]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stamp = order.scheduled_at.strftime("%Y%m%dT%H%M%S.%f")
        log = self.log_dir / f"{_safe(order.trigger)}-{stamp}.log"
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            # posix_spawn, not Popen: a run outlives the scheduler by design, and no Popen
            # object is left to complain about a child it never waited for.
            pid = os.posix_spawn(
                argv[0],
                argv,
                self.env if self.env is not None else dict(os.environ),
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, out, 1),
                    (os.POSIX_SPAWN_DUP2, out, 2),
                ],
                setsid=True,
            )
        finally:
            os.close(out)
        self._children.add(pid)
        return pid

    def alive(self, pid: int) -> bool:
        if pid in self._children:
            self.reap()
            return pid in self._children
        try:
            return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False

    def reap(self) -> None:
        """Collect the exit status of finished children (no zombies)."""
        for pid in list(self._children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self._children.discard(pid)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80] or "trigger"
