"""The run page's Gantt chart: a row per task, a bar per attempt, in percent of the run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from pipetrail.client import Run
from pipetrail.core.status import TaskStatus
from pipetrail.dashboard.formatting import format_duration, format_offset

if TYPE_CHECKING:
    from pipetrail.dashboard.detail import AttemptView, StepView

__all__ = ["Bar", "TimelineRow", "timeline_rows"]


@dataclass(frozen=True)
class Bar:
    """One attempt: where it starts and how long it lasts, in percent of the run's span."""

    left: float
    width: float
    status: str
    title: str
    attempt: int


@dataclass(frozen=True)
class TimelineRow:
    """One task: its bars, or a note saying why it has none (reused, skipped)."""

    step: str
    label: str
    status: str
    bars: list[Bar]
    note: str


def timeline_rows(
    run: Run, steps: list[StepView], now: datetime
) -> tuple[list[TimelineRow], list[tuple[float, str]]]:
    """Gantt rows (one per task, a bar per attempt) in percent of the run's span."""
    starts = [a.record.started_at for s in steps for a in s.attempts if a.record.started_at]
    begin = run.started_at or (min(starts) if starts else None)
    if begin is None:
        return [], []
    end = run.finished_at or now
    ends = [a.record.finished_at for s in steps for a in s.attempts if a.record.finished_at]
    end = max([end, *ends])
    span = max((end - begin).total_seconds(), 1e-3)
    rows: list[TimelineRow] = []
    for s in steps:
        by_task: dict[int, list[AttemptView]] = {}
        for a in s.attempts:
            by_task.setdefault(a.record.task_index, []).append(a)
        for index in sorted(by_task) or [0]:
            attempts = by_task.get(index, [])
            bars = []
            for a in attempts:
                r = a.record
                if r.started_at is None or r.reused_from_task_id is not None:
                    continue  # never ran here (a retry reused what an earlier run made)
                stop = r.finished_at or (now if r.status is TaskStatus.RUNNING else r.started_at)
                left = max(0.0, (r.started_at - begin).total_seconds() / span * 100)
                width = max(0.4, (stop - r.started_at).total_seconds() / span * 100)
                width = min(width, 100 - left) if left < 100 else 0.4
                title = (
                    f"{s.name} task {index} attempt {r.attempt}: {r.status.value}, "
                    f"{format_duration((stop - r.started_at).total_seconds())}"
                )
                bars.append(Bar(round(left, 3), round(width, 3), r.status.value, title, r.attempt))
            status = attempts[-1].task.status if attempts else TaskStatus.INITIAL.value
            note = ""
            if attempts and not bars:
                last = attempts[-1].record
                note = (
                    "reused from an earlier run"
                    if last.reused_from_task_id is not None
                    else status.replace("_", " ")
                )
            label = s.name if len(by_task) <= 1 else f"{s.name} [{index}]"
            rows.append(TimelineRow(s.name, label, status, bars, note))
    ticks = [(i * 25.0, format_offset(span * i / 4, span)) for i in range(5)]
    return rows, ticks
