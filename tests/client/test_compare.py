"""Comparing real runs: params, metric deltas, step code diffs, environment, artifacts, inputs."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from rich.console import Console

import pipetrail as pt
from pipetrail.client import Run
from pipetrail.client.comparison import Comparison, EnvironmentDiff, FieldDiff, compare, render
from pipetrail.errors import NotFoundError, UsageError
from pipetrail.provenance.environment import PackageDiff
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

FLOW = """
import pathlib

@pt.step
def load(data: str = "", n: int = 4):
    pt.log_input(data)
    return [float(x) for x in pathlib.Path(data).read_text().split()][:n]

@pt.step
def train(load, lr: float = 0.1):
    weights = [x * lr for x in load]
    return weights

@pt.step
def evaluate(train):
    pt.log_metric("score", sum(train))
    pt.log_metric("size", len(train))
    return round(sum(train), 6)

pipeline = pt.Pipeline("cmp", [load, train, evaluate])
"""

EDITED = FLOW.replace("weights = [x * lr for x in load]", "weights = [x * lr + 1 for x in load]")

OTHER = """
@pt.step
def make(k: int = 2):
    pt.log_metric("score", k)
    return k

pipeline = pt.Pipeline("other", [make])
"""


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "numbers.txt"
    path.write_text("1 2 3 4 5\n")
    return path


def _run(ws: Workspace, file: Path, **params: object) -> Run:
    return pt.run(load_pipeline_file(file), params, executor="inline", workspace=ws)


def test_two_runs_with_different_params(
    workspace: Workspace, flow_file: FlowWriter, data: Path
) -> None:
    file = flow_file(FLOW)
    a = _run(workspace, file, data=str(data), lr=0.1)
    b = _run(workspace, file, data=str(data), lr=0.2)

    diff = compare(a, b)

    assert diff.runs == (a.pathspec, b.pathspec) and diff.pairwise
    assert [p.name for p in diff.params] == ["lr", "data", "n"], "differing first"
    lr = diff.params[0]
    assert lr.differs and lr.values == (0.1, 0.2) and lr.present == (True, True)
    assert not any(p.differs for p in diff.params[1:])
    metrics = {m.name: m for m in diff.metrics}
    assert [m.name for m in diff.metrics] == ["score", "size"]
    assert metrics["score"].values == pytest.approx((1.0, 2.0))
    assert metrics["score"].delta == pytest.approx(1.0)
    assert metrics["score"].relative == pytest.approx(1.0)
    assert metrics["size"].delta == 0 and not metrics["size"].differs
    # Same code, same environment, same data file.
    assert [(c.step, c.status, c.changed, c.diff) for c in diff.code] == [
        ("load", "same", False, ""),
        ("train", "same", False, ""),
        ("evaluate", "same", False, ""),
    ]
    assert diff.environment is not None and diff.environment.identical
    assert diff.environment.fields == () and not diff.environment.packages
    artifacts = {(x.step, x.name): x.status for x in diff.artifacts}
    assert artifacts == {
        ("load", "load"): "identical",
        ("train", "train"): "changed",
        ("evaluate", "evaluate"): "changed",
    }
    assert diff.artifacts[-1].status == "identical", "changed first"
    assert [(i.name, i.status) for i in diff.inputs] == [("numbers.txt", "identical")]
    assert diff.inputs[0].source_uris == (str(data.resolve()), str(data.resolve()))


def test_edited_step_source_shows_as_a_unified_diff(
    workspace: Workspace, flow_file: FlowWriter, data: Path
) -> None:
    # Two files: the loader caches a pipeline file by path and modification time.
    a = _run(workspace, flow_file(FLOW), data=str(data))
    b = _run(workspace, flow_file(EDITED), data=str(data))

    diff = compare(a, b)

    assert not any(p.differs for p in diff.params)
    code = {c.step: c for c in diff.code}
    assert not code["load"].changed and not code["evaluate"].changed
    train = code["train"]
    assert train.changed and train.status == "changed"
    assert "-    weights = [x * lr for x in load]" in train.diff
    assert "+    weights = [x * lr + 1 for x in load]" in train.diff
    assert train.diff.startswith(f"--- {a.pathspec}/train\n+++ {b.pathspec}/train\n")
    assert train.source_hashes[0] != train.source_hashes[1]
    statuses = {x.step: x.status for x in diff.artifacts}
    assert statuses == {"load": "identical", "train": "changed", "evaluate": "changed"}


def test_changed_data_file_is_a_changed_input(
    workspace: Workspace, flow_file: FlowWriter, data: Path
) -> None:
    file = flow_file(FLOW)
    a = _run(workspace, file, data=str(data))
    data.write_text("5 4 3 2 1\n")
    b = _run(workspace, file, data=str(data))

    diff = compare(a, b)

    (numbers,) = diff.inputs
    assert numbers.status == "changed" and numbers.hashes[0] != numbers.hashes[1]
    assert {x.step: x.status for x in diff.artifacts}["load"] == "changed"


def test_runs_of_different_pipelines(
    workspace: Workspace, flow_file: FlowWriter, data: Path
) -> None:
    a = _run(workspace, flow_file(FLOW), data=str(data))
    b = _run(workspace, flow_file(OTHER))

    diff = compare(a, b)

    params = {p.name: p for p in diff.params}
    assert params["k"].present == (False, True) and params["k"].values == (None, 2)
    assert params["lr"].present == (True, False) and params["lr"].differs
    assert {c.step: c.status for c in diff.code} == {
        "load": "removed",
        "train": "removed",
        "evaluate": "removed",
        "make": "added",
    }
    make = next(c for c in diff.code if c.step == "make")
    assert "+def make(k: int = 2):" in make.diff and make.diff.startswith("--- /dev/null")
    assert {(x.step, x.status) for x in diff.artifacts} == {
        ("load", "removed"),
        ("train", "removed"),
        ("evaluate", "removed"),
        ("make", "added"),
    }
    assert [(i.name, i.status) for i in diff.inputs] == [("numbers.txt", "removed")]
    size = next(m for m in diff.metrics if m.name == "size")
    assert size.values == (4.0, None) and size.delta is None


def test_three_runs_make_a_table_with_differing_columns_first(
    workspace: Workspace, flow_file: FlowWriter, data: Path
) -> None:
    file = flow_file(FLOW)
    runs = [
        _run(workspace, file, data=str(data), lr=0.1),
        _run(workspace, file, data=str(data), lr=0.2),
        _run(workspace, flow_file(EDITED), data=str(data), lr=0.1),
    ]

    diff = compare(*runs)

    assert not diff.pairwise and diff.code == () and diff.environment is None
    assert diff.columns == (
        "run",
        "params.lr",
        "metrics.score",
        "params.data",
        "params.n",
        "metrics.size",
    )
    rows = diff.table()
    assert [row["run"] for row in rows] == [r.pathspec for r in runs]
    assert [row["params.lr"] for row in rows] == [0.1, 0.2, 0.1]
    assert [row["metrics.score"] for row in rows] == pytest.approx([1.0, 2.0, 5.0])
    assert all(list(row) == list(diff.columns) for row in rows)
    score = next(m for m in diff.metrics if m.name == "score")
    assert score.delta is None, "deltas only between two runs"


def test_pathspecs_json_and_errors(workspace: Workspace, flow_file: FlowWriter, data: Path) -> None:
    file = flow_file(FLOW)
    a = _run(workspace, file, data=str(data), lr=0.1)
    b = _run(workspace, file, data=str(data), lr=0.3)

    diff = compare(a.pathspec, str(b.id), reader=workspace.reader())

    assert diff.runs == (a.pathspec, b.pathspec)
    as_json = json.loads(json.dumps(diff.to_dict()))
    assert as_json["runs"] == [a.pathspec, b.pathspec]
    assert as_json["params"][0] == {
        "name": "lr",
        "values": [0.1, 0.3],
        "present": [True, True],
        "differs": True,
    }
    assert as_json["environment"]["identical"] is True
    assert as_json["environment"]["packages"] == {"added": [], "removed": [], "changed": []}
    assert all("hashes" in d and "keys" not in d for d in as_json["artifacts"] + as_json["inputs"])
    assert as_json["artifacts"] and as_json["inputs"]
    assert as_json["code"][1]["changed"] is False
    assert as_json["columns"][:3] == ["run", "params.lr", "metrics.score"]
    assert as_json["table"][1]["params.lr"] == 0.3
    with pytest.raises(UsageError, match="at least two runs, got 1"):
        compare(a)
    with pytest.raises(NotFoundError):
        compare(a, "cmp/99999", reader=workspace.reader())


def test_to_pandas(workspace: Workspace, flow_file: FlowWriter, data: Path) -> None:
    pd = pytest.importorskip("pandas")
    file = flow_file(FLOW)
    runs = [_run(workspace, file, data=str(data), lr=lr) for lr in (0.1, 0.2, 0.4)]

    frame = compare(*runs).to_pandas()

    assert isinstance(frame, pd.DataFrame)
    assert list(frame.index) == [r.pathspec for r in runs]
    assert list(frame.columns)[:2] == ["params.lr", "metrics.score"]
    assert list(frame["params.lr"]) == [0.1, 0.2, 0.4]


def test_to_pandas_without_pandas_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    empty = Comparison(runs=("a/1", "a/2", "a/3"), params=(), metrics=(), columns=("run",))
    with pytest.raises(UsageError, match=r"needs pandas: pip install"):
        empty.to_pandas()


def _text(renderable: object) -> str:
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(renderable)
    return out.getvalue()


def test_render_two_and_three_runs(workspace: Workspace, flow_file: FlowWriter, data: Path) -> None:
    a = _run(workspace, flow_file(FLOW), data=str(data), lr=0.1)
    b = _run(workspace, flow_file(EDITED), data=str(data), lr=0.2)
    c = _run(workspace, flow_file(OTHER))

    text = _text(render(compare(a, b)))

    assert f"Comparing {a.pathspec} ↔ {b.pathspec}" in text
    assert "lr" in text and "0.1" in text and "0.2" in text
    assert "+5" in text and "+500.00%" in text, "score 1.0 → 6.0"
    assert "code: step 'train' changed" in text
    assert "+    weights = [x * lr + 1 for x in load]" in text
    assert "environment: identical" in text
    assert "identical" in text and "changed" in text and "numbers.txt" in text

    table = _text(render(compare(a, b, c)))
    assert "differing columns first" in table and c.pathspec in table
    assert table.index("params.lr") < table.index("params.n")


def test_render_environment_differences() -> None:
    env = EnvironmentDiff(
        identical=False,
        recorded=(True, True),
        fields=(FieldDiff("python_version", "3.11.7", "3.12.1"),),
        packages=PackageDiff(
            added=(("polars", "1.0.0"),),
            removed=(("pandas", "2.2.0"),),
            changed=(("numpy", "1.26.4", "2.0.0"),),
        ),
    )
    diff = Comparison(runs=("a/1", "b/2"), params=(), metrics=(), environment=env)

    text = _text(render(diff))

    assert "python_version" in text and "3.11.7" in text and "3.12.1" in text
    assert "+ polars" in text and "- pandas" in text and "~ numpy" in text
    assert json.loads(json.dumps(diff.to_dict()))["environment"]["packages"]["changed"] == [
        ["numpy", "1.26.4", "2.0.0"]
    ]
