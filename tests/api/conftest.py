"""Fixtures for the REST API tests: an app over a real store, seeded with real runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import pipetrail as pt
from pipetrail.client import Run
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.server import create_app
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

RICH = """
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)

@pt.step
def load(rows: int = 150, source: str = "iris"):
    print("loading", rows, "rows from", source)
    print("second line")
    return pd.DataFrame(
        {
            "x": list(range(rows)),
            "y": [i * 0.5 for i in range(rows)],
            "label": ["a" if i % 2 else "b" for i in range(rows)],
        }
    )

@pt.step
def features(load):
    return np.arange(load.shape[0] * 4, dtype=float).reshape(-1, 4)

@pt.step
def train(features, lr: float = 0.1, epochs: int = 5):
    for epoch in range(epochs):
        pt.log_metric("loss", lr / (epoch + 1), step=epoch)
    pt.log_metric("accuracy", 0.9)
    pt.log_metric("val/loss", 0.5)
    folder = Path(tempfile.mkdtemp())
    (folder / "report.txt").write_text("".join(f"line {i}\\n" for i in range(300)))
    (folder / "plot.png").write_bytes(PNG)
    pt.log_artifact(folder / "report.txt")
    pt.log_artifact(folder / "plot.png")
    return {"lr": lr, "epochs": epochs, "weights": [0.1, 0.2]}

pipeline = pt.Pipeline("rich", [load, features, train])
"""

FAILING = """
@pt.step
def root():
    return 1

@pt.step
def boom(root, fail: bool = True):
    print("about to fail")
    if fail:
        raise ValueError("bad data in row 7")
    return root

@pt.step
def after(boom):
    return boom

pipeline = pt.Pipeline("failing", [root, boom, after])
"""


def chain_source(steps: int = 12) -> str:
    """A pipeline of ``steps`` steps in a line, each sleeping ``pause`` seconds."""
    parts = ["import time\n"]
    for i in range(steps):
        arg = f"s{i - 1}, " if i else ""
        parts.append(
            f"@pt.step\ndef s{i}({arg}pause: float = 0.3):\n    time.sleep(pause)\n    return {i}\n"
        )
    names = ", ".join(f"s{i}" for i in range(steps))
    parts.append(f'pipeline = pt.Pipeline("chain", [{names}])\n')
    return "\n".join(parts)


@dataclass
class Seeded:
    """Runs recorded before a test: two of ``rich`` and one ``failing``."""

    rich_file: Path
    failing_file: Path
    first: Run
    second: Run
    failed: Run


def record(
    ws: Workspace,
    file: Path,
    params: dict[str, Any] | None = None,
    tags: list[str] | None = None,
) -> Run:
    """Run the pipeline in ``file`` inline and return it as recorded."""
    run = pt.run(
        load_pipeline_file(file), params or {}, executor="inline", workspace=ws, tags=tags or []
    )
    assert isinstance(run, Run)
    return run


@pytest.fixture
def seeded(workspace: Workspace, flow_file: FlowWriter) -> Seeded:
    rich = flow_file(RICH, name="rich_flow")
    failing = flow_file(FAILING, name="failing_flow")
    first = record(workspace, rich, {"rows": 150}, tags=["exp", "phase:one"])
    second = record(workspace, rich, {"lr": 0.5, "source": "penguins"}, tags=["phase:two"])
    failed = record(workspace, failing, tags=["exp"])
    return Seeded(rich, failing, first, second, failed)


@pytest.fixture
def client(workspace: Workspace, tmp_path: Path) -> Iterator[TestClient]:
    """A client of an app in local mode, serving the pipeline files ``flow_file`` writes
    (``tmp_path`` is its project directory); leaving it stops the runs the app started."""
    app = create_app(workspace, project_dir=tmp_path)
    with TestClient(app) as test_client:
        yield test_client
    assert app.state.pipetrail.launcher.wait(30)


def wait_status(
    client: TestClient, run_id: int, statuses: tuple[str, ...], timeout_s: float = 30.0
) -> dict[str, Any]:
    """Poll the API until run ``run_id`` has one of ``statuses``; return it."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get(f"/api/pipeline_runs/{run_id}")
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()["pipeline_run"]
        if run["status"] in statuses:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} is still {run['status']} after {timeout_s} s")
        time.sleep(0.05)


def error_of(response: Any, status: int) -> dict[str, Any]:
    """The error envelope of ``response``, checking its status."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["message"] and error["type"]
    return error
