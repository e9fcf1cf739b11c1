"""A run's cost and system metrics read the same through the client, REST, the CLI and the page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import pipetrail as pt
from pipetrail.client import Run
from pipetrail.config import Settings
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.server import create_app
from pipetrail.workspace import Workspace

FLOW = """
import time
import pipetrail as pt

@pt.step
def load() -> list[int]:
    return [1, 2]

@pt.step(foreach="load")
def burn(load: int) -> int:
    # CPU for about 0.4 s per item: the costliest step, and the slowest.
    start = time.process_time()
    while time.process_time() - start < 0.4:
        sum(range(1000))
    pt.log_metric("zz_score", 0.5 * load)
    return load

@pt.step
def report(burn: list[int]) -> int:
    pt.log_metric("accuracy", 0.9)
    return sum(burn)

pipeline = pt.Pipeline("costly", [load, burn, report])
"""


@dataclass
class Recorded:
    home: Path
    workspace: Workspace
    run: Run
    client: TestClient


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    folder = tmp_path_factory.mktemp("cost")
    flow = folder / "costly.py"
    flow.write_text(FLOW)
    home = folder / "home"
    ws = Workspace(Settings.for_home(home, system_metrics_s=0.1))
    try:
        run = pt.run(load_pipeline_file(flow), executor="inline", workspace=ws)
        assert run.status == "completed", run.error
        with TestClient(create_app(ws, project_dir=folder)) as client:
            yield Recorded(home, ws, run, client)
    finally:
        ws.close()


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIPETRAIL_HOME": str(home)}
    env.pop("PIPETRAIL_DB", None)
    env.pop("PIPETRAIL_ARTIFACTS", None)
    return subprocess.run(
        [sys.executable, "-m", "pipetrail.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_client_cost_adds_up_the_tasks(recorded: Recorded) -> None:
    run = recorded.run
    cost = run.cost

    assert [s.step for s in cost.steps] == ["load", "burn", "report"]
    assert (cost.slowest_step, cost.costliest_step, cost.costliest_by) == (
        "burn",
        "burn",
        "cpu_time_s",
    )
    tasks = [t for step in run for t in step.tasks]
    assert cost.cpu_time_s == pytest.approx(sum(t.resources["cpu_time_s"] for t in tasks))
    assert cost.peak_memory_bytes == max(t.resources["peak_memory_bytes"] for t in tasks)
    burn = run["burn"].cost
    assert burn is not None and (burn.tasks, burn.attempts) == (2, 2)
    assert burn.cpu_time_s >= 0.7 and burn.share > 0.9
    assert cost.wall_time_s == pytest.approx(run.duration)
    assert cost.gpu_time_s is None  # no GPU here


def test_system_metrics_are_ordinary_metrics_after_the_users(recorded: Recorded) -> None:
    run = recorded.run
    names = list(
        recorded.client.get(f"/api/pipeline_runs/{run.id}").json()["pipeline_run"]["metrics"]
    )
    assert names[:2] == ["accuracy", "zz_score"]
    assert {"system/cpu_percent", "system/rss_bytes"} <= set(names[2:])
    assert len(run.metric_history("system/cpu_percent")) >= 2


def test_rest_run_record_has_the_same_cost(recorded: Recorded) -> None:
    run = recorded.run
    response = recorded.client.get(f"/api/pipeline_runs/{run.id}")
    assert response.status_code == 200, response.text
    cost: dict[str, Any] = response.json()["pipeline_run"]["cost"]

    assert cost == json.loads(json.dumps(run.cost.to_dict()))
    assert cost["slowest_step"] == cost["costliest_step"] == "burn"
    assert [s["step"] for s in cost["steps"]] == ["load", "burn", "report"]


def test_runs_show_json_and_text_have_the_cost(recorded: Recorded) -> None:
    run = recorded.run
    shown = _cli(recorded.home, "runs", "show", run.pathspec, "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["cost"] == json.loads(json.dumps(run.cost.to_dict()))
    assert list(doc["metrics"])[:2] == ["accuracy", "zz_score"]
    task = doc["steps"][1]["tasks"][0]
    assert task["resources"]["host"] and "worker" in task["resources"]

    text = _cli(recorded.home, "runs", "show", run.pathspec)
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert "cost (share of CPU seconds)" in out
    burn_row = next(
        line for line in out.splitlines() if line.lstrip().startswith("burn ") and "%" in line
    )
    assert "slowest, costliest" in burn_row
    assert "RAN ON" in out and run.host in out
    # The user's metrics first, then the system samples.
    assert out.index("accuracy") < out.index("system/cpu_percent")


def test_the_run_page_marks_the_slowest_and_costliest_step(recorded: Recorded) -> None:
    run = recorded.run
    page = recorded.client.get(f"/pipelines/{run.pipeline_name}/runs/{run.id}")
    assert page.status_code == 200, page.text
    html = page.text
    assert 'id="cost"' in html
    row = html[html.index('data-cost-step="burn"') :]
    row = row[: row.index("</tr>")]
    assert 'data-role="slowest"' in row and 'data-role="costliest"' in row
    other = html[html.index('data-cost-step="report"') :]
    assert 'data-role="slowest"' not in other[: other.index("</tr>")]
    # System charts are grouped after the user's metrics.
    assert html.index('data-metric-value="accuracy"') < html.index('id="system-metrics"')
    assert html.index('id="system-metrics"') < html.index('data-metric="system/cpu_percent"')
