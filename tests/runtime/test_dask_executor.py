"""The Dask executor on a real cluster (a ``dask scheduler`` and two ``dask worker`` processes)
against PostgreSQL and the S3 test server, and on the local cluster pipetrail starts itself."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import pipetrail as pt
from pipetrail.config import Settings
from pipetrail.core.model import RunRecord, TaskRecord
from pipetrail.core.status import RunStatus, TaskStatus
from pipetrail.runtime.engine import RunRequest
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.storage.metadata.base import RunQuery
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter
from tests.dask_cluster import DaskTestCluster
from tests.servers import S3Server, free_port

#: Longest any wait for the cluster may take before the test fails (never reached when it works).
PATIENCE_S = 90.0

FAN_OUT = """
import time

@pt.step
def items() -> list:
    return [1, 2, 3, 4, 5, 6]

@pt.step(foreach="items", retries=1)
def work(items: int) -> int:
    print(f"working on {items}")
    if items == 3 and pt.current.attempt == 0:
        raise ValueError("item 3 fails on its first attempt")
    time.sleep(0.3)
    pt.log_metric("square", items * items)
    return items * items

@pt.step
def total(work: list) -> int:
    return sum(work)

@pt.step(retries=1)
def victim(work: list) -> str:
    if pt.current.attempt == 0:
        print("victim started", flush=True)
        time.sleep(120)
    return "survived"

pipeline = pt.Pipeline("fan_out_NAME", [items, work, total, victim])
"""

SLEEPER = """
import time
from pathlib import Path

@pt.step(TIMEOUT)
def sleeper(beat: str = "") -> int:
    print("sleeper started", flush=True)
    count = 0
    while True:
        count += 1
        Path(beat).write_text(str(count))
        time.sleep(0.05)

