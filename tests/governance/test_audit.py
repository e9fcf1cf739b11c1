"""The audit report on a real two-pipeline lineage: a data prep run whose output file a training
run reads, a retried step, a model version promoted with an approval, and a reproduction."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import pipetrail as pt
from pipetrail.client import Run
from pipetrail.errors import UsageError
from pipetrail.governance import registry
from pipetrail.governance.audit import FORMAT, AuditSubject, audit_document, resolve_subject
from pipetrail.governance.audit_graph import lineage_svg
from pipetrail.governance.audit_render import render_html, render_json, render_pdf
from pipetrail.governance.audit_summary import when
from pipetrail.runtime.control import reproduce_request
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

FLOWS = """
import pathlib

@pt.step
def clean(raw: str = "", out: str = ""):
    pt.log_input(raw, name="raw.csv")
    rows = [float(x) for x in pathlib.Path(raw).read_text().split()]
    pathlib.Path(out).write_text(" ".join(str(r * 2) for r in rows))
    pt.log_artifact(out, name="features.csv")
    return len(rows)

@pt.step
def profile(clean):
    pt.log_metric("rows", clean)
    return {"rows": clean}

prep = pt.Pipeline("prep", [clean, profile])

@pt.step
def load(features: str = ""):
    pt.log_input(features, name="features.csv")
    return [float(x) for x in pathlib.Path(features).read_text().split()]

@pt.step(retries=1)
def model(load, lr: float = 0.5, flaky: str = ""):
    marker = pathlib.Path(flaky)
    if flaky and marker.exists():
        marker.unlink()
        raise RuntimeError("flaky disk, try again")
    for i in range(3):
        pt.log_metric("loss", 1.0 / (i + 1), step=i)
    return {"weights": [x * lr for x in load]}

train = pt.Pipeline("train", [load, model])
"""


class Page(HTMLParser):
    """Text, element ids, links and tags of an HTML page, as the standard library parses it."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.chunks: list[str] = []
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.tags: set[str] = set()
        self.sources: list[str] = []
        self.feed(html)
        self.text = " ".join(" ".join(self.chunks).split())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if name == "href" and value:
                self.hrefs.append(value)
            if name == "src" and value:
                self.sources.append(value)

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)


@pytest.fixture
def lineage_runs(
    workspace: Workspace, flow_file: FlowWriter, tmp_path: Path
) -> tuple[Run, Run, Path]:
    return _lineage_runs(workspace, flow_file, tmp_path)


def _lineage_runs(
    workspace: Workspace, flow_file: FlowWriter, tmp_path: Path
) -> tuple[Run, Run, Path]:
    """prep/1 writes features.csv from raw.csv; train/2 reads it, its model step fails once."""
    raw, features, flaky = tmp_path / "raw.csv", tmp_path / "features.csv", tmp_path / "flaky"
    raw.write_text("1 2 3 4\n")
    flaky.write_text("")
    path = flow_file(FLOWS)
    prep = pt.run(
        load_pipeline_file(path, "prep"),
        {"raw": str(raw), "out": str(features)},
        executor="inline",
        workspace=workspace,
    )
    train = pt.run(
        load_pipeline_file(path, "train"),
        {"features": str(features), "lr": 0.25, "flaky": str(flaky)},
        executor="inline",
        workspace=workspace,
    )
    assert prep.successful and train.successful
    return prep, train, features


@pytest.fixture
def promoted(workspace: Workspace, lineage_runs: tuple[Run, Run, Path]) -> AuditSubject:
    return _promoted(workspace, lineage_runs[1])


def _promoted(workspace: Workspace, train: Run) -> AuditSubject:
    """churn/1 from train's model step, promoted to production by alice, approved by bob."""
    store = workspace.store
    registry.register(store, "churn", train.pathspec, artifact="model", actor="carol")
    registry.set_policy(store, "churn", "production", 1, actor="admin")
    promotion = registry.promote(
        store, "churn", 1, "production", actor="alice", reason="best loss so far"
    )
    assert promotion.request is not None
    registry.decide(
        store, promotion.request.id, "approved", actor="bob", comment="checked the data"
    )
    return resolve_subject(workspace.reader(), "churn@production")


def _reproduce(workspace: Workspace, run: Run, folder: Path) -> Run:
    origin = workspace.store.get_run(run.id)
    request = reproduce_request(workspace.store, workspace.cas.get_bytes, origin, workdir=folder)
    record = workspace.engine(executor="inline").run(request)
    return Run(record.id, reader=workspace.reader())


