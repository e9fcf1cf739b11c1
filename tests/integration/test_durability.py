"""Nothing logged is lost, nothing runs twice: spools, salvage, fencing and lost-runner reaping.

Real runners (``python -m pipetrail.cli``) on a store of the test's own, SQLite and PostgreSQL,
killed, cancelled, timed out and paused for real.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
from sqlalchemy import update

from pipetrail.client import Run
from pipetrail.config import Settings
from pipetrail.runtime.recovery import LostRunReaper, reap_lost_runs
from pipetrail.storage.metadata.base import RunQuery
from pipetrail.storage.metadata.sql.tables import pipeline_run
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter
from tests.e2e.test_control_cli import Cli, alive, kill_tree, wait_until

pytestmark = pytest.mark.slow

#: Prints five lines and logs five points, says it is ready, then ends as ``mode`` says.
CHATTY = """
import os, signal, sys, time
from pathlib import Path

@pt.step(timeout={timeout!r})
def chatty(mode: str = "sleep"):
    for i in range(5):
        print("line", i)
        pt.log_metric("i", i, step=i)
    print("to stderr", file=sys.stderr)
    (Path(__file__).parent / "ready").touch()
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)
    return 1

pipeline = pt.Pipeline("chatty", [chatty])
"""

#: Logs points as fast as it can; after each log_metric returns, the count is in ``returned``.
FIREHOSE = """
import os, struct, time
from pathlib import Path

@pt.step
def firehose():
    fd = os.open(Path(__file__).parent / "returned", os.O_RDWR | os.O_CREAT)
    i = 0
    while True:
        pt.log_metric("x", i, step=i)
        i += 1
        os.pwrite(fd, struct.pack("<q", i), 0)

pipeline = pt.Pipeline("firehose", [firehose])
"""

#: ``slow`` waits for the file ``go``; ``after`` counts its executions in ``after.txt``.
PAUSABLE = """
import time
from pathlib import Path

HERE = Path(__file__).parent

@pt.step
def slow():
    (HERE / "slow-started").touch()
    while not (HERE / "go").exists():
        time.sleep(0.05)
    return 1

@pt.step
def after(slow):
    with open(HERE / "after.txt", "a") as f:
        f.write("ran\\n")
    return slow + 1

pipeline = pt.Pipeline("pausable", [slow, after])
"""


@pytest.fixture
def shell(tmp_path: Path, workspace: Workspace) -> Iterator[Cli]:
    """The CLI on the test's store (SQLite or PostgreSQL)."""
    cli = Cli(tmp_path)
    cli.home = workspace.settings.home
    cli.env["PIPETRAIL_HOME"] = str(workspace.settings.home)
    if workspace.store.engine.dialect.name == "postgresql":
        cli.env["PIPETRAIL_DB"] = workspace.settings.db_url
    try:
        yield cli
    finally:
        cli.cleanup()


def _run(workspace: Workspace, pathspec: str) -> Run:
    return Run(pathspec, reader=workspace.reader())


def _started(workspace: Workspace, pipeline: str) -> str:
    """The pathspec of the test's one run of ``pipeline`` (ids go on across PostgreSQL tests)."""

    def check() -> str | None:
        runs = workspace.store.list_runs(RunQuery(pipeline=pipeline))
        return runs[0].pathspec if runs else None

    return wait_until(f"a run of {pipeline}", check, 30)


def _start_pausable(shell: Cli, flow_file: FlowWriter, tmp_path: Path) -> subprocess.Popen[str]:
    """A runner of PAUSABLE, once its slow step is running."""
    runner = shell.start("run", str(flow_file(PAUSABLE, "pausable")), "-q")
    _wait_file(tmp_path / "slow-started")
    return runner


def _wait_file(path: Path, timeout: float = 60) -> None:
    wait_until(f"{path.name} to appear", path.exists, timeout)


def _ended(workspace: Workspace, pathspec: str, timeout: float = 60) -> Run:
    def check() -> Run | None:
        reap_lost_runs(workspace.store, workspace.spool_root)
        run = _run(workspace, pathspec)
        return run if run.finished else None

    return wait_until(f"{pathspec} to end", check, timeout)