pipeline = pt.Pipeline("sleeper_NAME", [sleeper])
"""


@pytest.fixture
def cluster_workspace(
    dask_cluster: DaskTestCluster, pg_url: str, s3_artifacts: str, tmp_path: Path
) -> Iterator[Workspace]:
    """PostgreSQL and a fresh S3 bucket, with runs on the test cluster."""
    settings = Settings.for_home(
        tmp_path / "home",
        db_url=pg_url,
        artifacts_url=s3_artifacts,
        dask_address=dask_cluster.address,
        system_metrics_s=0.0,
    )
    ws = Workspace(settings)
    try:
        yield ws
    finally:
        ws.close()


def _start(
    ws: Workspace, file: Path, **params: object
) -> tuple[RunRecord, Callable[[], RunRecord]]:
    """Record a run of ``file`` on Dask and drive it in a thread; the run and a join."""
    pipeline = load_pipeline_file(file)
    request = RunRequest(pipeline=pipeline, params=pipeline.resolve_params(params))
    engine = ws.engine(executor="dask")
    run = engine.prepare(request)
    ended: list[RunRecord | BaseException] = []

    def drive() -> None:
        try:
            ended.append(engine.execute(run, request))
        except BaseException as exc:
            ended.append(exc)

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()

    def join() -> RunRecord:
        thread.join(PATIENCE_S)
        assert ended, "the run did not end"
        result = ended[0]
        if isinstance(result, BaseException):
            raise result
        return result

    return run, join


def _wait_task(
    ws: Workspace, run_id: int, step: str, ok: Callable[[TaskRecord], bool]
) -> TaskRecord:
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        for task in ws.store.tasks(run_id):
            if task.step == step and ok(task):
                return task
        time.sleep(0.05)
    raise AssertionError(f"no task of step {step!r} got there: {ws.store.tasks(run_id)}")


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _still(beat: Path) -> bool:
    """Whether the step writing ``beat`` has stopped writing it."""
    before = beat.read_text()
    time.sleep(0.5)
    return beat.read_text() == before


def test_fan_out_with_a_retry_and_a_killed_worker_on_the_cluster(
    cluster_workspace: Workspace,
    dask_cluster: DaskTestCluster,
    s3_server: S3Server,
    s3_artifacts: str,
    flow_file: FlowWriter,
) -> None:
    ws = cluster_workspace
    first_workers = dask_cluster.addresses()
    file = flow_file(FAN_OUT.replace("NAME", uuid.uuid4().hex[:6]))
    run, join = _start(ws, file)
    victim = _wait_task(
        ws, run.id, "victim", lambda t: t.status is TaskStatus.RUNNING and t.worker is not None
    )
    assert victim.worker is not None
    # Killed while its step runs (it has printed, so user code is under way).
    _wait_task(
        ws, run.id, "victim", lambda t: "victim started" in ws.store.logs(t.id).get("stdout", "")
    )
    dask_cluster.kill(victim.worker)
    dask_cluster.add_worker()  # later tests keep two workers
    ended = join()

    assert ended.status is RunStatus.COMPLETED, ended.error
    tasks = ws.store.tasks(run.id)
    work = [t for t in tasks if t.step == "work"]
    done = [t for t in work if t.status is TaskStatus.COMPLETED]
    assert sorted(t.task_index for t in done) == [0, 1, 2, 3, 4, 5]
    # Spread over both workers the cluster had; every row says where it ran.
    assert {t.worker for t in done} == first_workers
    for task in done:
        assert task.host == socket.gethostname()
        assert task.pid is not None and task.pid != os.getpid()
        assert task.cpu_time_s is not None and task.peak_memory_bytes
        assert task.started_at is not None and task.finished_at is not None
        assert ws.store.logs(task.id)["stdout"] == f"working on {task.task_index + 1}\n"
    # The retried item: attempt 0 failed with the step's own error, attempt 1 completed.
    third = sorted((t for t in work if t.task_index == 2), key=lambda t: t.attempt)
    assert [(t.attempt, t.status) for t in third] == [
        (0, TaskStatus.FAILED),
        (1, TaskStatus.COMPLETED),
    ]
    assert third[0].exception_type == "ValueError"
    assert "item 3 fails" in (third[0].exception_message or "")
    # The killed worker: that attempt failed as lost, naming the worker and the step, and the
    # step's retry ran it again elsewhere (Dask's own re-run of the lost task did not run it).
    attempts = sorted((t for t in tasks if t.step == "victim"), key=lambda t: t.attempt)
    assert [(t.attempt, t.status) for t in attempts] == [
        (0, TaskStatus.FAILED),
        (1, TaskStatus.COMPLETED),
    ]
    assert attempts[0].exception_type == "WorkerLostError"
    assert f"worker lost: {victim.worker} died while running step 'victim'" in (
        attempts[0].exception_message or ""
    )
    assert attempts[0].worker == victim.worker
    assert attempts[1].worker != victim.worker
    assert "victim started" in ws.store.logs(attempts[0].id)["stdout"]
    # Metrics, one point per completed item.
    points = ws.store.metric_history(run.id, "square")
    assert sorted(p.value for _, p in points) == [1, 4, 9, 16, 25, 36]
    # Lineage: total consumed each completed item's output, produced by that task.
    links = ws.store.links(run.id)
    outputs = {
        lk.task_id: lk.artifact.key
        for lk in links
        if lk.direction == "output" and lk.name == "work"
    }
    total = next(t for t in tasks if t.step == "total")
    inputs = [lk for lk in links if lk.task_id == total.id and lk.direction == "input"]
    assert sorted(lk.producer_task_id or 0 for lk in inputs) == sorted(t.id for t in done)
    assert {lk.artifact.key for lk in inputs} == {outputs[t.id] for t in done}
    # Every artifact and the code snapshot are in the bucket.
    bucket = s3_artifacts.removeprefix("s3://").split("/")[0]
    stored = set(s3_server.keys(bucket, "artifacts/"))
    for key in {lk.artifact.key for lk in links} | {ended.code_key or ""}:
        assert f"artifacts/{key[:2]}/{key[2:]}" in stored, key
    assert pt.Run(run.id, reader=ws.reader()).data["total"] == 91
    # Every attempt's future was released once recorded: the scheduler lets go of them all
    # (the release is a message; it is waited for, not assumed to be there already).
    deadline = time.monotonic() + PATIENCE_S
    while (held := [k for k in dask_cluster.task_keys() if f"-run{run.id}-" in k]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert held == []


def test_the_only_worker_killed_fails_the_attempt_as_lost(
    s3_server: S3Server, pg_url: str, s3_artifacts: str, flow_file: FlowWriter, tmp_path: Path
) -> None:
    # A cluster of its own, left with no worker: Dask would wait for one to re-run the task on;
    # the runner sees the worker gone and fails the attempt (no retries here: the run fails).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPETRAIL_", "PYTHON"))}
    alone = DaskTestCluster.start(tmp_path / "alone", {**env, **s3_server.env}, workers=1)
    try:
        settings = Settings.for_home(
            tmp_path / "home",
            db_url=pg_url,
            artifacts_url=s3_artifacts,
            dask_address=alone.address,
            system_metrics_s=0.0,
        )
        ws = Workspace(settings)
        try:
            source = SLEEPER.replace("TIMEOUT", "").replace("NAME", uuid.uuid4().hex[:6])
            run, join = _start(ws, flow_file(source), beat=str(tmp_path / "beat"))
            task = _wait_task(ws, run.id, "sleeper", lambda t: t.status is TaskStatus.RUNNING)
            # What the step printed reached the store while it ran (the spool is drained on a
            # timer); what a dead worker had not drained yet stays in its spool on that host.
            _wait_task(
                ws, run.id, "sleeper", lambda t: "started" in ws.store.logs(t.id).get("stdout", "")
            )
            (worker,) = alone.addresses()
            alone.kill(worker)
            ended = join()
            assert ended.status is RunStatus.FAILED
            row = ws.store.get_task(task.id)
            assert row.status is TaskStatus.FAILED
            assert row.exception_type == "WorkerLostError"
            assert f"worker lost: {worker} died while running step 'sleeper'" in (
                row.exception_message or ""
            )
            assert "sleeper started" in ws.store.logs(task.id)["stdout"]
        finally:
            ws.close()
    finally:
        alone.stop()


def test_local_cluster_on_sqlite(tmp_path: Path, flow_file: FlowWriter) -> None:
    file = flow_file(
        """