def test_the_report_holds_every_run_step_hash_param_metric_and_the_approval(
    workspace: Workspace,
    lineage_runs: tuple[Run, Run, Path],
    promoted: AuditSubject,
    tmp_path: Path,
) -> None:
    prep, train, _ = lineage_runs
    again = _reproduce(workspace, train, tmp_path / "repro")
    reader = workspace.reader()

    document = audit_document(reader, promoted, generated_by="auditor")
    page = Page(render_html(document))

    assert document["format"] == FORMAT
    assert [r["pathspec"] for r in document["runs"]] == [train.pathspec, prep.pathspec]
    for run in (train, prep):
        assert f"run-{run.id}" in page.ids and f"Run {run.pathspec}" in page.text
        for step in run:
            assert f"run-{run.id}-step-{step.name}" in page.ids
            source_hash = next(s for s in run.dag["steps"] if s["name"] == step.name)["source_hash"]
            assert source_hash in page.text
            for task in step.tasks:
                for artifact in [*task.inputs.all(), *task.outputs.all()]:
                    assert artifact.hash in page.text, (run.pathspec, step.name, artifact.name)
        for name, value in run.params.items():
            assert f"{name}={json.dumps(value)}" in page.text
        code = run.code
        assert code is not None and code.key in page.text
    assert "def model(load, lr: float = 0.5" in page.text, "the step's source"
    # The metric's latest, min and max, and the retried attempt's error.
    loss = next(m for m in document["runs"][0]["steps"][1]["metrics"] if m["name"] == "loss")
    assert (loss["latest"], loss["min"], loss["max"], loss["points"]) == (1 / 3, 1 / 3, 1.0, 3)
    assert "RuntimeError: flaky disk, try again" in page.text
    attempts = document["runs"][0]["steps"][1]["attempts"]
    assert [(a["attempt"], a["status"]) for a in attempts] == [(0, "failed"), (1, "completed")]
    # The approval: who asked, who approved, when, and why.
    request = document["model"]["promotions"][0]
    assert request["requested_by"] == "alice" and request["status"] == "approved"
    (decision,) = request["decisions"]
    assert decision["actor"] == "bob" and decision["comment"] == "checked the data"
    assert "approved by bob" in page.text and "checked the data" in page.text
    assert when(decision["at"]) in page.text and "alice" in page.text
    assert "alias_moved" in page.text
    # Data across pipelines: train read prep's output file, by content hash.
    load_input = document["runs"][0]["steps"][0]["inputs"][0]
    assert load_input["producers"] == [f"{prep.pathspec}/clean/0"]
    raw_hash = prep["clean"].task.inputs["raw.csv"].hash  # type: ignore[union-attr]
    (outside,) = [n for n in document["lineage"]["nodes"] if n.get("external")]
    assert outside["hash"] == raw_hash
    # The reproduction matched, output by output.
    (reproduction,) = document["reproductions"]
    assert reproduction["reproduction"] == again.pathspec and reproduction["matched"] is True
    summary = {s["key"]: s for s in document["summary"]}
    assert "matched" in summary["reproduction"]["answer"]
    assert "bob" in summary["approvals"]["answer"] and summary["approvals"]["state"] == "ok"
    assert raw_hash in summary["data"]["answer"]
    assert "flaky disk" in summary["failures"]["answer"]
    assert summary["subject"]["answer"].startswith("Model churn version 1")


def test_links_land_nothing_is_fetched_and_the_json_keys_are_documented(
    sqlite_workspace: Workspace, flow_file: FlowWriter, tmp_path: Path
) -> None:
    workspace = sqlite_workspace
    promoted = _promoted(workspace, _lineage_runs(workspace, flow_file, tmp_path)[1])
    document = audit_document(workspace.reader(), promoted)
    page = Page(render_html(document))

    inner = [h for h in page.hrefs if h.startswith("#")]
    assert inner and {h[1:] for h in inner} <= page.ids, "an anchor with no target"
    assert [h for h in page.hrefs if not h.startswith("#")] == []
    assert page.sources == [] and not page.tags & {"script", "link", "img", "iframe"}
    assert "svg" in page.tags and "rect" in page.tags and "path" in page.tags
    _documented_keys(json.loads(render_json(document)))


def test_a_reproduction_that_differs_says_which_output(
    sqlite_workspace: Workspace, flow_file: FlowWriter, tmp_path: Path
) -> None:
    workspace = sqlite_workspace
    _, train, features = _lineage_runs(workspace, flow_file, tmp_path)
    features.write_text("9 9 9\n")
    again = _reproduce(workspace, train, tmp_path / "repro")

    document = audit_document(
        workspace.reader(), resolve_subject(workspace.reader(), train.pathspec)
    )

    assert document["subject"]["kind"] == "run" and document["model"] is None
    (reproduction,) = document["reproductions"]
    assert reproduction["reproduction"] == again.pathspec and reproduction["matched"] is False
    assert "load/0 load (differs)" in reproduction["differed"]
    reproduction_answer = next(s for s in document["summary"] if s["key"] == "reproduction")
    assert (
        "differed" in reproduction_answer["answer"]
        and "load/0 load" in reproduction_answer["answer"]
    )


FAN = """
@pt.step
def shards(n: int = 5):
    return [f"s{i}" for i in range(n)]

@pt.step(foreach="shards")
def process(shards):
    return shards.upper()

@pt.step
def combine(process):
    raise ValueError(f"bad row <script>alert(1)</script> in {len(process)} shards")

pipeline = pt.Pipeline("fan", [shards, process, combine])
"""


