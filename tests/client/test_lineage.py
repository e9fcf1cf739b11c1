"""Lineage on real runs: from a model back to its data file, from the data file to every run."""

from __future__ import annotations

import collections
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import pipetrail as pt
from pipetrail.client import Artifact, Reader, Run
from pipetrail.client import lineage_graph as lineage_module
from pipetrail.client.lineage_graph import LineageGraph, TaskNode, lineage, resolve_artifact
from pipetrail.errors import NotFoundError, UsageError
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.storage.artifacts.cas import digest_file
from pipetrail.storage.metadata.base import MetadataStore, RunQuery
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

FLOW = """
import pathlib

@pt.step
def prepare(data: str = "", scale: float = 1.0):
    pt.log_input(data, name="train.csv")
    return [float(x) * scale for x in pathlib.Path(data).read_text().split()]

@pt.step(outputs=["model", "report"])
def train(prepare, lr: float = 0.1):
    weights = [x * lr for x in prepare]
    return {"model": {"weights": weights}, "report": f"trained with lr={lr}"}

@pt.step
def evaluate(model, prepare):
    score = sum(model["weights"]) / len(prepare)
    pt.log_metric("score", score)
    return score

pipeline = pt.Pipeline("lineage_flow", [prepare, train, evaluate])
"""

MANY = """
@pt.step
def many():
    for i in range(20):
        pt.log_artifact({"value": i}, name=f"v{i}")
    return 0

pipeline = pt.Pipeline("many", [many])
"""


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "train.csv"
    path.write_text("1 2 3 4\n")
    return path


@pytest.fixture
def runs(workspace: Workspace, flow_file: FlowWriter, data: Path) -> tuple[Run, Run]:
    pipeline = load_pipeline_file(flow_file(FLOW))
    first = pt.run(pipeline, {"data": str(data), "lr": 0.1}, executor="inline", workspace=workspace)
    second = pt.run(
        pipeline, {"data": str(data), "lr": 0.5}, executor="inline", workspace=workspace
    )
    return first, second


def _model_key(run: Run) -> str:
    task = run["train"].task
    assert task is not None
    model = task.outputs["model"]
    assert isinstance(model, Artifact)
    return model.hash


def _tasks(graph: LineageGraph) -> dict[str, TaskNode]:
    return {t.pathspec: t for t in graph.tasks}


def _edges(graph: LineageGraph) -> set[tuple[str, str, str]]:
    """Edges as (source, kind, target) with readable ends: task pathspecs and artifact names."""

    def name(node_id: str) -> str:
        node = graph.node(node_id)
        return node.pathspec if isinstance(node, TaskNode) else "|".join(node.names)

    return {(name(e.source), e.kind, name(e.target)) for e in graph.edges}


def test_up_from_a_model_reaches_the_data_file_params_and_code(
    workspace: Workspace, runs: tuple[Run, Run], data: Path
) -> None:
    first, _ = runs
    key = _model_key(first)

    graph = lineage(key[:10], direction="up", reader=workspace.reader())

    assert graph.target == key and graph.target_kind == "artifact"
    assert graph.roots == (f"artifact:{key}",) and not graph.truncated
    p = first.pathspec
    assert set(_tasks(graph)) == {f"{p}/train/0", f"{p}/prepare/0"}
    train, prepare = _tasks(graph)[f"{p}/train/0"], _tasks(graph)[f"{p}/prepare/0"]
    assert train.params == {"lr": 0.1} and train.status == "completed" and train.attempt == 0
    assert prepare.params == {"data": str(data), "scale": 1.0}
    steps = {s["name"]: s for s in first.dag["steps"]}
    assert train.source_hash == steps["train"]["source_hash"] and train.source_hash
    (csv,) = graph.external_inputs
    assert csv.hash == digest_file(data)[0], "the exact input file, by content hash"
    assert csv.source_uri == str(data.resolve()) and csv.names == ("train.csv",)
    assert _edges(graph) == {
        (f"{p}/train/0", "produced", "model"),
        ("prepare", "consumed", f"{p}/train/0"),
        (f"{p}/prepare/0", "produced", "prepare"),
        ("train.csv", "consumed", f"{p}/prepare/0"),
    }
    assert graph.runs == [p], "the other run made another model"


def test_down_from_the_data_file_reaches_every_run_that_used_it(
    workspace: Workspace, runs: tuple[Run, Run], data: Path
) -> None:
    first, second = runs
    data_key = digest_file(data)[0]

    graph = lineage(data_key, direction="down", reader=workspace.reader())

    assert sorted(graph.runs) == sorted([first.pathspec, second.pathspec])
    assert {t.step for t in graph.tasks} == {"prepare", "train", "evaluate"}
    assert len(graph.tasks) == 6
    names = {name for a in graph.artifacts for name in a.names}
    assert {"train.csv", "prepare", "model", "report", "evaluate"} <= names
    models = {a.hash for a in graph.artifacts if "model" in a.names}
    assert models == {_model_key(first), _model_key(second)}
    # Both evaluate tasks consumed the same prepared data, each its own run's model.
    consumed = {(s, t) for s, kind, t in _edges(graph) if kind == "consumed"}
    assert ("model", f"{first.pathspec}/evaluate/0") in consumed
    assert ("model", f"{second.pathspec}/evaluate/0") in consumed


