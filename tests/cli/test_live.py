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


RETRIED = """
import os

@pt.step(retries=1, retry_delay="0s")
def flaky():
    marker = os.path.join(os.path.dirname(__file__), "tried")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise OSError("first attempt fails")
    return 1

@pt.step
def broken(flaky):
    raise KeyError("gone")

@pt.step
def after(broken):
    return 2

pipeline = pt.Pipeline("ci", [flaky, broken, after])
"""


def test_off_a_terminal_each_task_gets_a_line_as_it_ends_and_the_run_a_summary(
    sqlite_workspace: Workspace, flow_file: FlowWriter
) -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=100, color_system=None)
    display = LiveRunDisplay(console)
    pipeline = load_pipeline_file(flow_file(RETRIED))
    engine = sqlite_workspace.engine(executor="inline", observer=display)
    record = engine.run(RunRequest(pipeline=pipeline, params={}))
    display.stop()

    run = f"ci/{record.id}"
    lines = buffer.getvalue().splitlines()
    assert lines[0] == f"{run} started: 3 step(s)"
    assert lines[1].startswith(f"{run} flaky: failed in ") and lines[1].endswith("(attempt 0)")
    assert lines[2].startswith(f"{run} flaky: completed in ") and lines[2].endswith("(attempt 1)")
    assert lines[3].startswith(f"{run} broken: failed in ") and lines[3].endswith("(attempt 0)")
    assert lines[4] == f"{run} after: upstream_failed (not run)"
    assert lines[5] == f"{run} failed: steps 1 completed, 1 failed, 1 upstream_failed"
    assert len(lines) == 6
    assert "\x1b" not in buffer.getvalue(), "no redraws or colours off a terminal"
