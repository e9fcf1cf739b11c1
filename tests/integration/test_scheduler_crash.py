"""Real ``pipetrail scheduler`` processes killed with SIGKILL, restarted, and run side by side:
every due tick is run exactly once.

The scheduler and the runs it starts are real processes over a store of the test's own (SQLite,
and PostgreSQL for two schedulers at once); the trigger fires every second.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipetrail.config import Settings
from pipetrail.core.status import RunStatus
from pipetrail.scheduling.service import TriggerService
from pipetrail.scheduling.spec import check_pipeline, definition_from
from pipetrail.scheduling.triggers import fire_times
from pipetrail.storage.metadata.base import RunQuery, TriggerRecord
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter
from tests.e2e.test_control_cli import Cli, wait_until

pytestmark = pytest.mark.slow

FLOW = """
@pt.step
def tick():
    return pt.current.vars["scheduled_at"]

pipeline = pt.Pipeline("ticker", [tick])
"""


def _trigger(workspace: Workspace, flow: Path) -> TriggerRecord:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    fields = {
        "name": "every-second",
        "pipeline": str(flow),
        "every": "1s",
        "start": start.isoformat(),
        "catchup": "all",
    }
    return TriggerService(workspace.store).create(check_pipeline(definition_from(fields)))


def _check_exactly_once(workspace: Workspace, record: TriggerRecord, until: datetime) -> int:
    """Every tick from the trigger's start to ``until`` has one run, and no tick has two."""
    store = workspace.store

    start = record.definition.start_at
    assert start is not None
    due = list(fire_times(record.definition, start - timedelta(seconds=1), until))

    def all_ended() -> bool:
        # A tick claimed just before the schedulers stopped has its run recorded by the process
        # launched for it, which may still be starting: wait for every due tick's run to end.
        runs = store.list_runs(RunQuery(trigger=record.name, limit=None))
        have = {r.cause.scheduled_at for r in runs if r.cause is not None}
        ended = all(r.status not in (RunStatus.INITIAL, RunStatus.RUNNING) for r in runs)
        return ended and all(t in have for t in due)

    with contextlib.suppress(AssertionError):  # what is missing is reported below
        wait_until("every due tick's run to end", all_ended, timeout=120)
    runs = store.list_runs(RunQuery(trigger=record.name, limit=None))
    per_tick = Counter(r.cause.scheduled_at for r in runs if r.cause is not None)
    twice = {t: n for t, n in per_tick.items() if n > 1}
    assert not twice, f"ticks run more than once: {twice}"
    missing = [t for t in due if t not in per_tick]
    assert not missing, f"due ticks never run: {missing}"
    failed = [r.pathspec for r in runs if r.status is not RunStatus.COMPLETED]
    assert not failed, f"tick runs that did not complete: {failed}"
    skipped = [t for t in store.ticks(record.id) if t.skip_reason]
    assert not skipped, f"ticks given up: {[(t.scheduled_at, t.skip_reason) for t in skipped]}"
    return len(due)


def _all_started(workspace: Workspace, record: TriggerRecord, until: datetime) -> bool:
    """Whether every tick due by ``until`` has its run recorded."""
    start = record.definition.start_at
    assert start is not None
    for tick in fire_times(record.definition, start - timedelta(seconds=1), until):
        found = workspace.store.get_tick(record.id, tick)
        if found is None or found.run_id is None:
            return False
    return True


def test_a_scheduler_killed_at_random_moments_runs_every_due_tick_once(
    tmp_path: Path, flow_file: FlowWriter
) -> None:
    seed = int(os.environ.get("PIPETRAIL_TEST_SEED", random.randrange(2**31)))
    rng = random.Random(seed)
    cli = Cli(tmp_path)
    flow = flow_file(FLOW, "ticker")
    workspace = Workspace(Settings.for_home(cli.home))
    try:
        record = _trigger(workspace, flow)
        kills = 0
        deadline = time.monotonic() + 12.0
        while time.monotonic() < deadline:
            scheduler = cli.start("scheduler", "--poll", "0.2s")
            time.sleep(rng.uniform(0.2, 1.8))
            scheduler.send_signal(signal.SIGKILL)
            scheduler.wait(timeout=30)
            kills += 1
            time.sleep(rng.uniform(0.0, 1.2))  # down a while: ticks are missed meanwhile
        last = cli.start("scheduler", "--poll", "0.2s")
        until = datetime.now(UTC)
        # Let the last one catch up with everything due by ``until``, then stop it cleanly.
        wait_until(
            "the catch-up after the last restart",
            lambda: _all_started(workspace, record, until),
            timeout=90,
        )
        wait_until(
            "the last scheduler to start its loop",
            lambda: any(i.pid == last.pid for i in workspace.store.schedulers()),
            timeout=30,
        )
        last.send_signal(signal.SIGTERM)
        code, _, err = cli.finish(last, within=30, what="the scheduler after SIGTERM")
        assert code == 0, err
        assert "stopped" in err
        ticks = _check_exactly_once(workspace, record, until)
        assert ticks >= 10 and kills >= 5, (seed, ticks, kills)
    finally:
        cli.cleanup()
        workspace.close()


def test_two_schedulers_on_one_postgresql_store_run_each_tick_once(
    tmp_path: Path, flow_file: FlowWriter, pg_url: str
) -> None:
    cli = Cli(tmp_path)
    cli.env["PIPETRAIL_DB"] = pg_url
    flow = flow_file(FLOW, "ticker")
    workspace = Workspace(Settings.for_home(cli.home, db_url=pg_url))
    workspace.store.delete_everything()
    try:
        record = _trigger(workspace, flow)
        one = cli.start("scheduler", "--poll", "0.2s")
        two = cli.start("scheduler", "--poll", "0.2s")
        time.sleep(8.0)
        running = {i.pid for i in workspace.store.schedulers()}
        assert {one.pid, two.pid} <= running
        for process in (one, two):
            process.send_signal(signal.SIGTERM)
        for process in (one, two):
            code, _, err = cli.finish(process, within=30, what="a scheduler after SIGTERM")
            assert code == 0, err
        # Both stopped: every tick due 3 s before is one run (a pass that launches runs takes a
        # while on a loaded machine: the last ticks may not be claimed yet).
        until = datetime.now(UTC) - timedelta(seconds=3.0)
        assert _check_exactly_once(workspace, record, until) >= 5
    finally:
        cli.cleanup()
        workspace.close()
