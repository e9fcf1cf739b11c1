"""Failures under control, in process: retries, conditions, allow_failure, foreach, timeouts, resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import pipetrail as pt
from pipetrail.client import Run
from pipetrail.core.status import RunStatus
from pipetrail.runtime.control import retry_request
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

COUNTER = """
from pathlib import Path

COUNTS = Path({counts!r})

def count(name):
    with COUNTS.open("a") as handle:
        handle.write(name + "\\n")
"""


def _counts(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    names = path.read_text().split()
    return {name: names.count(name) for name in set(names)}


def _run(ws: Workspace, file: Path, executor: str = "inline", **params: object) -> Run:
    return pt.run(load_pipeline_file(file), params, executor=executor, workspace=ws)


def _retry(ws: Workspace, run: Run, **options: object) -> Run:
    request, _ = retry_request(ws.store, ws.store.get_run(run.id), **options)  # type: ignore[arg-type]
    record = ws.engine(executor="inline").run(request)
    return Run(record.id, reader=ws.reader())


def test_retry_delay_and_backoff_space_the_attempts(
    workspace: Workspace, flow_file: FlowWriter
) -> None:
    file = flow_file(
        """
@pt.step(retries=2, retry_delay="0.2s", backoff=2.0)
def flaky():
    if pt.current.attempt < 2:
        raise ConnectionError(f"attempt {pt.current.attempt}")
    return pt.current.attempt

pipeline = pt.Pipeline("backoff", [flaky])
"""
    )
    run = _run(workspace, file)
    tasks = run["flaky"].tasks
    assert [t.status for t in tasks] == ["failed", "failed", "completed"]
    assert [t.attempt for t in tasks] == [0, 1, 2]
    gaps = [
        (tasks[i + 1].started_at - tasks[i].finished_at).total_seconds()  # type: ignore[operator]
        for i in range(2)
    ]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps
    assert run.data.flaky == 2


def test_retry_on_limits_which_errors_are_retried(
    workspace: Workspace, flow_file: FlowWriter
) -> None:
    file = flow_file(
        """
@pt.step(retries=3, retry_on=(IOError,))
def strict():
    raise ValueError("bad input is not retried")

pipeline = pt.Pipeline("strict", [strict])
"""
    )
    run = _run(workspace, file)
    assert [t.status for t in run["strict"].tasks] == ["failed"]
    assert run.status == "failed"


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_conditions_skip_steps_and_their_dependants(
    workspace: Workspace, flow_file: FlowWriter, executor: str
) -> None:
    file = flow_file(
        """
@pt.step
def data(n: int = 3):
    return list(range(n))

@pt.step(when=lambda augment: augment)
def augmented(data, augment: bool = False):
    return data + data

@pt.step
def needs_augmented(augmented):
    return len(augmented)

@pt.step(optional=("augmented",))
def either(data, augmented):
    return len(augmented or data)

@pt.step(when=lambda data: len(data) > 2)
def big_enough(data):
    return True

pipeline = pt.Pipeline("cond", [data, augmented, needs_augmented, either, big_enough])
"""
    )
    run = _run(workspace, file, executor)
    status = {s.name: s.status for s in run}
    assert status == {
        "data": "completed",
        "augmented": "condition_failed",
        "needs_augmented": "condition_failed",
        "either": "completed",
        "big_enough": "completed",
    }
    assert run.status == "completed"
    assert run.data.either == 3
    again = _run(workspace, file, executor, augment=True)
    assert again.data.needs_augmented == 6 and again.data.either == 6


def test_allow_failure_lets_the_run_go_on(workspace: Workspace, flow_file: FlowWriter) -> None:
    file = flow_file(
        """
@pt.step(allow_failure=True)
def optional_enrichment():
    raise RuntimeError("enrichment service down")

@pt.step
def report(optional_enrichment):
    return "plain" if optional_enrichment is None else "enriched"

pipeline = pt.Pipeline("catch", [optional_enrichment, report])
"""
    )
    run = _run(workspace, file)
    assert run.status == "completed"
    task = run["optional_enrichment"].task
    assert task is not None and task.status == "failed" and task.record.allowed_failure
    assert str(task.exception) == "RuntimeError: enrichment service down"
    assert run.data.report == "plain"


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_foreach_runs_one_task_per_item_and_gathers_in_order(
    workspace: Workspace, flow_file: FlowWriter, executor: str
) -> None:
    file = flow_file(
        """
