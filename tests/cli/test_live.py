"""The live display of ``pipetrail run`` as an observer of a real run."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

import pipetrail as pt
from pipetrail.cli.live import LiveRunDisplay
from pipetrail.runtime.engine import RunRequest
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

FLOW = """
@pt.step
def fast():
    return 1

@pt.step
def broken(fast):
    raise KeyError("gone")

@pt.step
def after(broken):
    return 2

pipeline = pt.Pipeline("live", [fast, broken, after])
"""


def test_live_display_shows_each_step_final_status(
    sqlite_workspace: Workspace, flow_file: FlowWriter, tmp_path: Path
) -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100, color_system=None)
    display = LiveRunDisplay(console)
    pipeline = load_pipeline_file(flow_file(FLOW))
    engine = sqlite_workspace.engine(executor="inline", observer=display)
    record = engine.run(RunRequest(pipeline=pipeline, params={}))
    display.stop()

    last_frame = buffer.getvalue().split(f"live/{record.id}")[-1]
    assert "fast" in last_frame and "completed" in last_frame
    assert "broken" in last_frame and "failed" in last_frame
    assert "after" in last_frame and "upstream_failed" in last_frame
    assert pt.Run(record.id, reader=sqlite_workspace.reader()).status == "failed"
