"""Logging never kills a pipeline: PostgreSQL restarting mid-run loses, reorders and doubles nothing.

The store is a real PostgreSQL cluster the test starts itself and stops twice while a run goes on:
once while a step logs metrics (they must be held and written when the store is back), once as
that step ends and the next one starts (their status changes must wait and be written then).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event

import pipetrail as pt
from pipetrail.client import Run
from pipetrail.config import Settings
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter
from tests.integration.pgcluster import PgCluster, find_pg_bin

POINTS = 60
#: How long each outage lasts: longer than the metric flush interval and than a step's pauses.
DOWN_S = 2.0
#: Longer than the store's longest pause between two retries: a store call still pending when a
#: run ends would be made within this time after the store is back.
SETTLE_S = 2.5

PIPELINE = f"""
import time
from pathlib import Path

@pt.step
def measure(signals: str = "", points: int = {POINTS}, pause: float = 0.1):
    for i in range(points):
        pt.log_metric("loss", 1.0 / (i + 1), step=i)
        # Tell the test when to take the store away: mid-step, and just before the step ends.
        if i == 15:
            Path(signals, "mid").touch()
        if i == points - 10:
            Path(signals, "end").touch()
            # End only once the store is down (however long stopping it takes here): the
            # task's end must be held for it.
            while not Path(signals, "down").exists():
                time.sleep(0.01)
        time.sleep(pause)
    return points

@pt.step
def after(measure):
    pt.log_metric("after", measure)
    return measure * 2

pipeline = pt.Pipeline("outage", [measure, after])
"""

NAP = """
import time

@pt.step
def nap():
    time.sleep(0.8)
    return 1