@pt.step
def items() -> list:
    return ["a", "b", "c"]

@pt.step(foreach="items")
def shout(items: str) -> str:
    print(items.upper())
    return items.upper()

@pt.step
def joined(shout: list) -> str:
    return "".join(shout)

pipeline = pt.Pipeline("local_dask", [items, shout, joined])
"""
    )
    ws = Workspace(Settings.for_home(tmp_path / "home", max_workers=2, system_metrics_s=0.0))
    try:
        run = pt.run(load_pipeline_file(file), executor="dask", workspace=ws)
        assert run.status == "completed"
        assert run.data["joined"] == "ABC"
        tasks = ws.store.tasks(run.id)
        assert all(t.worker and t.worker.startswith("tcp://127.0.0.1:") for t in tasks)
        shout = sorted((t for t in tasks if t.step == "shout"), key=lambda t: t.task_index)
        assert [ws.store.logs(t.id)["stdout"] for t in shout] == ["A\n", "B\n", "C\n"]
    finally:
        ws.close()


def test_cancel_stops_a_running_step_on_the_cluster(
    cluster_workspace: Workspace, flow_file: FlowWriter, tmp_path: Path
) -> None:
    ws = cluster_workspace
    beat = tmp_path / "beat"
    file = flow_file(SLEEPER.replace("TIMEOUT", "").replace("NAME", uuid.uuid4().hex[:6]))
    run, join = _start(ws, file, beat=str(beat))
    task = _wait_task(ws, run.id, "sleeper", lambda t: t.status is TaskStatus.RUNNING)
    _wait_task(ws, run.id, "sleeper", lambda _: beat.exists())
    pt.cancel(run.id, workspace=ws)
    ended = join()
    assert ended.status is RunStatus.CANCELLED
    row = ws.store.get_task(task.id)
    assert row.status is TaskStatus.CANCELLED
    assert row.pid is not None and _gone(row.pid)
    assert _still(beat)
    assert "sleeper started" in ws.store.logs(task.id)["stdout"]


def test_cancel_stops_running_and_waiting_attempts_on_the_cluster(
    cluster_workspace: Workspace, flow_file: FlowWriter, tmp_path: Path
) -> None:
    # Four attempts at once on two one-thread workers: two run, two wait in Dask.
    ws = cluster_workspace
    beats = [str(tmp_path / f"beat{i}") for i in range(4)]
    file = flow_file(
        f"""
