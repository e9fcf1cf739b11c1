"""Next fire times per trigger kind, and the definitions refused before anything is stored."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from pipetrail.errors import UsageError
from pipetrail.scheduling.triggers import fire_times, next_fire_time, validate
from pipetrail.storage.metadata.base import TriggerDefinition

NOW = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)


def _d(kind: str, **fields: object) -> TriggerDefinition:
    base = TriggerDefinition(name="t", pipeline_file="flow.py", pipeline_name="train", kind=kind)
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


NEXT = [
    # (what, definition, after, expected next fire time)
    ("cron daily in UTC", _d("cron", cron="0 2 * * *"), NOW, "2026-12-08T02:00:00+00:00"),
    (
        "cron in Paris is an hour behind UTC in winter",
        _d("cron", cron="0 2 * * *", timezone="Europe/Paris"),
        NOW,
        "2026-12-08T01:00:00+00:00",
    ),
    (
        "cron in Paris in summer is two hours behind",
        _d("cron", cron="0 2 * * *", timezone="Europe/Paris"),
        _at("2026-07-01T00:00:00+00:00"),
        "2026-07-02T00:00:00+00:00",
    ),
    (
        "cron strictly after a tick",
        _d("cron", cron="*/15 * * * *"),
        _at("2026-12-07T04:15:00+00:00"),
        "2026-12-07T04:30:00+00:00",
    ),
    (
        "interval before its start",
        _d("interval", interval_s=600.0, start_at=NOW),
        NOW - timedelta(hours=1),
        "2026-12-07T04:00:00+00:00",
    ),
    (
        "interval at its start",
        _d("interval", interval_s=600.0, start_at=NOW),
        NOW,
        "2026-12-07T04:10:00+00:00",
    ),
    (
        "interval mid-way",
        _d("interval", interval_s=600.0, start_at=NOW),
        NOW + timedelta(minutes=25),
        "2026-12-07T04:30:00+00:00",
    ),
    (
        "interval past its end",
        _d("interval", interval_s=600.0, start_at=NOW, end_at=NOW + timedelta(minutes=15)),
        NOW + timedelta(minutes=10),
        None,
    ),
    (
        "once before",
        _d("once", once_at=NOW),
        NOW - timedelta(seconds=1),
        "2026-12-07T04:00:00+00:00",
    ),
    ("once after", _d("once", once_at=NOW), NOW, None),
    ("always-on has no clock", _d("always_on"), NOW, None),
    ("api has no clock", _d("api"), NOW, None),
]


@pytest.mark.parametrize(
    ("what", "definition", "after", "expected"), NEXT, ids=[n[0] for n in NEXT]
)
def test_next_fire_time(
    what: str, definition: TriggerDefinition, after: datetime, expected: str | None
) -> None:
    got = next_fire_time(definition, after)
    assert got == (None if expected is None else _at(expected)), what
    assert got is None or got.tzinfo is UTC


def test_fire_times_lists_each_tick_in_the_window() -> None:
    d = _d("interval", interval_s=1.0, start_at=NOW)
    ticks = list(fire_times(d, NOW, NOW + timedelta(seconds=3)))
    assert ticks == [NOW + timedelta(seconds=s) for s in (1, 2, 3)]
    assert len(list(fire_times(d, NOW, NOW + timedelta(days=1), limit=5))) == 5


def test_an_interval_without_a_start_counts_from_now() -> None:
    d = validate(_d("interval", interval_s=60.0), now=NOW)
    assert d.start_at == NOW


def test_an_after_trigger_fires_on_completion_by_default() -> None:
    assert validate(_d("after", after_pipeline="etl"), now=NOW).after_on == "completed"


BAD = [
    ("malformed cron", _d("cron", cron="0 2 * *"), "malformed cron expression '0 2 * *'"),
    ("cron out of range", _d("cron", cron="61 2 * * *"), "'61 2 * * *': minute '61' is not 0-59"),
    ("cron hour", _d("cron", cron="0 25 * * *"), "hour '25' is not 0-23"),
    ("cron month", _d("cron", cron="0 0 * 13 *"), "month '13' is not 1-12"),
    ("six fields", _d("cron", cron="0 0 2 * * *"), "6 fields; expected five fields"),
    (
        "unknown zone",
        _d("cron", cron="0 2 * * *", timezone="Mars/Olympus"),
        "unknown time zone 'Mars/Olympus'",
    ),
    ("zero interval", _d("interval", interval_s=0.0), "must be a positive duration"),
    ("once in the past", _d("once", once_at=NOW - timedelta(minutes=1)), "is in the past"),
    ("naive once", _d("once", once_at=datetime(2027, 1, 1)), "has no time zone"),
    ("after itself", _d("after", after_pipeline="train"), "runs 'train' after itself"),
    ("after on what", _d("after", after_pipeline="etl", after_on="maybe"), "--on 'maybe'"),
    ("unknown kind", _d("hourly"), "unknown trigger kind 'hourly'"),
    (
        "field of another kind",
        _d("cron", cron="0 2 * * *", interval_s=5.0),
        "interval_s does not apply",
    ),
    ("bad catchup", _d("api", catchup="some"), "catchup 'some'"),
    ("bad overlap", _d("api", overlap="queue"), "overlap 'queue'"),
    ("no slots", _d("api", max_concurrent=0), "max_concurrent must be 1 or more, got 0"),
    (
        "end before start",
        _d("interval", interval_s=5.0, start_at=NOW, end_at=NOW - timedelta(seconds=1)),
        "is not after its start",
    ),
]


@pytest.mark.parametrize(("what", "definition", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_definitions_are_refused(
    what: str, definition: TriggerDefinition, message: str
) -> None:
    with pytest.raises(UsageError) as info:
        validate(definition, now=NOW)
    assert message in str(info.value), what
    assert str(info.value).startswith(f"trigger {definition.name!r}: "), what
    assert "\n" not in str(info.value)


def test_a_valid_definition_passes_unchanged() -> None:
    d = _d("cron", cron="0 2 * * 1-5", timezone="America/New_York", catchup="all")
    assert validate(d, now=NOW) == d
    assert dataclasses.replace(d) == d


def test_a_daily_cron_runs_once_on_the_night_the_clocks_go_back() -> None:
    from pipetrail.scheduling.triggers import fire_times

    def ticks(cron: str, zone_name: str, start: datetime, end: datetime) -> list[str]:
        d = TriggerDefinition(
            name="x",
            pipeline_file="/f.py",
            pipeline_name=None,
            kind="cron",
            cron=cron,
            timezone=zone_name,
        )
        return [t.strftime("%m-%d %H:%M") for t in fire_times(d, start, end)]

    night = (datetime(2026, 10, 24, 22, tzinfo=UTC), datetime(2026, 10, 26, 12, tzinfo=UTC))
    # 02:30 Paris happens twice on 25 October (CEST, then CET): one run, the first.
    assert ticks("30 2 * * *", "Europe/Paris", *night) == ["10-25 00:30", "10-26 01:30"]
    # An hourly job runs in both hours: each is a different hour of the day.
    hourly = ticks("30 * * * *", "Europe/Paris", *night)
    assert "10-25 00:30" in hourly and "10-25 01:30" in hourly
    ny = (datetime(2026, 10, 31, 12, tzinfo=UTC), datetime(2026, 11, 2, 12, tzinfo=UTC))
    assert ticks("30 1 * * *", "America/New_York", *ny) == ["11-01 05:30", "11-02 06:30"]


DESCRIBED = [
    (
        "daily",
        _d("cron", cron="0 2 * * *", timezone="Europe/Paris"),
        "every day at 02:00 (Europe/Paris)",
    ),
    ("weekdays", _d("cron", cron="30 6 * * 1-5"), "every weekday at 06:30 (UTC)"),
    ("every 10 minutes", _d("cron", cron="*/10 * * * *"), "every 10 minutes (UTC)"),
    ("other cron", _d("cron", cron="0 0 1,15 * *"), "cron '0 0 1,15 * *' (UTC)"),
    ("interval", _d("interval", interval_s=600.0), "every 10m"),
    ("once", _d("once", once_at=_at("2026-12-24T18:00:00Z")), "once, at 2026-12-24T18:00:00+00:00"),
    ("after", _d("after", after_pipeline="etl", after_on="failed"), "after each failed run of etl"),
    (
        "after any",
        _d("after", after_pipeline="etl", after_on="any"),
        "after each run of etl (completed, failed or cancelled)",
    ),
    ("api", _d("api"), "when called over the API"),
]


@pytest.mark.parametrize(("what", "definition", "words"), DESCRIBED, ids=[d[0] for d in DESCRIBED])
def test_a_schedule_in_words(what: str, definition: TriggerDefinition, words: str) -> None:
    from pipetrail.scheduling.triggers import describe

    assert describe(definition) == words, what
