"""Managing triggers: what the CLI, REST, the dashboard and Python call (one place for all)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pipetrail.core.model import RunRecord
from pipetrail.errors import UsageError
from pipetrail.scheduling.triggers import (
    CLOCK_KINDS,
    describe,
    fire_times,
    next_fire_time,
    validate,
)
from pipetrail.storage.metadata.base import (
    AlertRecord,
    MetadataStore,
    RunQuery,
    TickRecord,
    TriggerDefinition,
    TriggerRecord,
)

__all__ = [
    "ApplyReport",
    "TriggerOverview",
    "TriggerService",
    "Upcoming",
    "watermark",
]

#: A scheduler heard from within this long counts as running.
SCHEDULER_ALIVE_S = 30.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


def watermark(record: TriggerRecord) -> datetime:
    """Ticks at or before this are not due any more unless claimed: the trigger's fresh start."""
    return record.active_since or record.created_at


@dataclass(frozen=True)
class Upcoming:
    """A trigger's next fire time."""

    trigger: TriggerRecord
    at: datetime


@dataclass(frozen=True)
class TriggerOverview:
    """A trigger with what a person asks of it: when next, how it went, what was sent."""

    record: TriggerRecord
    schedule: str
    next_at: datetime | None
    last_run: RunRecord | None
    sla_missed: int
    ticks: list[TickRecord] = field(default_factory=list)
    runs: dict[int, RunRecord] = field(default_factory=dict)
    alerts: list[AlertRecord] = field(default_factory=list)
    upcoming: list[datetime] = field(default_factory=list)


