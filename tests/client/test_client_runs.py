"""The client's shape and rules, on real runs: tags, steps, data, pipelines, namespaces, reproduce."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import pipetrail as pt
from pipetrail.client import PipelineHistory, Run, list_runs, namespace
from pipetrail.runtime.control import reproduce_request, reproduction_report
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

FLOW = """
import random

@pt.step
def load(n: int = 4):
    return list(range(n))

@pt.step(foreach="load")
def square(load):
    return load * load

@pt.step
def total(square, noise: bool = False):
    pt.log_metric("total", sum(square))
    return sum(square) + (random.random() if noise else 0)

pipeline = pt.Pipeline("client_flow", [load, square, total])
"""


@pytest.fixture
def run(workspace: Workspace, flow_file: FlowWriter) -> Run:
    pipeline = load_pipeline_file(flow_file(FLOW))
    return pt.run(pipeline, {"n": 3}, executor="inline", workspace=workspace, tags=["exp"])


def test_run_shape(run: Run, workspace: Workspace) -> None:
    assert run.path_components == ["client_flow", str(run.id)]
    assert [s.name for s in run] == ["load", "square", "total"]
    assert "square" in run and "nope" not in run
    with pytest.raises(KeyError, match=r"has no step 'nope'; steps: \['load', 'square', 'total'\]"):
        run["nope"]
    assert len(run["square"].tasks) == 3
    assert run["total"].task is not None and run.end_task is not None
    assert run.end_task.pathspec == run["total"].task.pathspec
    assert run.data.square == [0, 1, 4], "foreach outputs read as the gathered list"
    assert run.data.total == 5
    assert run.successful and run.finished
    assert isinstance(run.parent, PipelineHistory) and run.parent.name == "client_flow"
    assert run.parent.latest_run is not None and run.parent.latest_run.id == run.id
    assert run.code is not None and "def square(load)" in run.code.steps["square"]
    assert "<table>" in run._repr_html_()
    assert repr(run) == f"Run('{run.pathspec}', status='completed')"
    assert not hasattr(run.data, "nope")


def test_tag_rules(run: Run) -> None:
    system = next(iter(run.system_tags))
    run.add_tag("keep")
    run.add_tags(["a", "b"])
    assert {"exp", "keep", "a", "b"} <= run.user_tags
    run.add_tag(system)  # already a system tag: nothing happens
    assert system not in run.user_tags and system in run.system_tags
    run.remove_tag("never-there")  # missing user tag: nothing happens
    with pytest.raises(pt.PipetrailError, match="cannot remove system tag"):
        run.remove_tag(system)
    run.replace_tag("a", "c")
    assert "a" not in run.user_tags and "c" in run.user_tags
    run.replace_tags(["b", "c"], ["d"])
    assert run.user_tags == frozenset({"exp", "keep", "d"})
    with pytest.raises(pt.PipetrailError, match="reserved for the system tags"):
        run.add_tag("user:mallory")
    assert Run(run.id, reader=run._reader).user_tags == run.user_tags, "changes are stored"


def test_pipeline_handle_lists_runs(run: Run, workspace: Workspace, flow_file: FlowWriter) -> None:
    reader = workspace.reader()
    second = pt.run(
        load_pipeline_file(flow_file(FLOW)), {"n": 2}, executor="inline", workspace=workspace
    )
    handle = pt.Pipeline("client_flow", reader=reader)
    runs = handle.runs()
    assert [r.id for r in runs] == [second.id, run.id], "newest first"
    assert handle.latest_run is not None and handle.latest_run.id == second.id
    assert handle.latest_successful_run is not None
    assert [r.id for r in handle.runs(status="completed", tags=["exp"])] == [run.id]
    assert [s.name for s in handle.spec.steps] == ["load", "square", "total"]
    frame = runs.to_pandas()
    assert list(frame["pathspec"]) == [second.pathspec, run.pathspec]
    assert "metrics.total" in frame.columns and "params.n" in frame.columns
    with pytest.raises(pt.PipetrailError, match="unknown status"):
        handle.runs(status="finished")


def test_namespace_scopes_listings(run: Run, workspace: Workspace) -> None:
    reader = workspace.reader()
    assert [r.id for r in list_runs(reader=reader)] == [run.id]
    try:
        namespace("user:somebody-else")
        assert list_runs(reader=reader) == []
        assert Run(run.pathspec, reader=reader).id == run.id, "one run by pathspec is not scoped"
        namespace(None)
        assert [r.id for r in list_runs(reader=reader)] == [run.id]
    finally:
        namespace(pt.client.runs.default_namespace())


def test_origin_of_a_retry_and_data_of_an_unfinished_run(
    workspace: Workspace, flow_file: FlowWriter, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    file = flow_file(
        f"""