@pt.step
def shards(n: int = 5):
    return [f"s{i}" for i in range(n)]

@pt.step(foreach="shards", max_parallel=2)
def process(shards):
    pt.log_metric("length", len(shards))
    return shards.upper()

@pt.step(foreach="seeds")
def seeded(seeds: list = [1, 2, 3]):
    return seeds * 10

@pt.step
def combine(process, seeded):
    return {"process": process, "seeded": seeded}

pipeline = pt.Pipeline("fan", [shards, process, seeded, combine])
"""
    )
    run = _run(workspace, file, executor)
    assert run.status == "completed", run.error
    assert run.data.combine == {"process": ["S0", "S1", "S2", "S3", "S4"], "seeded": [10, 20, 30]}
    tasks = run["process"].tasks
    assert sorted(t.record.task_index for t in tasks) == [0, 1, 2, 3, 4]
    assert {t.pathspec for t in tasks} == {f"fan/{run.id}/process/{i}" for i in range(5)}
    assert len(run.metric_history("length")) == 5


def test_foreach_over_nothing_completes_with_an_empty_list(
    workspace: Workspace, flow_file: FlowWriter
) -> None:
    file = flow_file(
        """
@pt.step(foreach="items")
def each(items: list = []):
    return items

@pt.step
def total(each):
    return len(each)

pipeline = pt.Pipeline("empty", [each, total])
"""
    )
    run = _run(workspace, file)
    assert run.status == "completed" and run.data.total == 0


def test_retry_of_a_partly_failed_foreach_runs_only_the_failed_items(
    workspace: Workspace, flow_file: FlowWriter, tmp_path: Path
) -> None:
    counts = tmp_path / "counts"
    fail_flag = tmp_path / "fail"
    fail_flag.write_text("yes")
    file = flow_file(
        COUNTER.format(counts=str(counts))
        + f"""
@pt.step
def items():
    count("items")
    return [1, 2, 3, 4]

@pt.step(foreach="items")
def square(items):
    count(f"square{{items}}")
    if items == 3 and Path({str(fail_flag)!r}).exists():
        raise ValueError("item 3 is bad today")
    return items * items

@pt.step
def total(square):
    count("total")
    return sum(square)

pipeline = pt.Pipeline("partial", [items, square, total])
"""
    )
    first = _run(workspace, file)
    assert first.status == "failed"
    assert sorted(t.status for t in first["square"].tasks) == ["completed"] * 3 + ["failed"]
    assert first["total"].status == "upstream_failed"
    fail_flag.unlink()
    second = _retry(workspace, first)
    assert second.status == "completed", second.error
    assert second.origin_pathspec == first.pathspec
    assert second.data.total == 1 + 4 + 9 + 16
    assert _counts(counts) == {
        "items": 1,
        "square1": 1,
        "square2": 1,
        "square3": 2,
        "square4": 1,
        "total": 1,
    }
    reused = [t for t in second["square"].tasks if t.record.reused_from_task_id is not None]
    assert len(reused) == 3
    assert Run(first.id, reader=workspace.reader()).status == "failed", "the origin is unchanged"


def test_resume_reuses_completed_steps_and_honours_from_and_params(
    workspace: Workspace, flow_file: FlowWriter, tmp_path: Path
) -> None:
    counts = tmp_path / "counts"
    flag = tmp_path / "fail"
    flag.write_text("yes")
    file = flow_file(
        COUNTER.format(counts=str(counts))
        + f"""
@pt.step
def a():
    count("a")
    return 1

@pt.step
def b(a):
    count("b")
    if Path({str(flag)!r}).exists():
        raise IOError("flaky b")
    return a + 1

@pt.step
def c(b, scale: int = 1):
    count("c")
    return b * scale

