"""The engine on a real store (SQLite and PostgreSQL) with both executors."""

from __future__ import annotations

from pathlib import Path

import pytest

import pipetrail as pt
from pipetrail.client import Run
from pipetrail.core.status import TaskStatus
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

DIAMOND = """
import os, time

@pt.step
def load(n: int = 4):
    print("loading", n)
    return list(range(n))

@pt.step
def left(load, pause: float = 0.0):
    time.sleep(pause)
    pt.log_metric("left_sum", sum(load))
    return {"pid": os.getpid(), "start": time.time(), "end": (time.sleep(pause), time.time())[1]}

@pt.step
def right(load, pause: float = 0.0):
    time.sleep(pause)
    return {"pid": os.getpid(), "start": time.time(), "end": (time.sleep(pause), time.time())[1]}

@pt.step
def join(left, right, load):
    pt.set_tag("joined")
    return len(load)

pipeline = pt.Pipeline("diamond", [load, left, right, join])
"""

FAILING = """
@pt.step
def root():
    return 1

@pt.step
def boom(root, fail: bool = True):
    for i in range(5):
        pt.log_metric("before_crash", i, step=i)
    print("about to fail")
    if fail:
        raise ValueError("bad data in row 7")
    return root

@pt.step
def after_boom(boom):
    return boom

@pt.step
def last(after_boom):
    return after_boom

@pt.step
def independent(root):
    return root + 1

pipeline = pt.Pipeline("failing", [root, boom, after_boom, last, independent])
"""


def _run(ws: Workspace, file: Path, executor: str, params: dict[str, object] | None = None) -> Run:
    pipeline = load_pipeline_file(file)
    return pt.run(pipeline, params or {}, executor=executor, workspace=ws, tags=["t1"])


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_diamond_completes_and_records_everything(
    workspace: Workspace, flow_file: FlowWriter, executor: str
) -> None:
    run = _run(workspace, flow_file(DIAMOND), executor, {"n": 5})

    assert run.status == "completed" and run.successful and run.finished
    assert [s.name for s in run] == ["load", "left", "right", "join"]
    assert all(s.task is not None and s.task.status == "completed" for s in run)
    assert run.params == {"n": 5, "pause": 0.0}
    assert run.param_types == {"n": "int", "pause": "float"}
    assert run.trigger == "api"
    assert "t1" in run.user_tags and "joined" in run.user_tags
    assert f"pipeline_version:{run.version}" in run.system_tags
    assert any(t.startswith("user:") for t in run.system_tags)
    assert run.created_at <= run.started_at <= run.finished_at  # type: ignore[operator]
    assert run.data.join == 5
    assert run.data.load == [0, 1, 2, 3, 4]
    assert run.metrics == {"left_sum": 10.0}
    assert "loading 5" in run["load"].task.stdout  # type: ignore[union-attr]
    # The DAG as it ran, with each step's source.
    steps = {s["name"]: s for s in run.dag["steps"]}
    assert "def left(load" in steps["left"]["source"]
    assert [i["step"] for i in steps["join"]["inputs"]] == ["left", "right", "load"]
    # The code snapshot holds the pipeline file itself.
    code = run.code
    assert code is not None and any('pt.Pipeline("diamond"' in text for text in code.values())
    env = run.environment
    assert env is not None and env["python_version"].count(".") == 2
    assert "sqlalchemy" in env["packages"]
    # Lineage: join consumed the three upstream outputs, by hash, from their producing tasks.
    join_task = run["join"].task
    assert join_task is not None
    consumed = {a.name: a for a in join_task.inputs.all()}
    assert set(consumed) == {"left", "right", "load"}
    producers = {s.name: s.task.id for s in run if s.task is not None}
    producer = consumed["load"].task
    assert producer is not None and producer.id == producers["load"]
    assert consumed["load"].hash == run["load"].task.outputs.all()[0].hash  # type: ignore[union-attr]
    # Resources and timing per task.
    for step in run:
        task = step.task
        assert task is not None and task.duration is not None and task.duration >= 0
        assert task.record.peak_memory_bytes and task.record.peak_memory_bytes > 10_000_000
        assert task.record.cpu_time_s is not None
        assert task.record.host and task.record.pid


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_every_status_change_is_an_event(
    workspace: Workspace, flow_file: FlowWriter, executor: str
) -> None:
    run = _run(workspace, flow_file(DIAMOND), executor)
    events = run.events
    run_events = [e.status for e in events if e.task_id is None]
    assert run_events == ["initial", "running", "completed"]
    for step in run:
        assert step.task is not None
        history = [e.status for e in events if e.task_id == step.task.id]
        assert history == ["initial", "queued", "running", "completed"]
        times = [e.at for e in events if e.task_id == step.task.id]
        assert times == sorted(times)
    run_times = [e.at for e in events if e.task_id is None]
    assert run_times == sorted(run_times)