@pytest.mark.parametrize(
    ("executor", "how"),
    [("process", "cancel"), ("inline", "cancel"), ("process", "timeout"), ("process", "kill")],
)
def test_output_and_points_before_a_cancel_timeout_or_kill_are_kept(
    shell: Cli, workspace: Workspace, flow_file: FlowWriter, tmp_path: Path, executor: str, how: str
) -> None:
    timeout = "2s" if how == "timeout" else None
    file = flow_file(CHATTY.format(timeout=timeout), "chatty")
    mode = "kill" if how == "kill" else "sleep"
    runner = shell.start("run", str(file), "-q", "--executor", executor, "-p", f"mode={mode}")
    _wait_file(tmp_path / "ready")
    pathspec = _started(workspace, "chatty")
    if how == "cancel":
        # While the step runs, what it printed is already readable from the store.
        def printed() -> str | None:
            done = shell("logs", pathspec, "chatty")
            return done.stdout if "line 4" in done.stdout else None

        wait_until("the running step's output in `pipetrail logs`", printed, 30)
        assert shell("runs", "cancel", pathspec).returncode == 0
    shell.finish(runner, 60, "the runner")
    run = _ended(workspace, pathspec)
    task = run["chatty"].task
    assert task is not None
    assert task.stdout == "".join(f"line {i}\n" for i in range(5))
    assert task.stderr == "to stderr\n"
    assert [p.value for p in run.metric_history("i")] == [0.0, 1.0, 2.0, 3.0, 4.0]
    expected = {"cancel": "cancelled", "timeout": "failed", "kill": "failed"}[how]
    assert run.status == expected, run.status
    assert not any(workspace.spool_root.iterdir()), "every spool was drained and removed"


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_no_point_whose_call_returned_is_lost_when_the_runner_group_is_killed(
    shell: Cli, workspace: Workspace, flow_file: FlowWriter, tmp_path: Path, executor: str
) -> None:
    file = flow_file(FIREHOSE, "firehose")
    counter = tmp_path / "returned"
    runner = shell.start("run", str(file), "-q", "--executor", executor)

    def returned() -> int:
        data = counter.read_bytes() if counter.exists() else b""
        return int(struct.unpack("<q", data[:8])[0]) if len(data) >= 8 else 0

    wait_until("20,000 points logged", lambda: returned() >= 20_000, 60)
    kill_tree(runner.pid)  # the runner and its workers, at once, with SIGKILL
    runner.wait(timeout=10)
    logged = returned()
    run = _ended(workspace, _started(workspace, "firehose"))
    assert run.status == "failed"
    steps = [int(p.step or 0) for p in run.metric_history("x")]
    # Every point whose log_metric call returned is there, once, in order (one more may be:
    # its call returned but the counter was not written yet).
    assert steps == list(range(len(steps)))
    assert logged <= len(steps) <= logged + 1


def test_a_runner_whose_run_was_taken_stops_and_writes_nothing(
    shell: Cli, workspace: Workspace, flow_file: FlowWriter, tmp_path: Path
) -> None:
    runner = _start_pausable(shell, flow_file, tmp_path)
    proc = psutil.Process(runner.pid)
    proc.suspend()  # SIGSTOP: a laptop lid, a paused VM
    try:
        store = workspace.store
        # A reaper elsewhere declares it lost (here, the runner is alive: it is never reaped).
        reap_lost_runs(store, workspace.spool_root, stale_after_s=0.0)
        pathspec = _started(workspace, "pausable")
        assert _run(workspace, pathspec).status == "running"
        run_id = _run(workspace, pathspec).id
        assert store.mark_lost(run_id, "runner lost: no heartbeat from elsewhere")
        events = len(store.events(run_id))
        (tmp_path / "go").touch()
    finally:
        proc.resume()
    code, _, err = shell.finish(runner, 60, "the fenced runner")
    assert code == 1
    assert "was taken from this runner" in err and "Traceback" not in err, err
    assert len(store.events(run_id)) == events, "the fenced runner wrote events"
    assert not (tmp_path / "after.txt").exists(), "a step ran after the run was taken"
    assert _run(workspace, pathspec).status == "failed"


