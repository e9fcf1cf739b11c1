"""The process executor with real workers: crashes, cancellation, shutdown, no orphans."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import pickle
import signal
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future
from pathlib import Path
from typing import Any

import psutil
import pytest

import pipetrail as pt
from pipetrail.config import Settings
from pipetrail.core.status import TaskStatus
from pipetrail.errors import PipetrailError, TaskCancelledError, WorkerLostError
from pipetrail.runtime.engine import RunRequest
from pipetrail.runtime.executors.pool import ProcessExecutor
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.runtime.task import TaskPayload
from pipetrail.storage.metadata.base import TaskOutcome
from pipetrail.workspace import Workspace, build_task_services
from tests.conftest import FlowWriter

DIAMOND = """
@pt.step
def load(n: int = 4):
    return list(range(n))

@pt.step
def left(load):
    return sum(load)

@pt.step
def right(load):
    return max(load)

@pt.step
def join(left, right):
    return left + right

pipeline = pt.Pipeline("diamond", [load, left, right, join])
"""

KILLED = """
import os, signal, time

@pt.step
def root():
    return 1

@pt.step
def boom(root):
    os.kill(os.getpid(), signal.SIGKILL)

@pt.step
def sibling(root):
    time.sleep(0.5)
    return root + 1

pipeline = pt.Pipeline("killed", [root, boom, sibling])
"""

# Steps for payloads submitted straight to the executor (no engine).
TOOLS = """
import os, signal, time

@pt.step
def nap(seconds: float = 30.0):
    time.sleep(seconds)
    return os.getpid()

@pt.step
def stubborn(seconds: float = 30.0, ready: str = ""):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if ready:
        open(ready, "w").close()
    time.sleep(seconds)

@pt.step
def quit(code: int = 3):
    os._exit(code)

pipeline = pt.Pipeline("tools", [nap, stubborn, quit])
"""


#: Servers that session fixtures of this test worker start (S3, a Dask cluster) are not workers.
_SERVERS = (
    "moto_server",
    "dask scheduler",
    "dask worker",
    "distributed.cli",
    "playwright",
    "chromium",
)


def _workers_alive() -> list[psutil.Process]:
    """Descendants of this process other than multiprocessing's fork server and tracker and
    the servers (and their children) that other tests' session fixtures keep running."""
    family: list[tuple[psutil.Process, str]] = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            family.append((child, " ".join(child.cmdline())))
    servers: set[int] = set()
    for child, command in family:
        if any(name in command for name in _SERVERS):
            servers.add(child.pid)
            with contextlib.suppress(psutil.NoSuchProcess):
                servers.update(p.pid for p in child.children(recursive=True))
    return [
        child
        for child, command in family
        if child.pid not in servers
        and "forkserver" not in command
        and "resource_tracker" not in command
    ]


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = Workspace(Settings.for_home(tmp_path / "home", max_workers=2))
    try:
        yield workspace
    finally:
        workspace.close()
    assert _workers_alive() == []


class Tasks:
    """Makes run and task rows for the TOOLS pipeline and payloads that point at them."""

    def __init__(self, ws: Workspace, file: Path) -> None:
        self.ws = ws
        self.pipeline = load_pipeline_file(file)
        request = RunRequest(self.pipeline, self.pipeline.resolve_params({}))
        self.run = ws.engine(executor="process").prepare(request)
        self.count = 0

    def payload(self, step: str, **params: Any) -> TaskPayload:
        self.count += 1
        key = (step, self.count, 0)
        task_id = self.ws.store.create_tasks(self.run.id, [key])[key]
        self.ws.store.set_task_status(task_id, TaskStatus.QUEUED)
        values = {**self.pipeline.resolve_params({}), **params}
        return TaskPayload(
            pipeline=self.pipeline.name,
            pipeline_file=self.pipeline.spec.file,
            version=self.pipeline.version,
            step=step,
            run_id=self.run.id,
            task_id=task_id,
            task_index=self.count,
            attempt=0,
            params=pickle.dumps(values),
            variables={},
        )


@pytest.fixture
def tasks(ws: Workspace, flow_file: FlowWriter) -> Tasks:
    return Tasks(ws, flow_file(TOOLS))