pipeline = pt.Pipeline("resume", [a, b, c])
"""
    )
    origin = _run(workspace, file)
    assert origin.status == "failed"
    flag.unlink()
    retried = _retry(workspace, origin)
    assert retried.status == "completed" and retried.data.c == 2
    assert _counts(counts) == {"a": 1, "b": 2, "c": 1}
    a_task = retried["a"].task
    assert a_task is not None and a_task.record.reused_from_task_id == origin["a"].task.id  # type: ignore[union-attr]
    assert retried.trigger == "retry"
    # A parameter read only by c: only c runs again.
    changed = _retry(workspace, retried, overrides={"scale": "5"})
    assert changed.data.c == 10 and changed.params["scale"] == 5
    assert _counts(counts) == {"a": 1, "b": 2, "c": 2}
    # --from a: everything runs again.
    _retry(workspace, changed, from_step="a")
    assert _counts(counts) == {"a": 2, "b": 3, "c": 3}
    # Changed code re-runs that step and what follows it.
    file.write_text(file.read_text().replace("return a + 1", "return a + 2"))
    _, plan = retry_request(workspace.store, workspace.store.get_run(changed.id))
    assert {p.step: p.action for p in plan} == {"a": "reuse", "b": "run", "c": "run"}
    assert "code changed" in plan[1].reason


def test_retry_of_a_running_run_is_refused(workspace: Workspace, flow_file: FlowWriter) -> None:
    file = flow_file("@pt.step\ndef a():\n    return 1\n\npipeline = pt.Pipeline('r', [a])\n")
    run = _run(workspace, file)
    running = dataclasses.replace(workspace.store.get_run(run.id), status=RunStatus.RUNNING)
    with pytest.raises(pt.PipetrailError, match="still running"):
        retry_request(workspace.store, running)


@pytest.mark.parametrize("executor", ["inline", "process"])
@pytest.mark.parametrize(
    ("policy", "task_status", "run_status"),
    [
        ("failed", "failed", "failed"),
        ("cancelled", "cancelled", "cancelled"),
        ("warning", "completed", "completed"),
    ],
)
def test_step_timeout_policies(
    workspace: Workspace,
    flow_file: FlowWriter,
    executor: str,
    policy: str,
    task_status: str,
    run_status: str,
) -> None:
    file = flow_file(
        f"""
import time

@pt.step(timeout="0.5s", on_timeout={policy!r})
def slow():
    time.sleep(2.0)
    return "done"

pipeline = pt.Pipeline("tmo", [slow])
"""
    )
    run = _run(workspace, file, executor)
    task = run["slow"].task
    assert task is not None
    assert task.status == task_status
    assert run.status == run_status
    if policy == "warning":
        notes = [e for e in run.events if e.message and "timeout" in e.message]
        assert notes, "the breach is recorded"
        assert run.data.slow == "done"
    else:
        assert task.exception is not None and "timeout of 0.5 s" in str(task.exception)
        assert task.duration is None or task.duration < 1.8


def test_run_timeout_stops_the_run(workspace: Workspace, flow_file: FlowWriter) -> None:
    file = flow_file(
        """
import time

@pt.step
def slow():
    time.sleep(5)

pipeline = pt.Pipeline("run_tmo", [slow], timeout="1s")
"""
    )
    run = _run(workspace, file, "process")
    assert run.status == "failed"
    assert run.error is not None and "run exceeded its timeout of 1 s" in run.error
    assert run.duration is not None and run.duration < 4


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("@pt.step(retries=-1)\ndef a():\n    pass\n", "retries must be an integer >= 0"),
        ("@pt.step(timeout='soon')\ndef a():\n    pass\n", "cannot read 'soon' as a duration"),
        ("@pt.step(on_timeout='explode')\ndef a():\n    pass\n", "on_timeout must be one of"),
        ("@pt.step(max_parallel=0)\ndef a():\n    pass\n", "max_parallel must be an integer >= 1"),
        (
            "@pt.step(foreach='nope')\ndef a():\n    pass\n",
            "foreach='nope' is not one of its arguments",
        ),
        ("@pt.step(when=lambda missing: True)\ndef a():\n    pass\n", "takes 'missing'"),
    ],
)
def test_bad_options_are_definition_errors(
    flow_file: FlowWriter, source: str, message: str
) -> None:
    file = flow_file(source + "\npipeline = pt.Pipeline('bad', [a])\n")
    with pytest.raises(pt.DefinitionError, match=message):
        load_pipeline_file(file)


def test_a_zero_run_limit_is_refused() -> None:
    @pt.step
    def a() -> None:
        return None

    with pytest.raises(pt.DefinitionError, match="max_concurrent_runs must be an integer >= 1"):
        pt.Pipeline("zero", [a], max_concurrent_runs=0)