import time
from pathlib import Path

@pt.step(foreach="beats")
def sleeper(beats: list = []) -> None:
    while True:
        Path(beats).write_text(str(time.monotonic()))
        time.sleep(0.05)

pipeline = pt.Pipeline("waiting_{uuid.uuid4().hex[:6]}", [sleeper])
"""
    )
    pipeline = load_pipeline_file(file)
    request = RunRequest(
        pipeline=pipeline, params=pipeline.resolve_params({"beats": beats}), max_parallel=4
    )
    engine = ws.engine(executor="dask")
    run = engine.prepare(request)
    thread = threading.Thread(target=engine.execute, args=(run, request), daemon=True)
    thread.start()
    deadline = time.monotonic() + PATIENCE_S
    while sum(Path(b).exists() for b in beats) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    pt.cancel(run.id, workspace=ws)
    thread.join(PATIENCE_S)
    assert ws.store.get_run(run.id).status is RunStatus.CANCELLED
    tasks = ws.store.tasks(run.id)
    assert {t.status for t in tasks} == {TaskStatus.CANCELLED}
    started = [t for t in tasks if t.pid is not None]
    assert len(started) == 2  # the waiting two never ran, not even after the cancel
    assert all(_gone(t.pid or 0) for t in started)
    assert sum(Path(b).exists() for b in beats) == 2
    assert all(_still(Path(b)) for b in beats if Path(b).exists())


def test_a_step_timeout_stops_the_step_on_the_cluster(
    cluster_workspace: Workspace, flow_file: FlowWriter, tmp_path: Path
) -> None:
    ws = cluster_workspace
    beat = tmp_path / "beat"
    # The timeout counts from submission: long enough for the step to be running when it ends.
    source = SLEEPER.replace("TIMEOUT", 'timeout="4s"').replace("NAME", uuid.uuid4().hex[:6])
    run, join = _start(ws, flow_file(source), beat=str(beat))
    _wait_task(ws, run.id, "sleeper", lambda _: beat.exists())
    ended = join()
    assert ended.status is RunStatus.FAILED
    (task,) = ws.store.tasks(run.id)
    assert task.status is TaskStatus.FAILED
    assert task.exception_type == "StepTimeoutError"
    assert "step 'sleeper' exceeded its timeout of 4 s" in (task.exception_message or "")
    assert task.pid is not None and _gone(task.pid)
    assert _still(beat)


def test_a_pipeline_a_worker_cannot_import_fails_naming_the_step(
    cluster_workspace: Workspace, flow_file: FlowWriter
) -> None:
    # A helper module beside the file: the runner imports it, workers do not have it (only
    # the files steps come from are in the code snapshot).
    helper = f"helper_{uuid.uuid4().hex[:8]}"
    (flow_file.folder / f"{helper}.py").write_text("FACTOR = 3\n")
    file = flow_file(
        f"""
import {helper}

@pt.step
def scaled() -> int:
    return {helper}.FACTOR * 2

pipeline = pt.Pipeline("unimportable_{uuid.uuid4().hex[:6]}", [scaled])
"""
    )
    run, join = _start(cluster_workspace, file)
    ended = join()
    assert ended.status is RunStatus.FAILED
    (task,) = cluster_workspace.store.tasks(run.id)
    assert task.status is TaskStatus.FAILED
    assert task.exception_type == "PipelineLoadError"
    message = task.exception_message or ""
    assert message.startswith("step 'scaled' cannot run on Dask worker tcp://127.0.0.1:")
    assert f"ModuleNotFoundError: No module named '{helper}'" in message
    assert "step 'scaled' failed" in (ended.error or "")


def test_an_output_that_cannot_be_stored_fails_naming_the_step(
    cluster_workspace: Workspace, flow_file: FlowWriter
) -> None:
    file = flow_file(
        f"""
import threading

@pt.step
def locked() -> object:
    return threading.Lock()