@dataclass(frozen=True)
class ApplyReport:
    """What ``apply`` did (or would do, with ``dry_run``), trigger names per outcome."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    #: In the store, not in the file: kept, unless ``prune`` deleted them.
    missing: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


class TriggerService:
    """Create, change, inspect and queue triggers in one store.

    Every time the service decides or records (a trigger active from now, a resumed or
    changed schedule starting afresh, a once-at in the past, a backfill window that has
    passed) is its ``clock``'s: give it the scheduler's clock and both agree on "now", whatever
    the wall clock says (tests, simulations).

    Args:
        store: the metadata store.
        clock: the current time (default: the wall clock, in UTC).
    """

    def __init__(self, store: MetadataStore, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.store = store
        self.clock = clock

    # -- definitions -------------------------------------------------------------------------

    def create(self, definition: TriggerDefinition) -> TriggerRecord:
        """Validate and store a new trigger (active).

        Raises:
            UsageError: a bad schedule field, or the name exists.
        """
        at = self.clock()
        return self.store.create_trigger(validate(definition, now=at), at=at)

    def update(self, definition: TriggerDefinition) -> TriggerRecord:
        """Replace the definition of an existing trigger (its pause state stays).

        Raises:
            NotFoundError: no trigger of that name.
            UsageError: a bad schedule field.
        """
        current = self.get(definition.name)
        at = self.clock()
        checked = validate(_keep_start(definition, current.definition), now=at)
        return self.store.update_trigger(checked, at=at)

    def get(self, name: str) -> TriggerRecord:
        """Raises NotFoundError naming the trigger when there is none of that name."""
        return self.store.get_trigger(name)

    def all(self) -> list[TriggerRecord]:
        return self.store.list_triggers()

    def pause(self, name: str) -> TriggerRecord:
        return self.store.set_trigger_paused(name, True, at=self.clock())

    def resume(self, name: str) -> TriggerRecord:
        return self.store.set_trigger_paused(name, False, at=self.clock())

    def delete(self, name: str) -> None:
        self.store.delete_trigger(name)

    def apply(
        self,
        definitions: Sequence[TriggerDefinition],
        *,
        prune: bool = False,
        dry_run: bool = False,
    ) -> ApplyReport:
        """Make the store's triggers match ``definitions`` (triggers as code); idempotent.

        Every definition is validated before anything is written. A trigger in the store that
        is not in ``definitions`` is reported as missing, and deleted with ``prune``.

        Raises:
            UsageError: two definitions share a name, or one is invalid (nothing is written).
        """
        names = [d.name for d in definitions]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UsageError(f"trigger {twice[0]!r} is defined twice; names must be unique")
        existing = {r.name: r for r in self.all()}
        now = self.clock()
        plan: list[tuple[str, TriggerDefinition]] = []
        report = ApplyReport()
        for d in definitions:
            current = existing.get(d.name)
            if current is None:
                plan.append(("create", validate(d, now=now)))
                report.created.append(d.name)
                continue
            checked = validate(_keep_start(d, current.definition), now=now)
            if checked == current.definition:
                report.unchanged.append(d.name)
            else:
                plan.append(("update", checked))
                report.updated.append(d.name)
        report.missing.extend(sorted(set(existing) - set(names)))
        if dry_run:
            return report
        for action, d in plan:
            if action == "create":
                self.store.create_trigger(d, at=now)
            else:
                self.store.update_trigger(d, at=now)
        if prune:
            for name in report.missing:
                self.store.delete_trigger(name)
                report.deleted.append(name)
        return report

    # -- when ----------------------------------------------------------------------------------

    def next_at(self, record: TriggerRecord, now: datetime | None = None) -> datetime | None:
        """When the trigger fires next by the clock (None: paused, done, or not a clock kind)."""
        if record.paused or record.definition.kind not in CLOCK_KINDS:
            return None
        now = now or self.clock()
        last = self.store.last_tick_at(record.id)
        after = max([t for t in (last, watermark(record)) if t is not None])
        nxt = next_fire_time(record.definition, after)
        if nxt is not None and nxt < now:
            return now  # due now: the scheduler fires it on its next pass
        return nxt

    def upcoming(self, limit: int = 20, *, name: str | None = None) -> list[Upcoming]:
        """The next fire times of the active clock triggers (or of ``name``), soonest first."""
        now = self.clock()
        records = [self.get(name)] if name is not None else self.all()
        found: list[Upcoming] = []
        for record in records:
            first = self.next_at(record, now)
            if first is None:
                continue
            found.append(Upcoming(record, first))
            found.extend(
                Upcoming(record, t)
                for t in fire_times(
                    record.definition, first, now + timedelta(days=3660), limit=limit - 1
                )
            )
        found.sort(key=lambda u: (u.at, u.trigger.name))
        return found[:limit]

    # -- how it went ---------------------------------------------------------------------------

    def overview(self, record: TriggerRecord, *, detail: bool = False) -> TriggerOverview:
        """The trigger's schedule in words, next and last run, SLA misses; with ``detail`` also
        its recent ticks with their runs, alerts and upcoming fire times."""
        runs = self.store.list_runs(RunQuery(trigger=record.name, limit=20 if detail else 1))
        missed = self.store.count_runs(RunQuery(trigger=record.name, sla_missed=True, limit=None))
        overview = TriggerOverview(
            record=record,
            schedule=describe(record.definition),
            next_at=self.next_at(record),
            last_run=runs[0] if runs else None,
            sla_missed=missed,
        )
        if not detail:
            return overview
        ticks = self.store.ticks(record.id, limit=50)
        by_id = {r.id: r for r in runs}
        for tick in ticks:
            if tick.run_id is not None and tick.run_id not in by_id:
                by_id[tick.run_id] = self.store.get_run(tick.run_id)
        return dataclasses.replace(
            overview,
            ticks=ticks,
            runs=by_id,
            alerts=self.store.alerts(trigger_name=record.name, limit=50),
            upcoming=[u.at for u in self.upcoming(10, name=record.name)],
        )

    def runs(self, name: str, limit: int = 100) -> list[RunRecord]:
        """The runs the trigger started, newest first."""
        self.get(name)
        return self.store.list_runs(RunQuery(trigger=name, limit=limit))

    def scheduler_running(self) -> bool:
        """Whether a scheduler has been heard from lately (ticks fire only when one runs).

        By the wall clock, not ``clock``: heartbeats are real moments of real processes.
        """
        since = _utcnow() - timedelta(seconds=SCHEDULER_ALIVE_S)
        return bool(self.store.schedulers(alive_since=since))

    # -- queueing ------------------------------------------------------------------------------

    def backfill(
        self, name: str, start: datetime, end: datetime, *, limit: int = 1000
    ) -> list[datetime]:
        """Queue one run per tick of ``name`` in ``[start, end]`` that has none; a running
        scheduler starts them, oldest first. Returns the ticks queued.

        Raises:
            NotFoundError: no such trigger.
            UsageError: not a clock trigger, an empty or reversed window, or more than
                ``limit`` ticks.
        """
        record = self.get(name)
        if record.definition.kind not in CLOCK_KINDS:
            raise UsageError(
                f"trigger {name!r} is {record.definition.kind}: only cron, every and once "
                "triggers have ticks to backfill"
            )
        if end < start:
            raise UsageError(
                f"--end {end.isoformat()} is before --start {start.isoformat()}; swap them"
            )
        if end > self.clock():
            raise UsageError(
                f"--end {end.isoformat()} is in the future; backfill fills ticks that have passed"
            )
        ticks = list(
            fire_times(record.definition, start - timedelta(microseconds=1), end, limit=limit + 1)
        )
        if len(ticks) > limit:
            raise UsageError(
                f"more than {limit} ticks of {name!r} between {start.isoformat()} and "
                f"{end.isoformat()}; narrow the window"
            )
        return [t for t in ticks if self.store.claim_tick(record.id, t, note="backfill")]


def _keep_start(new: TriggerDefinition, old: TriggerDefinition) -> TriggerDefinition:
    """An interval without an explicit start keeps its anchor across updates and applies."""
    if (
        new.kind == "interval"
        and old.kind == "interval"
        and new.start_at is None
        and new.interval_s == old.interval_s
    ):
        return dataclasses.replace(new, start_at=old.start_at)
    return new
