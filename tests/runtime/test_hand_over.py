"""A task's last drain of its spool is stored with its end, in one transaction.

Points, output and tags logged just before a step returns reach the store with the task's end
(inline and process executors, which share the runner's host and spool folder), or by the task itself
when they are too many to hand over; either way every one is stored once and the spool folder
is gone afterwards.
"""

from __future__ import annotations

import pytest

import pipetrail as pt
from pipetrail.runtime.context import HAND_OVER_POINTS
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

FLOW = """
@pt.step
def noisy(points: int = 10):
    for i in range(points):
        pt.log_metrics({"loss": 1.0 / (i + 1), "acc": i / points}, step=i)
    print("first line")
    print("last line")
    pt.set_tag("noisy-done")
    return points

@pt.step
def after(noisy):
    pt.log_metric("seen", float(noisy))
    return noisy

pipeline = pt.Pipeline("handover", [noisy, after])
"""


@pytest.mark.parametrize("executor", ["inline", "process"])
@pytest.mark.parametrize("points", [10, HAND_OVER_POINTS + 7])
def test_the_last_points_output_and_tags_are_stored_with_the_end(
    workspace: Workspace, flow_file: FlowWriter, executor: str, points: int
) -> None:
    pipeline = load_pipeline_file(flow_file(FLOW), "handover")
    run = pt.run(pipeline, {"points": points}, executor=executor, workspace=workspace)
    assert run.status == "completed"
    history = run.metric_history("loss")
    assert [p.step for p in history] == list(range(points))
    assert [p.value for p in history] == [1.0 / (i + 1) for i in range(points)]
    assert len(run.metric_history("acc")) == points
    assert run.metrics["loss"] == 1.0 / points
    assert run.metrics["seen"] == float(points)
    noisy = run["noisy"].task
    assert noisy is not None
    assert noisy.stdout == "first line\nlast line\n"
    assert "noisy-done" in run.user_tags
    left = [p.name for p in workspace.spool_root.glob(f"{run.id}-*")]
    assert left == [], "spool folders left behind"
