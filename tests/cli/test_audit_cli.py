"""``pipetrail audit`` for real: ``python -m pipetrail.cli`` in subprocesses on a store of its own.

Runs are made with ``pipetrail run``; the model is registered through the registry on the same
store. Bad refs are one line and exit 2 with nothing written; PDF without WeasyPrint names the
extra to install.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipetrail.config import Settings
from pipetrail.governance import registry
from pipetrail.workspace import Workspace
from tests.e2e.test_control_cli import Cli

FLOWS = """import pathlib
import pipetrail as pt

@pt.step
def clean(raw: str = "raw.csv", out: str = "features.csv"):
    pt.log_input(raw, name="raw.csv")
    pathlib.Path(out).write_text(pathlib.Path(raw).read_text().upper())
    pt.log_artifact(out, name="features.csv")
    return 1

prep = pt.Pipeline("prep", [clean])

@pt.step
def model(features: str = "features.csv", lr: float = 0.5):
    pt.log_input(features, name="features.csv")
    pt.log_metric("loss", lr / 10)
    return {"size": len(pathlib.Path(features).read_text()), "lr": lr}

train = pt.Pipeline("train", [model])
"""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """prep/1 and train/2 (which read prep's features.csv), and model churn/1 from train/2.

    Shared by the module's tests: an audit only reads the store.
    """
    folder = tmp_path_factory.mktemp("audit-cli")
    cli = Cli(folder)
    (folder / "flows.py").write_text(FLOWS)
    (folder / "raw.csv").write_text("a b c\n")
    try:
        ok(cli, "run", "flows.py:prep")
        ok(cli, "run", "flows.py:train", "-p", "lr=0.25")
        workspace = Workspace(Settings.for_home(cli.home))
        try:
            registry.register(workspace.store, "churn", "train/2", artifact="model", actor="carol")
        finally:
            workspace.close()
        yield cli
    finally:
        cli.cleanup()


def ok(cli: Cli, *args: str) -> str:
    done = cli(*args)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def refused(cli: Cli, *args: str) -> str:
    """The command's one line on stderr; it must exit 2."""
    done = cli(*args)
    assert done.returncode == 2, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_html_json_and_a_run_ref_from_the_shell(recorded: Cli) -> None:
    cli = recorded
    said = ok(cli, "audit", "churn", "-o", "report.html")
    assert (
        said.startswith("wrote report.html (html,")
        and "the audit of churn/1, 2 runs covered" in said
    )
    html = (cli.cwd / "report.html").read_text()
    assert "Audit report: model churn version 1" in html and "prep/1/clean/0" in html

    ok(cli, "audit", "churn/1", "-o", "report.json")
    document = json.loads((cli.cwd / "report.json").read_text())
    assert document["subject"]["model"] == "churn" and document["format"] == "pipetrail.audit/1"
    assert [r["pathspec"] for r in document["runs"]] == ["train/2", "prep/1"]

    shown = json.loads(ok(cli, "audit", "train/2", "--format", "json", "-o", "-"))
    assert shown["subject"] == {**shown["subject"], "kind": "run", "run": "train/2"}
    assert shown["model"] is None
    # A model and a pipeline of one name: --run reads the ref as the run.
    ok(cli, "audit", "prep/1", "--run", "-o", "prep.html")
    assert "Audit report: run prep/1" in (cli.cwd / "prep.html").read_text()


def test_bad_refs_are_one_line_exit_2_and_write_nothing(recorded: Cli) -> None:
    cli = recorded
    (cli.cwd / "kept.html").write_text("the previous report")
    cases = {
        "nope@production": "no model named 'nope'",
        "churn@production": "model 'churn' has no alias 'production'",
        "churn/7": "has no version 7",
        "train/99": "no run 'train/99'",
        "train/2/model": "not a step",
    }
    for index, (ref, message) in enumerate(cases.items()):
        target = "kept.html" if index % 2 else "new.html"
        line = refused(cli, "audit", ref, "-o", target)
        assert line.startswith("error: ") and message in line, (ref, line)
    assert (cli.cwd / "kept.html").read_text() == "the previous report"
    assert not (cli.cwd / "new.html").exists()
    assert "no folder" in refused(cli, "audit", "churn", "-o", "missing/report.html")
    assert "needs a file" in refused(cli, "audit", "churn", "--format", "pdf", "-o", "-")
    assert sorted(p.name for p in cli.cwd.iterdir() if p.name.startswith(".")) == []


def test_pdf_without_weasyprint_names_the_extra(recorded: Cli, tmp_path: Path) -> None:
    cli = Cli(recorded.cwd)
    # An interpreter where weasyprint cannot be imported, as where the extra is not installed.
    shadow = tmp_path / "shadow"
    (shadow / "weasyprint").mkdir(parents=True)
    (shadow / "weasyprint" / "__init__.py").write_text(
        "raise ImportError(\"No module named 'weasyprint'\")\n"
    )
    cli.env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(shadow), os.environ.get("PYTHONPATH")])
    )

    line = refused(cli, "audit", "churn", "-o", "unrendered.pdf")

    assert "pip install 'pipetrail[audit]'" in line
    assert not (cli.cwd / "unrendered.pdf").exists()
    assert [p.name for p in cli.cwd.iterdir() if p.name.startswith(".unrendered")] == []
