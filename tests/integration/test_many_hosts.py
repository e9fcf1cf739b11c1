"""Runners on two "hosts" share one PostgreSQL store: run slots, cancels and the reaper.

Each host is a ``pipetrail run`` process whose ``socket.gethostname()`` answers a name of its
own (a shim patches it before the CLI starts), so the store sees runs from ``host-a`` and
``host-b`` exactly as it would from two machines; the test process is a third, ``host-c``.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipetrail.config import Settings
from pipetrail.core.status import RUN_TERMINAL, RunStatus, TaskStatus
from pipetrail.runtime.control import cancel_run
from pipetrail.runtime.recovery import reap_lost_runs
from pipetrail.storage.metadata.base import RunQuery
from pipetrail.storage.metadata.sql.store import SqlMetadataStore
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

SHIM = """
import os, runpy, socket, sys
socket.gethostname = lambda: os.environ["FAKE_HOSTNAME"]
sys.argv = ["pipetrail", *sys.argv[1:]]
runpy.run_module("pipetrail.cli", run_name="__main__", alter_sys=True)
"""

SHARED = """
import time

@pt.step
def work():
    time.sleep(1.5)
    return 1

pipeline = pt.Pipeline("shared-slot", [work], max_concurrent_runs=1)
"""

LONG = """
import time

@pt.step
def long():
    for _ in range(600):
        time.sleep(0.1)
    return 1

