"""Trigger definitions checked before they are stored, and their next fire times (pure)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from pipetrail.errors import UsageError
from pipetrail.storage.metadata.base import TriggerDefinition

__all__ = [
    "CATCHUP",
    "CLOCK_KINDS",
    "KINDS",
    "OVERLAP",
    "describe",
    "fire_times",
    "next_fire_time",
    "previous_fire_time",
    "validate",
    "zone",
]

#: Every kind of trigger; the ``CLOCK_KINDS`` fire at times the clock decides.
KINDS = ("cron", "interval", "once", "always_on", "after", "api")
CLOCK_KINDS = ("cron", "interval", "once")
CATCHUP = ("latest", "all", "none")
OVERLAP = ("wait", "skip")
AFTER_ON = ("completed", "failed", "any")
#: Schedule fields and the kinds that use them; a field set for another kind is an error.
_FIELDS = {
    "cron": ("cron",),
    "interval_s": ("interval",),
    "start_at": ("interval",),
    "end_at": ("interval",),
    "once_at": ("once",),
    "after_pipeline": ("after",),
    "after_on": ("after",),
}


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``.

    Raises:
        UsageError: naming the zone when it is unknown.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"unknown time zone {name!r}; use an IANA name such as 'UTC' or 'Europe/Paris'"
        ) from None


def _aware(value: datetime | None, what: str) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise UsageError(f"{what} {value.isoformat()!r} has no time zone; add one, e.g. 'Z'")


def validate(definition: TriggerDefinition, *, now: datetime) -> TriggerDefinition:
    """Check a definition before it is stored; returns it ready to store.

    An interval without a start counts from ``now``, so its ticks do not move when the
    scheduler restarts.

    Raises:
        UsageError: one line naming the trigger, the bad value and what is expected.
    """
    if not definition.name.strip():
        raise UsageError("a trigger needs a name, got an empty one")
    try:
        return _checked(definition, now)
    except UsageError as exc:
        raise UsageError(f"trigger {definition.name!r}: {exc}") from None


def _checked(definition: TriggerDefinition, now: datetime) -> TriggerDefinition:
    d = definition
    if d.kind not in KINDS:
        raise UsageError(f"unknown trigger kind {d.kind!r}; expected one of {', '.join(KINDS)}")
    for name, kinds in _FIELDS.items():
        if getattr(d, name) is not None and d.kind not in kinds:
            raise UsageError(f"{name} does not apply to a {d.kind} trigger")
    if d.catchup not in CATCHUP:
        raise UsageError(f"catchup {d.catchup!r} is not one of {', '.join(CATCHUP)}")
    if d.overlap not in OVERLAP:
        raise UsageError(f"overlap {d.overlap!r} is not one of {', '.join(OVERLAP)}")
    if d.max_concurrent is not None and d.max_concurrent < 1:
        raise UsageError(f"max_concurrent must be 1 or more, got {d.max_concurrent}")
    zone(d.timezone)
    for what in ("start_at", "end_at", "once_at"):
        _aware(getattr(d, what), what)
    if d.kind == "cron":
        _check_cron(d.cron)
    elif d.kind == "interval":
        if d.interval_s is None or not math.isfinite(d.interval_s) or d.interval_s <= 0:
            raise UsageError(
                f"the interval must be a positive duration such as '10m', got {d.interval_s!r}"
            )
        if d.start_at is None:
            d = dataclasses.replace(d, start_at=now)
        if d.end_at is not None and d.start_at is not None and d.end_at <= d.start_at:
            raise UsageError(
                f"end {d.end_at.isoformat()!r} is not after its start {d.start_at.isoformat()!r}"
            )
    elif d.kind == "once":
        if d.once_at is None:
            raise UsageError("a once trigger needs its time, e.g. 2026-12-24T18:00Z")
        if d.once_at <= now:
            raise UsageError(
                f"once-at {d.once_at.isoformat()!r} is in the past (now is "
                f"{now.isoformat(timespec='seconds')}); give a future time"
            )
    elif d.kind == "after":
        if not d.after_pipeline:
            raise UsageError("an after trigger needs the upstream pipeline's name")
        if d.after_pipeline == d.pipeline_name:
            raise UsageError(
                f"it runs {d.pipeline_name!r} after itself (after {d.after_pipeline!r}); name "
                "another pipeline to follow"
            )
        if d.after_on is None:
            d = dataclasses.replace(d, after_on="completed")
        elif d.after_on not in AFTER_ON:
            raise UsageError(f"--on {d.after_on!r} is not one of {', '.join(AFTER_ON)}")
    if d.kind in CLOCK_KINDS:
        _check_computable(d, now)
    return d


def _check_computable(d: TriggerDefinition, now: datetime) -> None:
    """Refuse a schedule whose next ticks cannot be computed (a cron that never matches, an
    interval under a microsecond, ticks past the year 9999): stored, it would break every
    listing and the scheduler."""
    try:
        first = next_fire_time(d, now)
        if first is not None:
            next_fire_time(d, first)
    except (OverflowError, ZeroDivisionError, ValueError, KeyError) as exc:
        fix = {
            "cron": "give a cron that matches a real date",
            "interval": "give an interval of at least 1s and a start before the year 9999",
        }.get(d.kind, "give an earlier time")
        raise UsageError(f"the schedule has no computable next ticks ({exc}); {fix}") from None


#: The five cron fields, with the values each takes.
_CRON_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day-of-week", "0-7 or sun-sat"),
)


def _check_cron(expression: str | None) -> None:
    fields = (expression or "").split()
    if len(fields) == 5 and croniter.is_valid(" ".join(fields)):
        return
    wrong = ""
    if len(fields) == 5:
        for i, (what, values) in enumerate(_CRON_FIELDS):
            alone = " ".join(f if j == i else "*" for j, f in enumerate(fields))
            if not croniter.is_valid(alone):
                wrong = f": {what} {fields[i]!r} is not {values}"
                break
    else:
        wrong = f": {len(fields)} field{'' if len(fields) == 1 else 's'}"
    raise UsageError(
        f"malformed cron expression {expression!r}{wrong}; expected five fields "
        "(minute hour day-of-month month day-of-week), e.g. '0 2 * * *'"
    )


def next_fire_time(definition: TriggerDefinition, after: datetime) -> datetime | None:
    """The first tick of a clock trigger strictly after ``after``, in UTC; None when done.

    Triggers that are not driven by the clock (always-on, after, api) have no fire times.
    """
    d = definition
    if d.kind == "cron" and d.cron is not None:
        local = after.astimezone(zone(d.timezone))
        times = croniter(d.cron, local)
        nxt: datetime = times.get_next(datetime)
        if d.cron.split()[1] != "*":
            # A wall-clock time that comes twice when clocks go back runs once (the first
            # time), as cron does: "30 2 * * *" in Paris is one run on the last Sunday of
            # October, not two an hour apart. Jobs of every hour run in both hours.
            while _second_occurrence(nxt):
                nxt = times.get_next(datetime)
        return nxt.astimezone(UTC)
    if d.kind == "interval" and d.interval_s is not None and d.start_at is not None:
        step = timedelta(seconds=d.interval_s)
        if after < d.start_at:
            tick = d.start_at
        else:
            tick = d.start_at + step * ((after - d.start_at) // step + 1)
        return None if d.end_at is not None and tick > d.end_at else tick.astimezone(UTC)
    if d.kind == "once" and d.once_at is not None:
        return d.once_at.astimezone(UTC) if d.once_at > after else None
    return None


def _second_occurrence(local: datetime) -> bool:
    """Whether ``local`` is the repeat of an ambiguous wall time (after the clocks went back)."""
    first = local.replace(tzinfo=None).replace(tzinfo=local.tzinfo, fold=0)
    return first.utcoffset() != local.utcoffset()


def previous_fire_time(definition: TriggerDefinition, at: datetime) -> datetime | None:
    """The last tick of a clock trigger at or before ``at``, in UTC; None when there is none."""
    d = definition
    if d.kind == "cron" and d.cron is not None:
        local = (at + timedelta(microseconds=1)).astimezone(zone(d.timezone))
        prev: datetime = croniter(d.cron, local).get_prev(datetime)
        return prev.astimezone(UTC)
    if d.kind == "interval" and d.interval_s is not None and d.start_at is not None:
        if at < d.start_at:
            return None
        step = timedelta(seconds=d.interval_s)
        tick = d.start_at + step * ((at - d.start_at) // step)
        if d.end_at is not None and tick > d.end_at:
            tick = d.start_at + step * ((d.end_at - d.start_at) // step)
        return tick.astimezone(UTC)
    if d.kind == "once" and d.once_at is not None:
        return d.once_at.astimezone(UTC) if d.once_at <= at else None
    return None


def fire_times(
    definition: TriggerDefinition, after: datetime, until: datetime, *, limit: int | None = None
) -> Iterator[datetime]:
    """Ticks in ``(after, until]``, oldest first, at most ``limit`` of them."""
    count = 0
    tick = next_fire_time(definition, after)
    while tick is not None and tick <= until and (limit is None or count < limit):
        yield tick
        count += 1
        tick = next_fire_time(definition, tick)


_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


def describe(definition: TriggerDefinition) -> str:
    """The trigger's schedule in words: ``every day at 02:00 (Europe/Paris)``, ``every 10m``."""
    d = definition
    zone_text = f" ({d.timezone})"
    if d.kind == "cron" and d.cron:
        return _describe_cron(d.cron) + zone_text
    if d.kind == "interval" and d.interval_s is not None:
        from pipetrail.scheduling.spec import _seconds_text

        text = f"every {_seconds_text(d.interval_s)}"
        if d.end_at is not None:
            text += f" until {d.end_at.astimezone(UTC).isoformat(timespec='minutes')}"
        return text
    if d.kind == "once" and d.once_at is not None:
        return f"once, at {d.once_at.astimezone(UTC).isoformat(timespec='seconds')}"
    if d.kind == "always_on":
        return "always on: a new run as soon as the previous one ends"
    if d.kind == "after":
        if d.after_on == "any":
            return f"after each run of {d.after_pipeline} (completed, failed or cancelled)"
        return f"after each {d.after_on or 'completed'} run of {d.after_pipeline}"
    return "when called over the API"


def _describe_cron(expression: str) -> str:
    minute, hour, dom, month, dow = expression.split()
    if minute.isdigit() and hour.isdigit() and month == "*":
        at = f"{int(hour):02d}:{int(minute):02d}"
        if dom == "*" and dow == "*":
            return f"every day at {at}"
        if dom == "*" and dow.isdigit() and int(dow) < 7:
            return f"every {_DAYS[int(dow)]} at {at}"
        if dom == "*" and dow == "1-5":
            return f"every weekday at {at}"
        if dom.isdigit() and dow == "*":
            return f"on day {int(dom)} of every month at {at}"
    if minute.isdigit() and (hour, dom, month, dow) == ("*", "*", "*", "*"):
        return f"every hour at minute {int(minute)}"
    if minute.startswith("*/") and (hour, dom, month, dow) == ("*", "*", "*", "*"):
        return f"every {minute[2:]} minutes"
    if expression == "* * * * *":
        return "every minute"
    return f"cron {expression!r}"
