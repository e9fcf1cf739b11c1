"""The live display of ``pipetrail run``: each step's status and duration while the run goes."""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pipetrail.cli.render import STATUS_STYLES, format_duration
from pipetrail.core.model import PipelineSpec, RunRecord
from pipetrail.core.status import TASK_TERMINAL, TaskStatus

__all__ = ["LiveRunDisplay"]


class LiveRunDisplay:
    """A RunObserver that redraws a table of steps a few times a second."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._lock = threading.Lock()
        self._steps: dict[str, dict[str, object]] = {}
        self._title = ""
        self._live: Live | None = None

    def run_started(self, run: RunRecord, spec: PipelineSpec) -> None:
        with self._lock:
            self._title = f"{run.pathspec}"
            self._steps = {
                s.name: {"status": TaskStatus.INITIAL, "attempt": 0, "start": None, "end": None}
                for s in spec.steps
            }
        # Not a terminal (CI, a pipe): no redraws, just the outcome at the end.
        if self._console.is_terminal:
            self._live = Live(
                get_renderable=self._render,
                console=self._console,
                refresh_per_second=8,
                redirect_stdout=False,
                redirect_stderr=False,
                transient=False,
            )
            self._live.start()

    def task_changed(self, step: str, attempt: int, status: TaskStatus) -> None:
        with self._lock:
            row = self._steps.setdefault(step, {"start": None, "end": None})
            row["status"] = status
            row["attempt"] = attempt
            now = time.monotonic()
            if status is TaskStatus.RUNNING and row.get("start") is None:
                row["start"] = now
            if status in TASK_TERMINAL:
                row["end"] = now

    def run_finished(self, run: RunRecord) -> None:
        self.stop()

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
                status = row.get("status", TaskStatus.INITIAL)
                start, end = row.get("start"), row.get("end")
                duration = None
                if isinstance(start, float):
                    duration = (end if isinstance(end, float) else now) - start
                text = status.value if isinstance(status, TaskStatus) else str(status)
                table.add_row(
                    name,
                    Text(text, style=STATUS_STYLES.get(text, "")),
                    str(row.get("attempt", 0)),
                    format_duration(duration),
                )
        return table