def test_independent_steps_run_in_parallel(workspace: Workspace, flow_file: FlowWriter) -> None:
    run = _run(workspace, flow_file(DIAMOND), "process", {"pause": 0.4})
    left, right = run.data.left, run.data.right
    assert left["pid"] != right["pid"]
    # The two branches overlap in time: each started before the other ended.
    assert left["start"] < right["end"] and right["start"] < left["end"]


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_failure_propagates_and_independent_branch_finishes(
    workspace: Workspace, flow_file: FlowWriter, executor: str
) -> None:
    run = _run(workspace, flow_file(FAILING), executor)

    assert run.status == "failed" and not run.successful
    status = {s.name: s.status for s in run}
    assert status == {
        "root": "completed",
        "boom": "failed",
        "after_boom": "upstream_failed",
        "last": "upstream_failed",
        "independent": "completed",
    }
    boom = run["boom"].task
    assert boom is not None
    assert str(boom.exception) == "ValueError: bad data in row 7"
    assert boom.traceback is not None and 'raise ValueError("bad data in row 7")' in boom.traceback
    assert "pipetrail/runtime" not in boom.traceback
    assert "about to fail" in boom.stdout
    assert run["after_boom"].task.record.failed_upstream == "boom"  # type: ignore[union-attr]
    assert run["last"].task.record.failed_upstream == "boom"  # type: ignore[union-attr]
    assert run.error is not None and "boom" in run.error and "bad data in row 7" in run.error
    # Metrics logged before the crash are in the store.
    history = run.metric_history("before_crash")
    assert [p.value for p in history] == [0, 1, 2, 3, 4]
    assert [p.step for p in history] == [0, 1, 2, 3, 4]
    assert run.data.independent == 2


def test_unserializable_output_names_step_output_and_type(
    workspace: Workspace, flow_file: FlowWriter
) -> None:
    file = flow_file(
        "@pt.step\ndef gen():\n    return (i for i in range(3))\n\npipeline = pt.Pipeline('gen', [gen])\n"
    )
    run = _run(workspace, file, "inline")
    task = run["gen"].task
    assert run.status == "failed" and task is not None
    assert task.exception is not None
    assert "'gen'" in str(task.exception) and "generator" in str(task.exception)


def test_retries_make_new_attempts(
    workspace: Workspace, flow_file: FlowWriter, tmp_path: Path
) -> None:
    marker = tmp_path / "attempts"
    file = flow_file(
        f"""
@pt.step(retries=2)
def flaky():
    from pathlib import Path
    path = Path({str(marker)!r})
    count = int(path.read_text()) if path.exists() else 0
    path.write_text(str(count + 1))
    if count < 2:
        raise IOError(f"flaky attempt {{count}}")
    return count

pipeline = pt.Pipeline("flaky", [flaky])
"""
    )
    run = _run(workspace, file, "inline")
    attempts = run["flaky"].tasks
    assert [t.attempt for t in attempts] == [0, 1, 2]
    assert [t.status for t in attempts] == ["failed", "failed", "completed"]
    assert str(attempts[0].exception) == "OSError: flaky attempt 0"
    assert run.status == "completed" and run.data.flaky == 2


def test_named_outputs_are_separate_artifacts(workspace: Workspace, flow_file: FlowWriter) -> None:
    file = flow_file(
        """
@pt.step(outputs=("train", "test"))
def split(n: int = 10):
    data = list(range(n))
    return data[:8], data[8:]

@pt.step
def fit(train):
    return sum(train)

@pt.step
def score(fit, test):
    return fit - sum(test)

pipeline = pt.Pipeline("named", [split, fit, score])
"""
    )
    run = _run(workspace, file, "process")
    assert run.status == "completed"
    assert run.data.train == list(range(8)) and run.data.test == [8, 9]
    assert run.data.score == sum(range(8)) - 17
    split_outputs = set(run["split"].task.outputs)  # type: ignore[union-attr]
    assert split_outputs == {"train", "test"}