import time
from pathlib import Path

@pt.step
def first():
    return "early"

@pt.step
def wait(first):
    while not Path({str(gate)!r}).exists():
        time.sleep(0.05)
    return "late"

pipeline = pt.Pipeline("unfinished", [first, wait])
"""
    )
    pipeline = load_pipeline_file(file)
    done: list[Run] = []
    runner = threading.Thread(
        target=lambda: done.append(pt.run(pipeline, executor="process", workspace=workspace))
    )
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = list_runs(pipeline="unfinished", reader=workspace.reader())
            if found and found[0].refresh()["first"].status == "completed":
                break
            time.sleep(0.1)
        live = found[0].refresh()
        assert not live.finished
        assert live.data.first == "early", "what finished so far is readable"
        assert "wait" not in live.data
    finally:
        gate.write_text("go")
        runner.join(timeout=30)
    finished = done[0]
    assert finished.data.wait == "late"
    retried = pt.retry(finished, from_step="wait", executor="inline", workspace=workspace)
    assert isinstance(retried, Run)
    assert retried.origin_pathspec == finished.pathspec
    assert finished.origin_pathspec is None


def test_reproduce_reports_determinism(run: Run, workspace: Workspace, tmp_path: Path) -> None:
    origin = workspace.store.get_run(run.id)
    request = reproduce_request(
        workspace.store, workspace.cas.get_bytes, origin, workdir=tmp_path / "repro"
    )
    assert request.pipeline.spec.file is not None and "repro" in request.pipeline.spec.file
    new = workspace.engine(executor="inline").run(request)
    report = reproduction_report(workspace.store, origin, new)
    assert report["deterministic"] is True
    assert report["environment"]["same"] is True
    assert {r["step"] for r in report["outputs"]} == {"load", "square", "total"}
    assert Run(new.id, reader=workspace.reader()).origin_pathspec == run.pathspec
    # A noisy step is found out.
    noisy = workspace.store.get_run(
        pt.run(request.pipeline, {"n": 3, "noise": True}, executor="inline", workspace=workspace).id
    )
    again = workspace.engine(executor="inline").run(
        reproduce_request(workspace.store, workspace.cas.get_bytes, noisy, workdir=tmp_path / "r2")
    )
    verdicts = {
        r["step"]: r["result"]
        for r in reproduction_report(workspace.store, noisy, again)["outputs"]
    }
    assert verdicts["total"] == "differs" and verdicts["load"] == "identical"


def test_run_handles_do_not_import_the_pipeline_definition() -> None:
    """client.runs sits below client.pipelines: a run's parent is its history, not a definition."""
    import grimp

    graph = grimp.build_graph("pipetrail")
    assert not graph.chain_exists("pipetrail.client.runs", "pipetrail.client.pipelines")


def test_iterating_a_pipeline_pages_through_every_run_newest_first(
    sqlite_workspace: Workspace,
) -> None:
    from itertools import islice

    from pipetrail.storage.metadata.base import NewRun

    @pt.step
    def only() -> int:
        return 1

    spec = pt.Pipeline("paged", [only]).spec
    store = sqlite_workspace.store
    ids = [
        store.create_run(
            NewRun(
                spec=spec,
                params={},
                param_types={},
                variables={},
                user="ana",
                host="box",
                trigger="cli",
                system_tags=("user:ana",),
            )
        ).id
        for _ in range(620)  # beyond the first pages (100, then 400)
    ]
    namespace(None)
    try:
        history = PipelineHistory("paged", reader=sqlite_workspace.reader())
        assert [r.id for r in history] == ids[::-1]
        assert [r.id for r in islice(history, 3)] == ids[::-1][:3]
        namespace("user:ana")
        assert len(list(history)) == 620
        namespace("user:bob")
        assert list(history) == []
    finally:
        namespace(pt.client.runs.default_namespace())
