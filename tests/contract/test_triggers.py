"""The metadata store's trigger contract, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipetrail.errors import NotFoundError, UsageError
from pipetrail.storage.metadata.base import TriggerDefinition
from pipetrail.workspace import Workspace

AT = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)


def _definition(name: str = "nightly", **overrides: object) -> TriggerDefinition:
    values: dict[str, object] = {
        "name": name,
        "pipeline_file": "/srv/flows/train.py",
        "pipeline_name": "train",
        "kind": "cron",
        "cron": "0 2 * * *",
        "timezone": "Europe/Paris",
        "params": {"lr": 0.1},
        "variables": {"env": "prod"},
        "tags": ("nightly",),
        "timeout_s": 7200.0,
        "on_timeout": "failed",
        "sla_s": 1800.0,
        "max_concurrent": 1,
        "overlap": "skip",
        "catchup": "all",
    }
    values.update(overrides)
    return TriggerDefinition(**values)  # type: ignore[arg-type]


def test_a_trigger_reads_back_as_it_was_defined(workspace: Workspace) -> None:
    store = workspace.store
    created = store.create_trigger(_definition())
    assert created.definition == _definition() and not created.paused
    assert store.get_trigger("nightly") == created
    interval = _definition("every", kind="interval", cron=None, interval_s=600.0, start_at=AT)
    store.create_trigger(interval)
    assert [t.name for t in store.list_triggers()] == ["every", "nightly"]
    assert store.get_trigger("every").definition.start_at == AT


def test_a_second_trigger_of_the_same_name_is_refused(workspace: Workspace) -> None:
    store = workspace.store
    store.create_trigger(_definition())
    with pytest.raises(UsageError, match="'nightly' exists already"):
        store.create_trigger(_definition(pipeline_file="/other.py"))
    assert store.get_trigger("nightly").definition.pipeline_file == "/srv/flows/train.py"


def test_pause_resume_and_delete(workspace: Workspace) -> None:
    store = workspace.store
    trig = store.create_trigger(_definition())
    assert store.set_trigger_paused("nightly", True).paused
    assert not store.set_trigger_paused("nightly", False).paused
    assert store.claim_tick(trig.id, AT)
    store.delete_trigger("nightly")
    assert store.list_triggers() == []
    for call in (
        lambda: store.get_trigger("nightly"),
        lambda: store.set_trigger_paused("nightly", True),
        lambda: store.delete_trigger("nightly"),
    ):
        with pytest.raises(NotFoundError, match="no trigger named 'nightly'"):
            call()


def test_a_trigger_is_active_from_the_callers_clock(workspace: Workspace) -> None:
    """Created, resumed or rescheduled ``at`` a time: its fresh start is then, not the store's
    now (the scheduler and the service share one clock, whatever the wall clock says)."""
    store = workspace.store
    created = store.create_trigger(_definition(), at=AT)
    assert created.created_at == created.updated_at == created.active_since == AT
    later = AT + timedelta(hours=1)
    store.set_trigger_paused("nightly", True, at=later)
    assert store.get_trigger("nightly").active_since == AT  # pausing is no fresh start
    resumed = store.set_trigger_paused("nightly", False, at=later)
    assert resumed.active_since == resumed.updated_at == later
    same = store.update_trigger(_definition(sla_s=60.0), at=AT + timedelta(hours=2))
    assert same.active_since == later  # not a change of schedule
    moved = store.update_trigger(_definition(cron="0 3 * * *"), at=AT + timedelta(hours=3))
    assert moved.active_since == AT + timedelta(hours=3)
    fresh = store.create_trigger(_definition("now")).active_since
    assert fresh is not None and fresh > AT  # default: the store's now


def test_a_tick_is_claimed_once_and_settled(workspace: Workspace) -> None:
    store = workspace.store
    trig = store.create_trigger(_definition())
    assert store.last_tick_at(trig.id) is None
    assert store.claim_tick(trig.id, AT)
    assert not store.claim_tick(trig.id, AT), "the same tick is never claimed twice"
    later = AT + timedelta(days=1)
    assert store.claim_tick(trig.id, later)
    store.settle_tick(trig.id, AT, skip_reason="overlap: 1 run still running")
    assert store.last_tick_at(trig.id) == later
    ticks = store.ticks(trig.id)
    assert [t.scheduled_at for t in ticks] == [later, AT]
    assert ticks[1].skip_reason == "overlap: 1 run still running" and ticks[1].run_id is None
    assert ticks[0].skip_reason is None and ticks[0].claimed_at.tzinfo is not None
    assert len(store.ticks(trig.id, limit=1)) == 1