pipeline = pt.Pipeline("nap", [nap])
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    """A PostgreSQL cluster of this module's own, on a free port; removed whatever happens."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    server = PgCluster(bin_dir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


def _wait_for(marker: Path, runner: threading.Thread, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        if not runner.is_alive():
            pytest.fail(f"the run ended before its step created {marker.name!r}")
        if time.monotonic() > deadline:
            pytest.fail(f"the step did not create {marker.name!r} within {timeout_s:g} s")
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["process", "inline"])
def test_run_goes_on_through_store_restarts_and_records_everything_once(
    cluster: PgCluster, flow_file: FlowWriter, tmp_path: Path, executor: str
) -> None:
    url = cluster.create_database(f"outage_{executor}")
    signals = tmp_path / "signals"
    signals.mkdir()
    pipeline = load_pipeline_file(flow_file(PIPELINE))
    workspace = Workspace(Settings.for_home(tmp_path / "home", db_url=url))
    ended: list[Run] = []
    raised: list[BaseException] = []
    returned = threading.Event()
    late_users: list[str] = []

    def drive() -> None:
        try:
            ended.append(
                pt.run(pipeline, {"signals": str(signals)}, executor=executor, workspace=workspace)
            )
        except BaseException as exc:
            raised.append(exc)
        finally:
            returned.set()

    def note_late_use(*_: object) -> None:
        # Once pt.run has returned, only this test reads the store (from the main thread).
        thread = threading.current_thread()
        if returned.is_set() and thread is not threading.main_thread():
            late_users.append(thread.name)

    event.listen(workspace.store.engine, "checkout", note_late_use)

    runner = threading.Thread(target=drive, name="outage-run", daemon=True)
    started = time.monotonic()
    runner.start()
    try:
        _wait_for(signals / "mid", runner)
        first_down, first_back = cluster.outage(DOWN_S)
        _wait_for(signals / "end", runner)
        second_down, second_back = cluster.outage(DOWN_S, on_down=(signals / "down").touch)
        runner.join(timeout=60)
        assert not runner.is_alive(), "the run did not end within 60 s of the store coming back"
        elapsed = time.monotonic() - started
        assert not raised, f"pt.run raised {raised[0]!r}"
        run = ended[0]

        # The runner really met the outages (a store that never went away proves nothing).
        assert workspace.store.outages > 0
        assert run.status == "completed", run.error
        assert run.error is None
        assert [s.name for s in run] == ["measure", "after"]
        assert [len(s.tasks) for s in run] == [1, 1], "an outage must not cost a task attempt"
        assert run.data.after == 2 * POINTS

        # Every point, once, in the order logged.
        history = run.metric_history("loss")
        assert [p.step for p in history] == list(range(POINTS))
        assert [p.value for p in history] == [1.0 / (i + 1) for i in range(POINTS)]
        # The tasks' system samples (system/cpu_percent...) went the same durable way.
        system = [name for name in run.metrics if name.startswith("system/")]
        system_points = sum(len(run.metric_history(name)) for name in system)
        assert workspace.store.count_metrics(run.id) == POINTS + 1 + system_points
        user = {k: v for k, v in run.metrics.items() if k not in system}
        assert user == {"loss": 1.0 / POINTS, "after": float(POINTS)}
        # The step went on logging while the store was down: no point waited for it.
        times = [p.timestamp for p in history]
        assert times == sorted(times)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        del gaps[POINTS - 10]  # where the step waited for the second outage to begin
        assert max(gaps) < DOWN_S / 2, f"a point waited {max(gaps):.2f} s for the store"
        held = [p for p in history if first_down <= p.timestamp <= first_back]
        assert len(held) >= 10, f"only {len(held)} points were logged while the store was down"

        # Every status change, once, in order, for the run and each task.
        events = run.events
        assert [e.status for e in events if e.task_id is None] == [
            "initial",
            "running",
            "completed",
        ]
        for step in run:
            task = step.task
            assert task is not None and task.status == "completed"
            history_of_task = [e for e in events if e.task_id == task.id]
            assert [e.status for e in history_of_task] == [
                "initial",
                "queued",
                "running",
                "completed",
            ], step.name
            at = [e.at for e in history_of_task]
            assert at == sorted(at), step.name
        # The changes due while the store was down the second time were held, then written.
        measure, after = run["measure"].task, run["after"].task
        assert measure is not None and after is not None
        held_events = [
            e
            for e in events
            if (e.task_id == after.id and e.status != "initial")
            or (e.task_id == measure.id and e.status == "completed")
        ]
        assert len(held_events) == 4
        # The measure task ended while the store was down: its end keeps the time it happened
        # and was written once the store was back; the next task started after that.
        measure_end = [e for e in held_events if e.task_id == measure.id]
        assert [second_down <= e.at <= second_back for e in measure_end] == [True], measure_end
        assert all(e.at >= second_back for e in held_events if e.task_id == after.id), [
            (e.status, e.at.isoformat()) for e in held_events
        ]
        # Two outages of DOWN_S on top of a 6 s step: the run waited for the store, not longer.
        assert elapsed < 30, f"the run took {elapsed:.1f} s"

        # When pt.run returns the run is over: nothing of it goes on using the store, which
        # the caller may now close.
        time.sleep(max(0.0, SETTLE_S - (time.monotonic() - started - elapsed)))
        assert not late_users, (
            f"thread(s) {sorted(set(late_users))} still used the store after pt.run returned"
        )
    finally:
        if not runner.is_alive():
            workspace.close()


@pytest.mark.slow
def test_nothing_of_a_finished_run_still_uses_the_store(
    sqlite_workspace: Workspace, flow_file: FlowWriter
) -> None:
    """When pt.run returns the run is over, so its caller may close the store at once.

    The store answers slowly (as it does while it comes back from an outage) to every thread
    but the caller's, so whatever else works for the run is mid-call when its one step ends.
    """
    caller = threading.current_thread()
    returned = threading.Event()
    late_users: list[str] = []
    engine = sqlite_workspace.store.engine

    def slow_for_others(*_: object) -> None:
        if threading.current_thread() is not caller:
            time.sleep(1.0)

    def note_late_use(*_: object) -> None:
        if returned.is_set() and threading.current_thread() is not caller:
            late_users.append(threading.current_thread().name)

    event.listen(engine, "before_cursor_execute", slow_for_others)
    event.listen(engine, "after_cursor_execute", note_late_use)
    try:
        pipeline = load_pipeline_file(flow_file(NAP))
        run = pt.run(pipeline, executor="inline", workspace=sqlite_workspace)
        returned.set()
        assert run.status == "completed", run.error
        time.sleep(SETTLE_S)
        assert not late_users, (
            f"thread(s) {sorted(set(late_users))} still used the store after pt.run returned"
        )
    finally:
        event.remove(engine, "before_cursor_execute", slow_for_others)
        event.remove(engine, "after_cursor_execute", note_late_use)