def test_depth_counts_task_hops(workspace: Workspace, runs: tuple[Run, Run], data: Path) -> None:
    first, _ = runs
    reader = workspace.reader()
    key = _model_key(first)

    only = lineage(key, direction="up", depth=0, reader=reader)
    assert only.tasks == () and [a.hash for a in only.artifacts] == [key] and only.truncated

    one = lineage(key, direction="up", depth=1, reader=reader)
    assert [t.step for t in one.tasks] == ["train"] and one.truncated
    assert {n for a in one.artifacts for n in a.names} == {"model", "prepare"}

    two = lineage(key, direction="up", depth=2, reader=reader)
    assert not two.truncated and len(two.external_inputs) == 1

    down = lineage(digest_file(data)[0], direction="down", depth=1, reader=reader)
    assert {t.step for t in down.tasks} == {"prepare"} and len(down.tasks) == 2
    assert down.truncated


def test_lineage_of_a_run(workspace: Workspace, runs: tuple[Run, Run]) -> None:
    first, second = runs

    up = lineage(first, direction="up")
    assert up.target == first.pathspec and up.target_kind == "run"
    assert {t.step for t in up.tasks} == {"prepare", "train", "evaluate"}
    assert up.runs == [first.pathspec] and len(up.external_inputs) == 1
    assert len(up.roots) == 4, "prepare, model, report, evaluate"

    down = lineage(first.pathspec, direction="down", reader=workspace.reader())
    assert second.pathspec in down.runs, "the second run read the same data file"


def test_to_dict_dot_and_mermaid(workspace: Workspace, runs: tuple[Run, Run]) -> None:
    first, _ = runs
    graph = lineage(first, direction="up")

    as_json = json.loads(json.dumps(graph.to_dict()))
    assert as_json["target"] == first.pathspec and as_json["direction"] == "up"
    ids = {n["id"] for n in as_json["artifacts"] + as_json["tasks"]}
    assert all(e["source"] in ids and e["target"] in ids for e in as_json["edges"])
    csv = next(a for a in as_json["artifacts"] if a["external"])
    assert csv["source_uri"] and csv["source_uris"] == [csv["source_uri"]]
    assert csv["id"] == f"artifact:{csv['hash']}" and "key" not in csv, "hash, as everywhere"

    dot = graph.to_dot()
    assert dot.startswith("digraph lineage {") and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    for t in graph.tasks:
        assert f'"{t.id}" [shape=box' in dot
    for a in graph.artifacts:
        shape = "note" if a.external else "ellipse"
        assert f'"{a.id}" [shape={shape}' in dot
    for e in graph.edges:
        assert f'"{e.source}" -> "{e.target}"' in dot
    assert "lr=0.1" in dot and '"train.csv' in dot

    mermaid = graph.to_mermaid()
    lines = mermaid.splitlines()
    assert lines[0] == "flowchart LR"
    declared = {m.group(1) for line in lines[1:] if (m := re.match(r"  (\w+)[\[(]", line))}
    assert len(declared) == len(graph.tasks) + len(graph.artifacts)
    for line in lines[1:]:
        if "-->" in line:
            source, _, rest = line.strip().partition(" -->")
            target = rest.rsplit(" ", 1)[1]
            assert source in declared and target in declared
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", node_id) for node_id in declared)
    assert '"' not in "".join(re.findall(r'\["(.*)"\]', mermaid)), "quotes escaped in labels"


def test_render_tree(workspace: Workspace, runs: tuple[Run, Run]) -> None:
    first, _ = runs

    def text(graph: LineageGraph) -> str:
        out = io.StringIO()
        Console(file=out, width=200, color_system=None).print(graph.render_tree())
        return out.getvalue()

    up = text(lineage(_model_key(first)[:12], direction="up", reader=workspace.reader()))
    lines = up.splitlines()
    assert lines[0].startswith("model (")
    assert f"{first.pathspec}/train/0 (attempt 0, completed) lr=0.1" in lines[1]
    assert "train.csv" in lines[-1] and "←" in lines[-1]

    run_tree = text(lineage(first, direction="up"))
    assert run_tree.startswith(f"run {first.pathspec} (up)")
    assert "(see above)" in run_tree, "prepare feeds both train and evaluate"