pipeline = pt.Pipeline("long-on-hosts", [long])
"""


class Hosts:
    """Starts ``pipetrail`` commands as if on named hosts; kills what is left at the end."""

    def __init__(self, folder: Path, db_url: str) -> None:
        self.folder = folder
        self.shim = folder / "host_shim.py"
        self.shim.write_text(SHIM)
        self.env = {**os.environ, "PIPETRAIL_HOME": str(folder / "home"), "PIPETRAIL_DB": db_url}
        self.processes: list[tuple[subprocess.Popen[str], Path]] = []

    def start(self, host: str, *args: str) -> subprocess.Popen[str]:
        log = self.folder / f"{host}-{len(self.processes)}.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, str(self.shim), *args],
                cwd=self.folder,
                env={**self.env, "FAKE_HOSTNAME": host},
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self.processes.append((process, log))
        return process

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()}" for _, log in self.processes)

    def stop(self) -> None:
        for process, _ in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)


@pytest.fixture
def pg_workspace(pg_url: str, tmp_path: Path) -> Iterator[Workspace]:
    ws = Workspace(Settings.for_home(tmp_path / "home", db_url=pg_url))
    ws.store.delete_everything()
    try:
        yield ws
    finally:
        ws.close()


@pytest.fixture
def hosts(tmp_path: Path, pg_url: str) -> Iterator[Hosts]:
    found = Hosts(tmp_path, pg_url)
    try:
        yield found
    finally:
        found.stop()


def _wait(condition: object, what: str, hosts: Hosts, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{hosts.logs()}")


def test_a_run_slot_limit_holds_across_hosts(
    pg_workspace: Workspace, hosts: Hosts, flow_file: FlowWriter
) -> None:
    flow = flow_file(SHARED, "shared")
    started = [
        hosts.start(host, "run", str(flow), "--executor", "inline", "-q")
        for host in ("host-a", "host-b", "host-a", "host-b")
    ]
    for process in started:
        assert process.wait(timeout=180) == 0, hosts.logs()
    runs = pg_workspace.store.list_runs(RunQuery(pipeline="shared-slot", limit=None))
    assert len(runs) == 4
    assert {r.status for r in runs} == {RunStatus.COMPLETED}
    assert {r.host for r in runs} == {"host-a", "host-b"}
    assert {r.runner_host for r in runs} == {"host-a", "host-b"}
    # max_concurrent_runs=1 across both hosts: no two runs were running at the same time.
    spans = sorted((r.started_at, r.finished_at) for r in runs)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end is not None and start is not None and start >= end, spans
    summary = pg_workspace.store.summarize_runs(RunQuery(pipeline="shared-slot", limit=None))
    assert summary.counts == {"completed": 4}


def test_a_cancel_reaches_the_runner_on_the_right_host(
    pg_workspace: Workspace, hosts: Hosts, flow_file: FlowWriter
) -> None:
    store = pg_workspace.store
    flow = flow_file(LONG, "long")
    hosts.start("host-a", "run", str(flow), "-q")
    hosts.start("host-b", "run", str(flow), "-q")

    def both_running() -> bool:
        runs = store.list_runs(RunQuery(pipeline="long-on-hosts", limit=None))
        return len(runs) == 2 and all(r.status is RunStatus.RUNNING for r in runs)

    _wait(both_running, "both runs to be running", hosts)
    by_host = {
        r.runner_host: r for r in store.list_runs(RunQuery(pipeline="long-on-hosts", limit=None))
    }
    assert set(by_host) == {"host-a", "host-b"}
    # A reaper on a third host leaves live runners elsewhere alone (they beat their heartbeats).
    assert reap_lost_runs(store) == []

    store.request_cancel(by_host["host-b"].id, "cancelled from host-c")
    _wait(
        lambda: store.get_run(by_host["host-b"].id).status in RUN_TERMINAL,
        "the run on host-b to end",
        hosts,
    )
    cancelled = store.get_run(by_host["host-b"].id)
    assert cancelled.status is RunStatus.CANCELLED, hosts.logs()
    # The runner on host-b ended it (its lease is the first: nobody took it from it).
    assert cancelled.lease == 1
    assert any("host-c" in (e.message or "") for e in store.events(cancelled.id))
    # The run on host-a goes on, untouched.
    time.sleep(1.0)
    other = store.get_run(by_host["host-a"].id)
    assert other.status is RunStatus.RUNNING and other.cancel_requested_at is None
    store.request_cancel(other.id, "cleanup")
    _wait(lambda: store.get_run(other.id).status in RUN_TERMINAL, "host-a's run to end", hosts)


def test_a_forced_cancel_takes_the_run_from_a_silent_runner_elsewhere(
    pg_workspace: Workspace, hosts: Hosts, flow_file: FlowWriter
) -> None:
    store = pg_workspace.store
    flow = flow_file(LONG, "long")
    runner = hosts.start("host-b", "run", str(flow), "--executor", "inline", "-q")

    def running() -> bool:
        runs = store.list_runs(RunQuery(pipeline="long-on-hosts", limit=None))
        return len(runs) == 1 and runs[0].status is RunStatus.RUNNING

    _wait(running, "the run on host-b to be running", hosts)
    (run,) = store.list_runs(RunQuery(pipeline="long-on-hosts", limit=None))
    # The runner on host-b is paused (a stopped VM, a laptop lid): it cannot act on the cancel.
    os.kill(runner.pid, signal.SIGSTOP)
    try:
        cancelled = cancel_run(store, run, reason="cancelled from host-c", wait_s=2.0)
    finally:
        os.kill(runner.pid, signal.SIGCONT)
    assert cancelled.status is RunStatus.CANCELLED
    assert cancelled.lease == run.lease + 1
    assert "did not answer" in (cancelled.error or "")
    assert {t.status for t in store.tasks(run.id)} == {TaskStatus.CANCELLED}
    # Back, the runner finds its lease gone at its next write and stops; the record stays.
    runner.wait(timeout=60)
    after = store.get_run(run.id)
    assert after.status is RunStatus.CANCELLED and after.lease == cancelled.lease
    assert summary_counts(store) == {"cancelled": 1}


def summary_counts(store: SqlMetadataStore) -> dict[str, int]:
    return store.summarize_runs(RunQuery(pipeline="long-on-hosts", limit=None)).counts