pipeline = pt.Pipeline("unpicklable_{uuid.uuid4().hex[:6]}", [locked])
"""
    )
    run, join = _start(cluster_workspace, file)
    ended = join()
    assert ended.status is RunStatus.FAILED
    (task,) = cluster_workspace.store.tasks(run.id)
    assert task.exception_type == "pipetrail.errors.SerializationError"
    assert "step 'locked': output 'locked'" in (task.exception_message or "")


def test_cli_bad_dask_address_is_one_line_and_records_nothing(
    tmp_path: Path, flow_file: FlowWriter
) -> None:
    file = flow_file(
        "@pt.step\ndef one() -> int:\n    return 1\n\npipeline = pt.Pipeline('one', [one])\n"
    )
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPETRAIL_")}
    env["PIPETRAIL_HOME"] = str(home)
    nobody = f"tcp://127.0.0.1:{free_port()}"
    run = ("run", str(file))
    cases = {
        (*run, "--dask-address", nobody): f"cannot reach the Dask scheduler at {nobody!r}",
        (*run, "--executor", "dask", "--dask-address", "nowhere"): "is not a Dask scheduler",
        (*run, "--executor", "inline", "--dask-address", nobody): "is for --executor dask",
        ("runs", "retry", "one/1", "--dask-address", "nowhere"): "is not a Dask scheduler",
        ("runs", "reproduce", "one/1", "--dask-address", "tcp://x"): "needs a host and a port",
    }
    for args, expected in cases.items():
        done = subprocess.run(
            [sys.executable, "-m", "pipetrail.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=PATIENCE_S,
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert expected in lines[0]
    if (home / "pipetrail.db").exists():
        ws = Workspace(Settings.for_home(home))
        try:
            assert ws.store.list_runs(RunQuery()) == []
        finally:
            ws.close()


def test_cli_runs_on_the_cluster(
    dask_cluster: DaskTestCluster,
    cluster_workspace: Workspace,
    s3_server: S3Server,
    flow_file: FlowWriter,
    tmp_path: Path,
) -> None:
    name = f"cli_{uuid.uuid4().hex[:6]}"
    file = flow_file(
        f"@pt.step\ndef hello() -> str:\n    print('hi')\n    return 'hi'\n\n"
        f"pipeline = pt.Pipeline({name!r}, [hello])\n"
    )
    s = cluster_workspace.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPETRAIL_")}
    env.update(s3_server.env)
    env.update(
        PIPETRAIL_HOME=str(tmp_path / "cli-home"),
        PIPETRAIL_DB=s.db_url,
        PIPETRAIL_ARTIFACTS=s.artifacts_url,
    )
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pipetrail.cli", "run", str(file), "-q"),
            *("--executor", "dask", "--dask-address", dask_cluster.address),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=PATIENCE_S,
    )
    assert done.returncode == 0, done.stderr
    (record,) = cluster_workspace.store.list_runs(RunQuery(pipeline=name))
    (task,) = cluster_workspace.store.tasks(record.id)
    assert task.status is TaskStatus.COMPLETED
    assert task.worker in dask_cluster.addresses()
    assert cluster_workspace.store.logs(task.id)["stdout"] == "hi\n"


def test_values_of_classes_from_the_pipeline_file_cross_workers_and_the_runner(
    cluster_workspace: Workspace, flow_file: FlowWriter
) -> None:
    # Workers import the snapshot's copy of the file under the module name the runner's file
    # has, so an instance pickled on a worker loads on another worker and in this process.
    file = flow_file(
        f"""
from dataclasses import dataclass

@dataclass
class Point:
    x: int
    y: int

@pt.step(foreach="xs")
def make(xs: list = [1, 2, 3]) -> Point:
    return Point(xs, xs * 2)

@pt.step
def summed(make: list) -> Point:
    return Point(sum(p.x for p in make), sum(p.y for p in make))

pipeline = pt.Pipeline("points_{uuid.uuid4().hex[:6]}", [make, summed])
"""
    )
    run, join = _start(cluster_workspace, file)
    ended = join()
    assert ended.status is RunStatus.COMPLETED, ended.error
    workers = {t.worker for t in cluster_workspace.store.tasks(run.id)}
    assert len(workers) == 2
    value = pt.Run(run.id, reader=cluster_workspace.reader()).data["summed"]
    assert type(value).__name__ == "Point" and (value.x, value.y) == (6, 12)
    assert type(value).__module__ == load_pipeline_file(file).steps["make"].func.__module__