def test_unknown_short_and_ambiguous_prefixes(
    workspace: Workspace,
    runs: tuple[Run, Run],
    flow_file: FlowWriter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reader = workspace.reader()
    known = {a.hash for a in lineage(runs[0], direction="up").artifacts}
    unknown = next(
        p
        for p in ("deadbeef00", "0123abcd99", "ffffeeee11")
        if not any(k.startswith(p) for k in known)
    )
    with pytest.raises(NotFoundError, match=f"hash starting with '{unknown}'"):
        lineage(unknown, reader=reader)
    with pytest.raises(NotFoundError, match=f"no artifact '{'ab' * 32}'"):
        lineage("ab" * 32, reader=reader)
    with pytest.raises(UsageError, match="'abc12' is too short: give at least 8"):
        lineage("abc12", reader=reader)
    with pytest.raises(UsageError, match="direction must be 'up' or 'down', got 'sideways'"):
        lineage(runs[0], direction="sideways")
    with pytest.raises(UsageError, match="depth must be"):
        lineage(runs[0], depth=-1)
    # Twenty-odd artifacts: some two share a first hex digit, so a 1-character prefix is ambiguous.
    pt.run(load_pipeline_file(flow_file(MANY)), executor="inline", workspace=workspace)
    firsts = [k[0] for k in sorted(_all_keys(workspace.store))]
    shared = next(c for c in firsts if firsts.count(c) > 1)
    monkeypatch.setattr(lineage_module, "MIN_PREFIX", 1)
    with pytest.raises(
        UsageError, match=f"prefix '{shared}' is ambiguous: it matches .+; give more"
    ):
        resolve_artifact(workspace.store, shared)


def _all_keys(store: MetadataStore) -> set[str]:
    return {
        link.artifact.key
        for run in store.list_runs(RunQuery(limit=None))
        for link in store.links(run.id)
    }


class _CountingStore:
    """The real store, counting the calls made to it by method name."""

    def __init__(self, store: MetadataStore) -> None:
        self._store = store
        self.calls: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


def test_prefix_lookup_is_one_index_query(workspace: Workspace, runs: tuple[Run, Run]) -> None:
    key = _model_key(runs[0])
    found = workspace.store.artifacts_by_prefix(key[:9], 2)
    assert [r.key for r in found] == [key]
    assert resolve_artifact(workspace.store, key[:9].upper()).key == key
    assert workspace.store.artifacts_by_prefix("zz", 2) == []


def test_each_hop_is_one_call_per_kind_of_fact_however_many_runs(
    workspace: Workspace, flow_file: FlowWriter, data: Path
) -> None:
    pipeline = load_pipeline_file(flow_file(FLOW))
    for lr in (0.1, 0.2, 0.3, 0.4, 0.5):
        pt.run(pipeline, {"data": str(data), "lr": lr}, executor="inline", workspace=workspace)
    store = _CountingStore(workspace.store)
    reader = Reader(store, lambda: (workspace.cas, workspace.registry))

    graph = lineage(digest_file(data)[0], direction="down", reader=reader)

    assert len(graph.runs) == 5 and len(graph.tasks) == 15
    # Hops: data → prepare tasks → train and evaluate tasks → evaluate tasks (already seen).
    assert store.calls["links_of_artifacts"] <= 4
    assert store.calls["links_of_tasks"] <= 3 and store.calls["get_tasks"] <= 3
    assert store.calls["get_run"] == 5, "one read per run reached"


RETRIED = """
import pathlib

@pt.step
def prepare(data: str = ""):
    pt.log_input(data, name="train.csv")
    return pathlib.Path(data).read_text().split()

@pt.step
def train(prepare, marker: str = ""):
    if pathlib.Path(marker).exists():
        raise RuntimeError("not yet")
    return len(prepare)

pipeline = pt.Pipeline("retried", [prepare, train])
"""


def test_up_from_a_retried_run_follows_reused_outputs_to_the_origin(
    workspace: Workspace, flow_file: FlowWriter, data: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "fail"
    marker.write_text("")
    pipeline = load_pipeline_file(flow_file(RETRIED))
    params = {"data": str(data), "marker": str(marker)}
    origin = pt.run(pipeline, params, executor="inline", workspace=workspace)
    assert origin.status == "failed"
    marker.unlink()
    again = pt.retry(origin, executor="inline", workspace=workspace)
    assert isinstance(again, Run) and again.successful

    graph = lineage(again, direction="up")

    tasks = _tasks(graph)
    reused = tasks[f"{again.pathspec}/prepare/0"]
    assert reused.reused_from == tasks[f"{origin.pathspec}/prepare/0"].task_id
    assert f"{origin.pathspec}/train/0" not in tasks, "the failed attempt made nothing used"
    assert (f"{origin.pathspec}/prepare/0", "produced", "prepare") in _edges(graph)
    assert ("train.csv", "consumed", f"{origin.pathspec}/prepare/0") in _edges(graph)
    assert [a.hash for a in graph.external_inputs] == [digest_file(data)[0]]
