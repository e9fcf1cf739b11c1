"""The scheduling loop over a real store (SQLite and PostgreSQL), with a clock the test moves.

Ticks start real runs: the launcher here starts each in this process through the same
``open_tick`` a ``pipetrail scheduler fire`` process uses, on the inline executor.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipetrail.core.status import RunStatus
from pipetrail.scheduling.launcher import LaunchOrder
from pipetrail.scheduling.scheduler import Scheduler, SchedulerOptions
from pipetrail.scheduling.service import TriggerService
from pipetrail.scheduling.spec import check_pipeline, definition_from
from pipetrail.storage.metadata.base import RunQuery
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter
from tests.scheduling.support import FLOW, T0, Clock, InProcessLauncher


@pytest.fixture
def flow(flow_file: FlowWriter) -> Path:
    return flow_file(FLOW, "flows")


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def launcher(workspace: Workspace) -> InProcessLauncher:
    return InProcessLauncher(workspace)


def _scheduler(workspace: Workspace, launcher: Any, clock: Clock, **options: Any) -> Scheduler:
    return Scheduler(
        workspace.store,
        launcher,
        options=SchedulerOptions(**{"grace_s": 5.0, **options}),
        clock=clock,
    )


def _create(workspace: Workspace, clock: Clock, **fields: Any) -> None:
    service = TriggerService(workspace.store, clock=clock)
    service.create(check_pipeline(definition_from(fields)))


def _runs(workspace: Workspace, trigger: str) -> list[Any]:
    return workspace.store.list_runs(RunQuery(trigger=trigger, limit=None))[::-1]


def _every(flow: Path, name: str = "often", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "pipeline": f"{flow}:work",
        "every": "10s",
        "start": (T0 + timedelta(seconds=10)).isoformat(),  # ticks at 10 s, 20 s, …
        **extra,
    }


def test_each_due_tick_becomes_one_run_with_its_cause(
    workspace: Workspace, flow: Path, clock: Clock, launcher: InProcessLauncher
) -> None:
    _create(workspace, clock, **_every(flow, params={"n": 4}, variables={"env": "prod"}))
    scheduler = _scheduler(workspace, launcher, clock)
    assert scheduler.run_pass().launched == 0  # nothing due at creation
    clock.at = T0 + timedelta(seconds=10, milliseconds=300)
    assert scheduler.run_pass().launched == 1
    assert scheduler.run_pass().launched == 0  # the same tick again: nothing
    clock.at = T0 + timedelta(seconds=20, milliseconds=100)
    scheduler.run_pass()
    runs = _runs(workspace, "often")
    assert [r.cause.scheduled_at for r in runs] == [
        T0 + timedelta(seconds=10),
        T0 + timedelta(seconds=20),
    ]
    first = runs[0]
    assert first.status is RunStatus.COMPLETED and first.trigger == "interval"
    assert first.params["n"] == 4 and first.variables["env"] == "prod"
    assert first.variables["scheduled_at"] == (T0 + timedelta(seconds=10)).isoformat()


def test_two_schedulers_on_one_store_start_each_tick_once(
    workspace: Workspace, flow: Path, clock: Clock, launcher: InProcessLauncher
) -> None:
    _create(workspace, clock, **_every(flow))
    one = _scheduler(workspace, launcher, clock)
    two = _scheduler(workspace, launcher, clock)
    for step in range(1, 6):
        clock.at = T0 + timedelta(seconds=10 * step, milliseconds=1)
        one.run_pass()
        two.run_pass()
    ticks = [r.cause.scheduled_at for r in _runs(workspace, "often")]
    assert ticks == [T0 + timedelta(seconds=10 * s) for s in range(1, 6)]


@pytest.mark.parametrize(
    ("catchup", "started", "skip"),
    [
        ("latest", [40], None),
        ("all", [10, 20, 30, 40], None),
        ("none", [], "catch-up none: 3 missed tick(s) skipped"),
    ],
)
def test_missed_ticks_follow_the_triggers_catchup(
    workspace: Workspace,
    flow: Path,
    clock: Clock,
    launcher: InProcessLauncher,
    catchup: str,
    started: list[int],
    skip: str | None,
) -> None:
    _create(workspace, clock, **_every(flow, catchup=catchup))
    scheduler = _scheduler(workspace, launcher, clock)
    clock.at = T0 + timedelta(seconds=38)  # 10, 20, 30 missed (the grace is 5 s); 40 not due
    scheduler.run_pass()
    clock.at = T0 + timedelta(seconds=40, milliseconds=1)
    scheduler.run_pass()
    expected = [T0 + timedelta(seconds=s) for s in started]
    if catchup == "latest":
        expected = [T0 + timedelta(seconds=30), T0 + timedelta(seconds=40)]
    if catchup == "none":
        expected = [T0 + timedelta(seconds=40)]
    assert [r.cause.scheduled_at for r in _runs(workspace, "often")] == expected
    ticks = workspace.store.ticks(workspace.store.get_trigger("often").id)
    if catchup == "latest":
        note = next(t.note for t in ticks if t.scheduled_at == T0 + timedelta(seconds=30))
        assert note is not None and "the 3 missed tick(s)" in note
    if skip is not None:
        reasons = [t.skip_reason for t in ticks if t.skip_reason]
        assert len(reasons) == 1 and reasons[0].startswith(skip)


def test_ticks_before_a_trigger_became_active_created_or_resumed_are_not_missed_ones(
    workspace: Workspace, flow: Path, clock: Clock, launcher: InProcessLauncher
) -> None:
    # Both start 55 s before they are created: ticks at T0 - 55 s, - 45 s, … + 5 s, + 15 s, …
    fields = {**_every(flow, catchup="all"), "start": (T0 - timedelta(seconds=55)).isoformat()}
    _create(workspace, clock, **fields)
    _create(workspace, clock, **{**fields, "name": "control"})
    service = TriggerService(workspace.store, clock=clock)
    # Active from the clock's "now", not the wall clock's (T0 is years ago).
    assert service.get("often").active_since == service.get("often").created_at == T0
    scheduler = _scheduler(workspace, launcher, clock)
    clock.at = T0 + timedelta(milliseconds=1)
    scheduler.run_pass()
    assert _runs(workspace, "often") == _runs(workspace, "control") == []  # created now
    clock.at = T0 + timedelta(seconds=5, milliseconds=1)
    scheduler.run_pass()
    clock.at = T0 + timedelta(seconds=6)
    service.pause("often")  # sleeps through + 15 s, + 25 s, + 35 s
    clock.at = T0 + timedelta(seconds=36)
    assert service.resume("often").active_since == clock.at  # resumed: a fresh start
    # The same definition again: not a change of schedule, so no fresh start.
    service.update(service.get("control").definition)
    assert service.get("control").active_since == T0
    scheduler.run_pass()
    clock.at = T0 + timedelta(seconds=45, milliseconds=1)
    scheduler.run_pass()
    ticks = {
        name: [(r.cause.scheduled_at - T0).total_seconds() for r in _runs(workspace, name)]
        for name in ("often", "control")
    }
    assert ticks == {"often": [5, 45], "control": [5, 15, 25, 35, 45]}


def test_overlap_skip_records_why_and_wait_records_the_run_waiting(
    workspace: Workspace, flow: Path, clock: Clock, launcher: InProcessLauncher
) -> None:
    _create(workspace, clock, **_every(flow, "skipper", overlap="skip", max_concurrent=1))
    _create(workspace, clock, **_every(flow, "waiter", max_concurrent=1))
    scheduler = _scheduler(workspace, launcher, clock)
    launcher.hold = True  # runs are recorded and stay unfinished
    clock.at = T0 + timedelta(seconds=10, milliseconds=1)
    scheduler.run_pass()
    clock.at = T0 + timedelta(seconds=20, milliseconds=1)
    scheduler.run_pass()
    skipper = workspace.store.get_trigger("skipper")
    ticks = {t.scheduled_at: t for t in workspace.store.ticks(skipper.id)}
    later = ticks[T0 + timedelta(seconds=20)]
    assert later.run_id is None and later.skip_reason is not None
    assert later.skip_reason.startswith("overlap skip: 1 run of the trigger still running")
    waiting = _runs(workspace, "waiter")
    assert [r.status for r in waiting] == [RunStatus.INITIAL, RunStatus.INITIAL]
    # The second waits for the first: the trigger's slot is taken.
    assert workspace.store.claim_slot(waiting[0].id, None, trigger_limit=1)
    assert not workspace.store.claim_slot(waiting[1].id, None, trigger_limit=1)


def test_an_after_trigger_runs_once_per_upstream_run_that_ended_its_way(
    workspace: Workspace, flow: Path, clock: Clock, launcher: InProcessLauncher
) -> None:
    service = TriggerService(workspace.store)
    service.create(
        check_pipeline(
            definition_from({"name": "then", "pipeline": f"{flow}:report", "after": "work"})
        )
    )
    service.create(
        check_pipeline(
            definition_from(
                {"name": "on-fail", "pipeline": f"{flow}:report", "after": "work", "on": "failed"}
            )
        )
    )
    real = Scheduler(workspace.store, launcher, options=SchedulerOptions())
    real.run_pass()  # the first pass starts watching run endings from now
    import pipetrail as pt
    from pipetrail.runtime.loader import load_pipeline_file

    pipeline = load_pipeline_file(flow, "work")
    ok = pt.run(pipeline, executor="inline", workspace=workspace)
    real.run_pass()
    real.run_pass()  # read again (look-back): nothing twice
    runs = _runs(workspace, "then")
    assert len(runs) == 1
    assert runs[0].cause.upstream_pathspec == ok.pathspec and runs[0].trigger == "after"
    assert runs[0].variables["upstream_run"] == ok.pathspec
    assert _runs(workspace, "on-fail") == []
    failed = pt.run(pipeline, {"fail": True}, executor="inline", workspace=workspace)
    real.run_pass()
    assert [r.cause.upstream_pathspec for r in _runs(workspace, "on-fail")] == [failed.pathspec]
    assert len(_runs(workspace, "then")) == 1


def test_an_always_on_trigger_starts_the_next_run_when_the_last_ends(
    workspace: Workspace, flow: Path, clock: Clock, launcher: InProcessLauncher
) -> None:
    TriggerService(workspace.store).create(
        check_pipeline(
            definition_from({"name": "loop", "pipeline": f"{flow}:work", "always_on": True})
        )
    )
    real = Scheduler(workspace.store, launcher, options=SchedulerOptions())
    for _ in range(3):
        real.run_pass()
    runs = _runs(workspace, "loop")
    assert len(runs) == 3 and all(r.status is RunStatus.COMPLETED for r in runs)
    # Each started after the one before it ended: the tick is the previous run's end.
    for before, after in itertools.pairwise(runs):
        assert after.cause.scheduled_at == before.finished_at
    launcher.hold = True
    real.run_pass()
    real.run_pass()  # the fourth is still unfinished: no fifth
    assert len(_runs(workspace, "loop")) == 4


def test_sla_missed_while_running_and_met_in_time(
    workspace: Workspace, flow: Path, launcher: InProcessLauncher
) -> None:
    # A run's own times are the wall clock's (the runtime records them): to compare a real
    # run's end with its SLA, the test's clock starts at the wall clock's now.
    t0 = datetime.now(UTC)
    clock = Clock(t0)
    start = (t0 + timedelta(seconds=10)).isoformat()
    _create(workspace, clock, **_every(flow, "slow", sla="120s", start=start))
    _create(workspace, clock, **_every(flow, "fast", sla="120s", start=start))
    scheduler = _scheduler(workspace, launcher, clock)
    launcher.hold = True
    clock.at = t0 + timedelta(seconds=10, milliseconds=1)
    scheduler.run_pass()  # both record their run; "slow" will stay unfinished
    fast = _runs(workspace, "fast")[0]
    workspace.engine(executor="inline").execute(fast, _request_of(workspace, fast))
    clock.at = t0 + timedelta(seconds=129)
    assert scheduler.run_pass().sla_missed == 0
    clock.at = t0 + timedelta(seconds=130, milliseconds=1)
    launcher.hold = True
    report = scheduler.run_pass()
    assert report.sla_missed == 1
    slow = _runs(workspace, "slow")[0]
    assert slow.sla_state == "missed" and slow.status is RunStatus.INITIAL
    events = [e for e in workspace.store.events(slow.id) if e.kind == "sla_missed"]
    assert len(events) == 1 and "not completed by" in (events[0].message or "")
    assert _runs(workspace, "fast")[0].sla_state == "met"
    assert [r.id for r in workspace.store.list_runs(RunQuery(sla_missed=True))] == [slow.id]
    assert scheduler.run_pass().sla_missed == 0  # decided once


def _request_of(workspace: Workspace, run: Any) -> Any:
    from pipetrail.scheduling.fire import tick_request

    record = workspace.store.get_trigger(run.cause.trigger)
    return tick_request(record, run.cause.scheduled_at)


def test_a_backfill_queues_ticks_that_the_scheduler_starts(
    workspace: Workspace, flow: Path, clock: Clock, launcher: InProcessLauncher
) -> None:
    _create(workspace, clock, **_every(flow, catchup="none"))
    clock.at = T0 + timedelta(minutes=5)
    service = TriggerService(workspace.store, clock=clock)
    queued = service.backfill("often", T0 + timedelta(seconds=10), T0 + timedelta(seconds=30))
    assert queued == [T0 + timedelta(seconds=s) for s in (10, 20, 30)]
    assert service.backfill("often", T0, T0 + timedelta(seconds=30)) == []  # once
    scheduler = _scheduler(workspace, launcher, clock)
    scheduler.run_pass()
    ticks = sorted(r.cause.scheduled_at for r in _runs(workspace, "often"))
    assert ticks[:3] == queued


def test_a_tick_whose_launcher_died_is_launched_again_then_given_up(
    workspace: Workspace, flow: Path, clock: Clock
) -> None:
    class DeadLauncher(InProcessLauncher):
        """Every launch 'dies' before recording the run."""

        def launch(self, order: LaunchOrder) -> int:
            self.orders.append(order)
            return 2**22 + 12345  # no such process

        def alive(self, pid: int) -> bool:
            return False

    dead = DeadLauncher(workspace)
    _create(workspace, clock, **_every(flow))
    scheduler = _scheduler(workspace, dead, clock, max_launches=3)
    clock.at = T0 + timedelta(seconds=10, milliseconds=1)
    for _ in range(4):
        scheduler.run_pass()
    assert [o.scheduled_at for o in dead.orders] == [T0 + timedelta(seconds=10)] * 3
    tick = workspace.store.ticks(workspace.store.get_trigger("often").id)[0]
    assert tick.run_id is None and tick.launches == 3
    assert tick.skip_reason is not None and tick.skip_reason.startswith("could not start")


def test_a_pipeline_that_no_longer_loads_settles_its_tick_with_the_reason(
    workspace: Workspace, flow: Path, clock: Clock, launcher: InProcessLauncher
) -> None:
    _create(workspace, clock, **_every(flow))
    flow.write_text("this is not python\n")
    scheduler = _scheduler(workspace, launcher, clock)
    clock.at = T0 + timedelta(seconds=10, milliseconds=1)
    scheduler.run_pass()
    tick = workspace.store.ticks(workspace.store.get_trigger("often").id)[0]
    assert tick.run_id is None and tick.skip_reason is not None
    assert tick.skip_reason.startswith("could not start:") and "flows.py" in tick.skip_reason
    assert _runs(workspace, "often") == []


def test_overlap_wait_skips_a_tick_once_too_many_runs_wait(
    workspace: Workspace, flow: Path, clock: Clock, launcher: InProcessLauncher
) -> None:
    _create(workspace, clock, **_every(flow, "pile", max_concurrent=1))
    scheduler = _scheduler(workspace, launcher, clock, max_waiting=2)
    launcher.hold = True
    for step in (1, 2, 3):
        clock.at = T0 + timedelta(seconds=10 * step, milliseconds=1)
        scheduler.run_pass()
    assert len(_runs(workspace, "pile")) == 2
    newest = workspace.store.ticks(workspace.store.get_trigger("pile").id)[0]
    assert (
        newest.skip_reason is not None
        and "2 runs of the trigger already wait" in newest.skip_reason
    )


def test_a_tick_fired_by_hand_does_not_hide_a_due_scheduled_tick(
    workspace: Workspace, flow: Path, clock: Clock, launcher: InProcessLauncher
) -> None:
    from pipetrail.scheduling.fire import fire_now

    _create(workspace, clock, **_every(flow))
    scheduler = _scheduler(workspace, launcher, clock)
    record = workspace.store.get_trigger("often")
    fire_now(workspace.store, workspace.engine(executor="inline"), record)  # "now", real time
    clock.at = T0 + timedelta(seconds=10, milliseconds=1)
    scheduler.run_pass()
    kinds = sorted(str(r.trigger) for r in _runs(workspace, "often"))
    assert kinds == ["interval", "manual"]


def test_after_a_short_stall_only_the_newest_tick_runs_under_catchup_latest(
    workspace: Workspace, flow: Path, clock: Clock, launcher: InProcessLauncher
) -> None:
    _create(workspace, clock, **_every(flow))
    scheduler = _scheduler(workspace, launcher, clock, grace_s=60.0)
    clock.at = T0 + timedelta(seconds=40, milliseconds=1)  # 10…40 due, all within the grace
    scheduler.run_pass()
    assert [r.cause.scheduled_at for r in _runs(workspace, "often")] == [T0 + timedelta(seconds=40)]


def test_a_tick_claimed_by_an_earlier_life_with_the_same_pid_is_launched_again(
    workspace: Workspace, flow: Path, clock: Clock, launcher: InProcessLauncher
) -> None:
    import os
    import socket

    _create(workspace, clock, **_every(flow))
    record = workspace.store.get_trigger("often")
    tick = T0 + timedelta(seconds=10)
    # A scheduler with this host name and pid claimed it, then died (a restarted container).
    assert workspace.store.claim_tick(record.id, tick, launcher=(socket.gethostname(), os.getpid()))
    clock.at = T0 + timedelta(seconds=10, milliseconds=1)
    scheduler = _scheduler(workspace, launcher, clock)
    assert scheduler.run_pass().relaunched == 1
    assert [r.cause.scheduled_at for r in _runs(workspace, "often")] == [tick]
