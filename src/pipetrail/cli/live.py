"""The live display of ``pipetrail run``: each step's status and duration while the run goes."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pipetrail.cli.render import STATUS_STYLES, format_duration
from pipetrail.core.model import PipelineSpec, RunRecord
from pipetrail.core.status import TASK_TERMINAL, TaskStatus

__all__ = ["LiveRunDisplay"]


@dataclass
class _Row:
    status: TaskStatus = TaskStatus.INITIAL
    attempt: int = 0
    start: float | None = None
    end: float | None = None
    recorded: float | None = None

    def duration(self, now: float) -> float | None:
        if self.recorded is not None:
            # The time the task itself took, as recorded, not the time the runner waited.
            return self.recorded
        if self.start is None:
            return None
        return (self.end if self.end is not None else now) - self.start


class LiveRunDisplay:
    """A RunObserver that redraws a table of steps a few times a second on a terminal.

    Off a terminal (CI logs, pipes) nothing is redrawn: it prints one line per task as it ends
    (status, duration, attempt) and, when the run ends, how many steps ended in each status.
    """

    def __init__(self, console: Console) -> None:
        self._console = console
        self._lock = threading.Lock()
        self._steps: dict[str, _Row] = {}
        self._title = ""
        self._live: Live | None = None

    def run_waiting(self, run: RunRecord, limit: int) -> None:
        self._console.print(
            f"{run.pathspec} waits: pipeline {run.pipeline!r} allows {limit} run(s) at once"
        )

    def run_started(self, run: RunRecord, spec: PipelineSpec) -> None:
        with self._lock:
            self._title = f"{run.pathspec}"
            self._steps = {s.name: _Row() for s in spec.steps}
        # Not a terminal (CI, a pipe): no redraws, a line per task as it ends instead.
        if not self._console.is_terminal:
            self._print(f"{run.pathspec} started: {len(spec.steps)} step(s)")
        else:
            self._live = Live(
                get_renderable=self._render,
                console=self._console,
                refresh_per_second=8,
                # Output of inline steps is printed above the table instead of through it.
                redirect_stdout=True,
                redirect_stderr=True,
                transient=False,
            )
            self._live.start()

    def task_changed(
        self, step: str, attempt: int, status: TaskStatus, duration_s: float | None = None
    ) -> None:
        with self._lock:
            row = self._steps.setdefault(step, _Row())
            row.status, row.attempt = status, attempt
            now = time.monotonic()
            if status is TaskStatus.RUNNING:
                row.start, row.end, row.recorded = now, None, None
            if status in TASK_TERMINAL:
                row.end, row.recorded = now, duration_s
            line = None
            if status in TASK_TERMINAL and not self._console.is_terminal:
                took_s = row.duration(now)
                took = (
                    f" in {format_duration(took_s)} (attempt {attempt})"
                    if took_s is not None
                    else " (not run)"
                )
                line = f"{self._title} {step}: {status.value}{took}"
        if line is not None:
            self._print(line)

    def run_finished(self, run: RunRecord) -> None:
        if not self._console.is_terminal:
            with self._lock:
                counts = Counter(row.status.value for row in self._steps.values())
            ended = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
            self._print(f"{run.pathspec} {run.status.value}: steps {ended or 'none'}")
        self.stop()

    def _print(self, line: str) -> None:
        self._console.print(line, markup=False, highlight=False, soft_wrap=True)

    def stop(self) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None

    def _render(self) -> Table:
        table = Table(title=self._title, title_justify="left", box=None, header_style="bold")
        table.add_column("STEP")
        table.add_column("STATUS")
        table.add_column("ATTEMPT", justify="right")
        table.add_column("DURATION", justify="right")
        now = time.monotonic()
        with self._lock:
            for name, row in self._steps.items():
                table.add_row(
                    name,
                    Text(row.status.value, style=STATUS_STYLES.get(row.status.value, "")),
                    str(row.attempt),
                    format_duration(row.duration(now)),
                )
        return table
