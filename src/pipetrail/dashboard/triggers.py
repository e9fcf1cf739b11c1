"""The Triggers pages' models: every trigger at a glance, one trigger's ticks, runs and alerts,
and the upcoming fire times the runs page shows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from pipetrail.core.model import RunRecord
from pipetrail.core.status import RUN_TERMINAL
from pipetrail.errors import UsageError
from pipetrail.scheduling.service import TriggerOverview, TriggerService
from pipetrail.scheduling.triggers import describe

if TYPE_CHECKING:
    from pipetrail.storage.metadata.base import AlertRecord, TickRecord, TriggerRecord

__all__ = [
    "MAX_NAME",
    "TickView",
    "TriggerPage",
    "TriggersPage",
    "UpcomingRow",
    "check_trigger_name",
    "record_href",
    "relative",
    "trigger_href",
    "trigger_page",
    "triggers_page",
    "upcoming_rows",
]

#: Trigger names are at most this long (the REST routes refuse longer ones too).
MAX_NAME = 200
#: Fire times the runs page's Upcoming view lists.
UPCOMING = 20


def check_trigger_name(name: str) -> str:
    """Raises UsageError for a name no trigger can have (empty, too long, a NUL)."""
    if not name or len(name) > MAX_NAME or "\x00" in name:
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise UsageError(
            f"trigger name {shown!r} is not a trigger name; names have 1 to {MAX_NAME} "
            "characters and no NUL"
        )
    return name


def trigger_href(name: str) -> str:
    """The trigger's page (its name quoted whole: slashes and all)."""
    return f"/triggers/{quote(name, safe='')}"


def record_href(record: RunRecord) -> str:
    """The page of a run given its record."""
    return f"/pipelines/{quote(record.pipeline, safe='')}/runs/{record.id}"


def relative(moment: datetime | None, now: datetime | None = None) -> str:
    """``in 5 min``, ``in 1 h 15 min``, ``in 20 h``, ``3 d ago``, ``now``; empty when unknown."""
    if moment is None:
        return ""
    now = now or datetime.now(UTC)
    seconds = (moment - now).total_seconds()
    size = abs(seconds)
    if size < 45:
        return "now"
    minutes = round(size / 60)
    if minutes < 60:
        text = f"{minutes} min"
    elif minutes < 600:
        hours, rest = divmod(minutes, 60)
        text = f"{hours} h {rest:02d} min" if rest else f"{hours} h"
    elif size < 86400 * 2:
        text = f"{round(size / 3600)} h"
    else:
        text = f"{round(size / 86400)} d"
    return f"in {text}" if seconds > 0 else f"{text} ago"


@dataclass(frozen=True)
class TriggersPage:
    """``/triggers``: each trigger's overview, and whether a scheduler would fire them."""

    triggers: list[TriggerOverview]
    scheduler_running: bool

    @property
    def paused(self) -> int:
        return sum(1 for t in self.triggers if t.record.paused)


def triggers_page(service: TriggerService) -> TriggersPage:
    """Every trigger, by name, with its schedule in words, next and last run and SLA misses."""
    overviews = [service.overview(r) for r in service.all()]
    overviews.sort(key=lambda o: o.record.name)
    return TriggersPage(overviews, service.scheduler_running())


@dataclass(frozen=True)
class TickView:
    """A tick the scheduler claimed, and what came of it in words."""

    tick: TickRecord
    run: RunRecord | None
    #: ``run``, ``skipped`` or ``open`` (claimed, its run not recorded yet).
    outcome: str
    detail: str


def _tick_view(tick: TickRecord, runs: dict[int, RunRecord]) -> TickView:
    if tick.run_id is not None:
        run = runs.get(tick.run_id)
        return TickView(tick, run, "run", tick.note or "")
    if tick.skip_reason is not None:
        return TickView(tick, None, "skipped", tick.skip_reason)
    if tick.launches:
        text = f"launched {tick.launches} time{'s' if tick.launches != 1 else ''}"
        if tick.launcher_host:
            text += f" on {tick.launcher_host}"
        if tick.launcher_pid:
            text += f" (pid {tick.launcher_pid})"
        return TickView(tick, None, "open", text + "; its run is not recorded yet")
    return TickView(tick, None, "open", tick.note or "waiting for a scheduler to start it")


@dataclass(frozen=True)
class TriggerPage:
    """``/triggers/{name}``: the trigger, its recent ticks and runs, alerts and next fires."""

    overview: TriggerOverview
    ticks: list[TickView]
    runs: list[RunRecord]
    alerts: list[AlertRecord]
    upcoming: list[datetime]
    scheduler_running: bool

    @property
    def record(self) -> TriggerRecord:
        return self.overview.record

    @property
    def live(self) -> bool:
        """Whether a run in view is still going (the page refreshes until it ends)."""
        return any(r.status not in RUN_TERMINAL for r in self.runs)


def trigger_page(service: TriggerService, name: str) -> TriggerPage:
    """One trigger in detail.

    Raises:
        NotFoundError: no trigger of that name.
        UsageError: a name no trigger can have.
    """
    record = service.get(check_trigger_name(name))
    overview = service.overview(record, detail=True)
    runs = sorted(overview.runs.values(), key=lambda r: r.id, reverse=True)
    return TriggerPage(
        overview=overview,
        ticks=[_tick_view(t, overview.runs) for t in overview.ticks],
        runs=runs[:20],
        alerts=overview.alerts,
        upcoming=overview.upcoming,
        scheduler_running=service.scheduler_running(),
    )


@dataclass(frozen=True)
class UpcomingRow:
    """A fire time on the runs page's Upcoming view."""

    trigger: TriggerRecord
    at: datetime
    schedule: str


def upcoming_rows(service: TriggerService, limit: int = UPCOMING) -> list[UpcomingRow]:
    """The next ``limit`` fire times across the active clock triggers, soonest first."""
    return [
        UpcomingRow(u.trigger, u.at, describe(u.trigger.definition))
        for u in service.upcoming(limit)
    ]