def test_identical_outputs_are_stored_once(workspace: Workspace, flow_file: FlowWriter) -> None:
    file = flow_file(DIAMOND)
    first = _run(workspace, file, "inline")
    root = Path(workspace.settings.artifacts_url)
    files_after_first = sorted(p for p in root.rglob("*") if p.is_file())
    key_first = first["load"].task.outputs.all()[0].hash  # type: ignore[union-attr]
    stored = Path(workspace.cas.path_of(key_first))
    before = stored.stat()
    second = _run(workspace, file, "inline")
    files_after_second = sorted(p for p in root.rglob("*") if p.is_file())
    key_second = second["load"].task.outputs.all()[0].hash  # type: ignore[union-attr]
    assert key_first == key_second
    after = stored.stat()
    # Not rewritten: the same file, its content untouched; only its time is renewed (the put
    # claims it, so a garbage collection running meanwhile keeps it).
    assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size), "not rewritten"
    assert after.st_ctime_ns >= before.st_ctime_ns and after.st_mtime_ns >= before.st_mtime_ns
    # Only the outputs that differ (left/right carry pids and times) add files.
    added = set(files_after_second) - set(files_after_first)
    assert len(added) <= 2
    assert second.environment == first.environment
    assert workspace.store.count_environments() == 1


def test_log_artifact_and_log_input_record_lineage(
    workspace: Workspace, flow_file: FlowWriter, tmp_path: Path
) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "x.txt").write_text("x")
    file = flow_file(
        f"""
@pt.step
def read():
    pt.log_input({str(data)!r}, name="raw")
    pt.log_input({str(folder)!r})
    ref = pt.log_artifact({str(data)!r})
    obj = pt.log_artifact({{"k": [1, 2]}}, name="config")
    return ref.key

pipeline = pt.Pipeline("lineage", [read])
"""
    )
    run = _run(workspace, file, "process")
    task = run["read"].task
    assert run.status == "completed" and task is not None
    inputs = {a.name: a for a in task.inputs.all()}
    assert set(inputs) == {"raw", "images"}
    assert inputs["raw"].kind == "external" and inputs["raw"].source_uri == str(data.resolve())
    assert inputs["raw"].size == len("a,b\n1,2\n")
    outputs = {a.name: a for a in task.outputs.all()}
    assert outputs["data.csv"].content_type == "text/csv"
    assert run.data["data.csv"] == b"a,b\n1,2\n"
    assert run.data.config == {"k": [1, 2]}
    assert run.data.read == outputs["data.csv"].hash


def test_current_exposes_run_identity(workspace: Workspace, flow_file: FlowWriter) -> None:
    file = flow_file(
        """
@pt.step
def who(lr: float = 0.1):
    c = pt.current
    return {"run": c.run_id, "path": c.pathspec, "step": c.step_name, "attempt": c.attempt,
            "params": dict(c.params), "vars": dict(c.vars)}

pipeline = pt.Pipeline("who", [who])
"""
    )
    pipeline = load_pipeline_file(file)
    run = pt.run(
        pipeline, {"lr": 0.5}, variables={"env": "dev"}, executor="process", workspace=workspace
    )
    seen = run.data.who
    assert seen == {
        "run": run.id,
        "path": f"who/{run.id}/who/0",
        "step": "who",
        "attempt": 0,
        "params": {"lr": 0.5},
        "vars": {"env": "dev"},
    }
    assert run.variables == {"env": "dev"}


def test_log_functions_outside_a_step_say_so() -> None:
    with pytest.raises(pt.PipetrailError, match="outside a running step"):
        pt.log_metric("x", 1.0)


def test_task_status_constants_cover_design() -> None:
    assert {s.value for s in TaskStatus} == {
        "initial",
        "queued",
        "running",
        "completed",
        "failed",
        "cancelled",
        "upstream_failed",
        "condition_failed",
    }


def test_parameter_values_of_classes_defined_in_the_pipeline_file(
    workspace: Workspace, flow_file: FlowWriter
) -> None:
    file = flow_file(
        """
from dataclasses import dataclass

@dataclass
class Optimizer:
    lr: float = 0.1
    momentum: float = 0.9

@pt.step
def fit(opt: Optimizer = Optimizer(lr=0.3)):
    return {"type": type(opt).__name__, "lr": opt.lr}

pipeline = pt.Pipeline("dc", [fit])
"""
    )
    run = _run(workspace, file, "process")
    assert run.status == "completed", run.error
    assert run.data.fit == {"type": "Optimizer", "lr": 0.3}
    assert run.params == {"opt": {"lr": 0.3, "momentum": 0.9}}