def test_a_failed_run_shows_where_it_stopped_and_a_foreach_step_is_one_box(
    sqlite_workspace: Workspace, flow_file: FlowWriter
) -> None:
    workspace = sqlite_workspace
    run = pt.run(load_pipeline_file(flow_file(FAN)), {}, executor="inline", workspace=workspace)
    assert run.status == "failed"

    document = audit_document(workspace.reader(), resolve_subject(workspace.reader(), str(run.id)))
    svg = lineage_svg(document["lineage"])

    tasks = {n["label"]: n for n in document["lineage"]["nodes"] if n["kind"] == "task"}
    assert tasks[f"{run.pathspec}/combine/0"]["status"] == "failed", (
        "the step that produced nothing"
    )
    assert len([t for t in tasks if "/process/" in t]) == 5
    summary = {s["key"]: s for s in document["summary"]}
    assert summary["subject"]["state"] == "attention"
    assert "in 5 shards" in summary["failures"]["answer"]
    page = Page(render_html(document))
    assert "script" not in page.tags, "recorded text is escaped, never markup"
    assert "ValueError: bad row <script>alert(1)</script> in 5 shards" in page.text
    assert f"{run.pathspec}/process [5 tasks]" in svg and "process [5]" in svg
    assert f"{run.pathspec}/process/0" not in svg and 'stroke="#b91c1c"' in svg
    assert svg.count("<rect") == 5, "shards, its output, the 5 tasks, their 5 outputs, combine"


def _documented_keys(document: dict[str, Any]) -> None:
    """The JSON document's keys: in a stable order, and each in the README's table."""
    assert list(document) == [
        "format",
        "generated_at",
        "generated_by",
        "subject",
        "summary",
        "lineage",
        "model",
        "reproductions",
        "runs",
    ]
    assert set(document["subject"]) >= {"kind", "model", "version", "artifact_hash", "run"}
    assert document["subject"]["version"] == 1
    run = document["runs"][0]
    assert set(run) >= {"pathspec", "code", "environment", "params", "metrics", "steps"}
    assert set(run["steps"][0]) >= {"code", "params", "attempts", "inputs", "outputs", "metrics"}
    assert set(document["lineage"]) == {"runs", "truncated", "nodes", "edges"}
    # Every key is documented in the README's table of the document.
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    documented = readme[readme.index("### The audit report") :]
    documented = documented[: documented.index("\n### ")]
    step = run["steps"][0]
    for keys in (document, document["subject"], run, step, step["attempts"][0], step["inputs"][0]):
        missing = [k for k in keys if f"`{k}`" not in documented and f"`{k}[]`" not in documented]
        assert missing == [], f"keys missing from the README: {missing}"
    assert [s["key"] for s in document["summary"]] == [
        "subject",
        "data",
        "code",
        "settings",
        "approvals",
        "reproduction",
        "failures",
    ]


def test_refs_name_a_model_version_or_a_run_and_unknown_ones_are_refused(
    workspace: Workspace, lineage_runs: tuple[Run, Run, Path], promoted: AuditSubject
) -> None:
    _, train, _ = lineage_runs
    reader = workspace.reader()
    assert resolve_subject(reader, "churn/1").version == promoted.version
    assert resolve_subject(reader, "churn").version == promoted.version
    as_run = resolve_subject(reader, train.pathspec)
    assert as_run.version is None and as_run.run.id == train.id
    assert resolve_subject(reader, str(train.id)).run.id == train.id

    refused = {
        "churn@staging": "model 'churn' has no alias 'staging'; its aliases: production",
        "churn/7": "churn",
        "nope@production": "nope",
        f"train/{train.id + 99}": f"no run 'train/{train.id + 99}'",
        f"prep/{train.id}": f"run {train.id} is {train.pathspec}",
        f"{train.pathspec}/load": "not a step",
        "churn/x": "not 'churn/x'",
        "": "give a model version",
    }
    for ref, message in refused.items():
        with pytest.raises(UsageError) as caught:
            resolve_subject(workspace.reader(), ref)
        assert message in str(caught.value), ref


def test_the_pdf_renders_and_its_first_page_shows_the_model_and_a_hash(
    sqlite_workspace: Workspace, flow_file: FlowWriter, tmp_path: Path
) -> None:
    pdfium = pytest.importorskip("pypdfium2")
    pytest.importorskip("weasyprint")
    workspace = sqlite_workspace
    promoted = _promoted(workspace, _lineage_runs(workspace, flow_file, tmp_path)[1])
    assert promoted.version is not None
    pdf_file = tmp_path / "report.pdf"
    pdf_file.write_bytes(render_pdf(render_html(audit_document(workspace.reader(), promoted))))

    pdf = pdfium.PdfDocument(str(pdf_file))
    try:
        assert len(pdf) >= 3, "summary, lineage and a page per run at least"
        first = pdf[0]
        text = first.get_textpage().get_text_range()
        image = first.render(scale=1).to_pil().convert("L")
        image.save(tmp_path / "first-page.png")
    finally:
        pdf.close()
    assert "churn" in text and promoted.version.artifact_key in text.replace("\r\n", "")
    histogram: Any = image.histogram()
    dark = sum(histogram[:128])
    assert dark > 0.005 * image.width * image.height, "the first page is (nearly) blank"