def test_a_silent_runner_alive_on_this_host_is_not_lost(
    shell: Cli, workspace: Workspace, flow_file: FlowWriter, tmp_path: Path
) -> None:
    runner = _start_pausable(shell, flow_file, tmp_path)
    proc = psutil.Process(runner.pid)
    proc.suspend()
    try:
        pathspec = _started(workspace, "pausable")
        run_id = _run(workspace, pathspec).id
        old = datetime.now(UTC) - timedelta(minutes=10)
        with workspace.store.engine.begin() as conn:
            conn.execute(
                update(pipeline_run).where(pipeline_run.c.id == run_id).values(heartbeat_at=old)
            )
        assert reap_lost_runs(workspace.store, workspace.spool_root) == []
    finally:
        proc.resume()
    (tmp_path / "go").touch()
    code, out, err = shell.finish(runner, 60, "the paused runner")
    assert code == 0, out + err
    assert _run(workspace, pathspec).status == "completed"
    assert (tmp_path / "after.txt").read_text() == "ran\n"


def test_a_long_running_process_reaps_lost_runs_by_itself(
    shell: Cli, workspace: Workspace, flow_file: FlowWriter, tmp_path: Path
) -> None:
    runner = _start_pausable(shell, flow_file, tmp_path)
    workers = psutil.Process(runner.pid).children(recursive=True)
    pathspec = _started(workspace, "pausable")
    reaper = LostRunReaper(workspace.store, workspace.spool_root, interval_s=0.5)
    reaper.start()
    try:
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)

        # No command opens the store: the reaper alone fails the run.
        def failed() -> Run | None:
            run = _run(workspace, pathspec)
            return run if run.finished else None

        run = wait_until("the reaper to fail the lost run", failed, 40)
    finally:
        reaper.stop()
    assert run.status == "failed" and "runner lost" in (run.error or "")
    wait_until("the dead runner's workers to exit", lambda: not alive(workers), 10)


def test_settings_spool_lives_under_home(tmp_path: Path) -> None:
    ws = Workspace(Settings.for_home(tmp_path / "home"))
    try:
        assert ws.spool_root == (tmp_path / "home" / "spool").resolve()
        assert ws.services().spool_root == ws.spool_root
    finally:
        ws.close()


def test_the_server_fails_a_sigkilled_runners_run_with_no_other_command(
    shell: Cli, workspace: Workspace, flow_file: FlowWriter, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from pipetrail.server import create_app

    with TestClient(create_app(workspace, project_dir=tmp_path)) as client:
        runner = _start_pausable(shell, flow_file, tmp_path)
        run_id = _run(workspace, _started(workspace, "pausable")).id
        url = f"/api/pipeline_runs/{run_id}"
        assert client.get(url).json()["pipeline_run"]["status"] == "running"
        kill_tree(runner.pid)
        runner.wait(timeout=10)

        def failed() -> dict[str, object] | None:
            record: dict[str, object] = client.get(url).json()["pipeline_run"]
            return record if record["status"] == "failed" else None

        record = wait_until("the server to fail the lost run", failed, 30)
        assert "runner lost" in str(record["error"])
        (tmp_path / "go").touch()
        retry = client.post(f"/api/pipeline_runs/{run_id}/retry", json={})
        assert retry.status_code < 300, retry.text


TICKER = """
import time
from pathlib import Path

@pt.step
def ticker(lines: int = 12):
    (Path(__file__).parent / "ready").touch()
    for i in range(lines):
        print("tick", i, flush=True)
        time.sleep(0.15)
    return lines

pipeline = pt.Pipeline("ticker", [ticker])
"""


def test_logs_follow_tails_a_running_step_to_its_end(
    shell: Cli, workspace: Workspace, flow_file: FlowWriter, tmp_path: Path
) -> None:
    file = flow_file(TICKER, "ticker")
    runner = shell.start("run", str(file), "-q")
    _wait_file(tmp_path / "ready")
    follower = shell.start("logs", _started(workspace, "ticker"), "ticker", "--follow")
    code, out, err = shell.finish(follower, 60, "logs --follow")
    assert code == 0, err
    ticks = [line for line in out.splitlines() if line.startswith("tick")]
    assert ticks == [f"tick {i}" for i in range(12)], out
    assert shell.finish(runner, 60, "the runner")[0] == 0
