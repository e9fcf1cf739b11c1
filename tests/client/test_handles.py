"""Step times, task exceptions and artifact handles, read back from real runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import pipetrail as pt
from pipetrail.cli.render import run_to_json
from pipetrail.client import Artifact, Run, Step, TaskException
from pipetrail.core.model import TaskRecord
from pipetrail.core.status import TaskStatus
from pipetrail.errors import UsageError
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.storage.artifacts.cas import digest_file
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

FLOW = """
import pathlib

@pt.step
def load(data: str = ""):
    pt.log_input(data, name="train.csv")
    pt.log_artifact({"rows": 3}, name="summary")
    return [float(x) for x in pathlib.Path(data).read_text().split()]

@pt.step(foreach="load", retries=1)
def square(load):
    if load == 2.0 and pt.current.attempt == 0:
        raise RuntimeError("flaky")
    return load * load

@pt.step
def total(square):
    return sum(square)

pipeline = pt.Pipeline("handles", [load, square, total])
"""

FAILING = """
@pt.step
def boom():
    raise ValueError("bad row 3")

pipeline = pt.Pipeline("handles_fail", [boom])
"""


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "train.csv"
    path.write_text("1 2 3\n")
    return path


@pytest.fixture
def run(workspace: Workspace, flow_file: FlowWriter, data: Path) -> Run:
    pipeline = load_pipeline_file(flow_file(FLOW))
    return pt.run(pipeline, {"data": str(data)}, executor="inline", workspace=workspace)


def test_step_times_span_every_task_and_retry(run: Run) -> None:
    step = run["square"]
    tasks = step.tasks
    assert sorted((t.record.task_index, t.attempt) for t in tasks) == [
        (0, 0),
        (1, 0),
        (1, 1),
        (2, 0),
    ], "the item 2.0 failed once and was retried"
    starts = [t.started_at for t in tasks if t.started_at is not None]
    ends = [t.finished_at for t in tasks if t.finished_at is not None]
    assert step.created_at == min(t.record.created_at for t in tasks)
    assert step.started_at == min(starts)
    assert step.finished_at == max(ends)
    assert step.finished_at is not None and step.started_at is not None
    assert step.started_at <= step.finished_at
    assert [s.finished_at is not None for s in run] == [True, True, True]


def test_step_times_are_none_while_unknown(run: Run) -> None:
    step = run["square"]
    records = [t.record for t in step.tasks]
    # The same step as it read while its retried task was still running.
    running = Step(run, step.name, [*records[:-1], _running(records[-1])])
    assert running.finished_at is None
    assert running.started_at == step.started_at
    empty = Step(run, step.name, [])
    assert (empty.created_at, empty.started_at, empty.finished_at) == (None, None, None)


def _running(record: TaskRecord) -> TaskRecord:
    return dataclasses.replace(record, status=TaskStatus.RUNNING, finished_at=None)


def test_task_exception_is_an_object_that_reads_as_before(
    workspace: Workspace, flow_file: FlowWriter
) -> None:
    failed = pt.run(load_pipeline_file(flow_file(FAILING)), executor="inline", workspace=workspace)
    task = failed["boom"].task
    assert task is not None
    error = task.exception
    assert isinstance(error, TaskException)
    assert (error.type, error.message) == ("ValueError", "bad row 3")
    assert str(error) == "ValueError: bad row 3"
    assert error.traceback == task.traceback
    assert error.traceback is not None and 'raise ValueError("bad row 3")' in error.traceback
    assert "pipetrail/runtime" not in error.traceback, "the traceback starts at user code"
    assert run_to_json(failed)["steps"][0]["tasks"][0]["exception"] == "ValueError: bad row 3"


def test_a_task_that_did_not_fail_has_no_exception(run: Run) -> None:
    retried = [t for t in run["square"].tasks if t.record.task_index == 1]
    assert [str(t.exception) for t in retried if t.exception] == ["RuntimeError: flaky"]
    assert retried[-1].exception is None


def test_inputs_and_outputs_are_artifact_handles_by_name(run: Run, data: Path) -> None:
    load = run["load"].task
    assert load is not None
    assert list(load.inputs) == ["train.csv"]
    assert list(load.outputs) == ["load", "summary"], "in the order the store keeps"
    external = load.inputs["train.csv"]
    assert isinstance(external, Artifact)
    assert external.hash == digest_file(data)[0]
    assert external.size == data.stat().st_size
    assert (external.kind, external.serializer) == ("external", "external")
    assert external.source_uri == str(data.resolve())
    assert external.task is None, "nothing in the store produced an external input"
    with pytest.raises(UsageError, match="external input recorded by hash only"):
        _ = external.data

    summary = load.outputs["summary"]
    assert isinstance(summary, Artifact)
    assert (summary.name, summary.kind, summary.type) == ("summary", "logged", "builtins.dict")
    assert summary.serializer and summary.content_type and summary.size > 0
    assert summary.source_uri is None
    assert summary.data == {"rows": 3}
    assert summary.task is not None and summary.task.pathspec == load.pathspec

    with pytest.raises(KeyError, match=r"no artifact 'nope'; artifacts: \['load', 'summary'\]"):
        load.outputs["nope"]


def test_an_input_leads_to_its_producing_task_and_a_gather_keeps_every_item(run: Run) -> None:
    load = run["load"].task
    total = run["total"].task
    assert load is not None and total is not None
    first = run["square"].tasks[0]
    received = first.inputs["load"]
    assert isinstance(received, Artifact)
    assert received.task is not None and received.task.pathspec == load.pathspec
    loaded = load.outputs["load"]
    assert isinstance(loaded, Artifact) and received.hash == loaded.hash
    assert received.data == [1.0, 2.0, 3.0]

    gathered = total.inputs["square"]
    assert isinstance(gathered, tuple), "one artifact per foreach task, in task order"
    assert [a.data for a in gathered] == [1.0, 4.0, 9.0]
    assert [a.task.record.task_index for a in gathered if a.task] == [0, 1, 2]
    assert len(total.inputs.all()) == 3


def test_runs_show_json_names_the_content_hash_hash(run: Run, data: Path) -> None:
    document = run_to_json(run)
    load = document["steps"][0]["tasks"][0]
    [external] = load["inputs"]
    assert external["hash"] == digest_file(data)[0] and "key" not in external
    assert [o["name"] for o in load["outputs"]] == ["load", "summary"]
    square = document["steps"][1]
    assert square["started_at"] == run["square"].started_at.isoformat()  # type: ignore[union-attr]
    assert square["finished_at"] == run["square"].finished_at.isoformat()  # type: ignore[union-attr]
    produced = document["steps"][2]["tasks"][0]["inputs"]
    latest = {t.record.task_index: t.id for t in run["square"].tasks}
    assert [i["producer_task_id"] for i in produced] == [latest[i] for i in sorted(latest)]