@pytest.fixture
def executor(ws: Workspace) -> Iterator[ProcessExecutor]:
    pool = ProcessExecutor(functools.partial(build_task_services, ws.settings), max_workers=2)
    try:
        yield pool
    finally:
        pool.shutdown(cancel=True)


def _until_running(pool: ProcessExecutor, task_id: int, timeout: float = 20.0) -> int:
    """The worker pid once task ``task_id`` has been handed to a worker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = pool.running().get(task_id)
        if pid is not None:
            return pid
        time.sleep(0.01)
    raise AssertionError(f"task {task_id} never started; running: {pool.running()}")


def _error(future: Future[TaskOutcome], timeout: float = 20.0) -> BaseException:
    error = future.exception(timeout)
    assert error is not None, "the future succeeded"
    return error


def test_diamond_runs_through_the_pool(ws: Workspace, flow_file: FlowWriter) -> None:
    run = pt.run(load_pipeline_file(flow_file(DIAMOND)), executor="process", workspace=ws)
    assert run.status == "completed", run.error
    assert run.data.join == 6 + 3


def test_killed_worker_fails_its_task_and_the_sibling_completes(
    ws: Workspace, flow_file: FlowWriter
) -> None:
    run = pt.run(load_pipeline_file(flow_file(KILLED)), executor="process", workspace=ws)
    assert run.status == "failed"
    assert {s.name: s.status for s in run} == {
        "root": "completed",
        "boom": "failed",
        "sibling": "completed",
    }
    boom = run["boom"].task
    assert boom is not None and boom.exception is not None
    assert boom.exception.type == "WorkerLostError"
    assert "signal 9 (SIGKILL)" in str(boom.exception) and "step 'boom'" in str(boom.exception)
    assert run.data.sibling == 2


def test_a_retry_after_a_killed_worker_completes_the_run(
    ws: Workspace, flow_file: FlowWriter, tmp_path: Path
) -> None:
    marker = tmp_path / "first-attempt-done"
    file = flow_file(
        f"""
import os, signal
from pathlib import Path

@pt.step(retries=1)
def fragile():
    marker = Path({str(marker)!r})
    if not marker.exists():
        marker.write_text("x")
        os.kill(os.getpid(), signal.SIGKILL)
    return "second time lucky"

pipeline = pt.Pipeline("fragile", [fragile])
"""
    )
    run = pt.run(load_pipeline_file(file), executor="process", workspace=ws)
    assert run.status == "completed", run.error
    attempts = run["fragile"].tasks
    assert [t.status for t in attempts] == ["failed", "completed"]
    assert attempts[0].exception is not None and "SIGKILL" in str(attempts[0].exception)
    assert run.data.fragile == "second time lucky"


def test_a_worker_that_exits_is_replaced(executor: ProcessExecutor, tasks: Tasks) -> None:
    lost = executor.submit(tasks.payload("quit", code=3))
    error = _error(lost)
    assert isinstance(error, WorkerLostError)
    assert "exited with code 3 while running step 'quit'" in str(error)
    assert error.exitcode == 3 and error.step == "quit"
    again = executor.submit(tasks.payload("nap", seconds=0.0)).result(20)
    assert again.status is TaskStatus.COMPLETED


def test_cancel_a_running_task_stops_its_worker(executor: ProcessExecutor, tasks: Tasks) -> None:
    payload = tasks.payload("nap")
    future = executor.submit(payload)
    pid = _until_running(executor, payload.task_id)
    assert tasks.ws.store.get_task(payload.task_id) is not None
    started = time.monotonic()
    assert executor.cancel_task(payload.task_id) is True
    error = _error(future)
    assert time.monotonic() - started < 4.0, "SIGTERM alone should stop a sleeping step"
    assert isinstance(error, TaskCancelledError) and not isinstance(error, WorkerLostError)
    assert "step 'nap'" in str(error) and "SIGTERM" in str(error)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert executor.running() == {}
    assert executor.cancel_task(payload.task_id) is False
    # The replacement serves the next task.
    outcome = executor.submit(tasks.payload("nap", seconds=0.0)).result(20)
    assert outcome.status is TaskStatus.COMPLETED


def test_cancel_kills_a_task_that_ignores_sigterm(
    executor: ProcessExecutor, tasks: Tasks, tmp_path: Path
) -> None:
    ready = tmp_path / "sigterm-ignored"
    payload = tasks.payload("stubborn", ready=str(ready))
    future = executor.submit(payload)
    deadline = time.monotonic() + 20
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ready.exists(), "the step never started"
    started = time.monotonic()
    assert executor.cancel_task(payload.task_id, grace_s=0.3)
    error = _error(future)
    assert 0.25 < time.monotonic() - started < 5.0
    assert isinstance(error, TaskCancelledError) and "SIGKILL" in str(error)


def test_cancel_a_queued_task(ws: Workspace, tasks: Tasks) -> None:
    pool = ProcessExecutor(functools.partial(build_task_services, ws.settings), max_workers=1)
    try:
        busy, queued = tasks.payload("nap"), tasks.payload("nap", seconds=0.0)
        first, second = pool.submit(busy), pool.submit(queued)
        _until_running(pool, busy.task_id)
        assert pool.cancel_task(queued.task_id) is True
        assert second.cancelled()
        with pytest.raises(CancelledError):
            second.result()
        assert pool.cancel_task(10_000_000) is False
        assert list(pool.running()) == [busy.task_id]
        assert pool.cancel_task(busy.task_id, grace_s=0.5)
        assert isinstance(_error(first), TaskCancelledError)
    finally:
        pool.shutdown()
    assert _workers_alive() == []


def test_shutdown_with_cancel_stops_running_and_queued_tasks(ws: Workspace, tasks: Tasks) -> None:
    pool = ProcessExecutor(functools.partial(build_task_services, ws.settings), max_workers=1)
    running = pool.submit(tasks.payload("stubborn"))
    queued = pool.submit(tasks.payload("nap", seconds=0.0))
    _until_running(pool, tasks.count - 1)
    started = time.monotonic()
    pool.shutdown(cancel=True)
    assert time.monotonic() - started < 5.0
    assert queued.cancelled()
    assert isinstance(_error(running, timeout=0), TaskCancelledError)
    assert _workers_alive() == []
    pool.shutdown(cancel=True)
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(tasks.payload("nap"))


def test_shutdown_waits_for_queued_and_running_tasks(ws: Workspace, tasks: Tasks) -> None:
    pool = ProcessExecutor(functools.partial(build_task_services, ws.settings), max_workers=1)
    futures = [pool.submit(tasks.payload("nap", seconds=0.2)) for _ in range(3)]
    pool.shutdown()
    assert all(f.done() for f in futures)
    assert [f.result().status for f in futures] == [TaskStatus.COMPLETED] * 3
    assert _workers_alive() == []


def test_an_unused_executor_starts_nothing(ws: Workspace) -> None:
    before = _workers_alive()
    pool = ProcessExecutor(functools.partial(build_task_services, ws.settings), max_workers=3)
    assert pool.running() == {}
    assert _workers_alive() == before == []
    pool.shutdown()


def test_a_failure_outside_user_code_fails_the_future_and_keeps_the_worker(
    executor: ProcessExecutor, tasks: Tasks
) -> None:
    missing = dataclasses.replace(tasks.payload("nap"), pipeline_file=None)
    error = _error(executor.submit(missing))
    assert isinstance(error, PipetrailError) and "has no file for workers" in str(error)
    assert any("raised in worker process" in note for note in error.__notes__)
    outcome = executor.submit(tasks.payload("nap", seconds=0.0)).result(20)
    assert outcome.status is TaskStatus.COMPLETED


def test_other_tasks_survive_a_worker_death(executor: ProcessExecutor, tasks: Tasks) -> None:
    nap = tasks.payload("nap", seconds=1.0)
    survivor = executor.submit(nap)
    _until_running(executor, nap.task_id)
    lost = executor.submit(tasks.payload("quit", code=7))
    assert isinstance(_error(lost), WorkerLostError)
    outcome = survivor.result(20)
    assert outcome.status is TaskStatus.COMPLETED


def test_worker_signal_names_are_in_the_message(executor: ProcessExecutor, tasks: Tasks) -> None:
    payload = tasks.payload("nap")
    future = executor.submit(payload)
    pid = _until_running(executor, payload.task_id)
    psutil.Process(pid).send_signal(signal.SIGKILL)
    error = _error(future)
    assert isinstance(error, WorkerLostError)
    assert str(error).startswith(f"worker process {pid} died with signal 9 (SIGKILL)")
    assert "out-of-memory" in str(error)
