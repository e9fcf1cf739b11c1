"""``pipetrail ui`` runs the scheduling loop in the server: ticks fire with no other process."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipetrail.config import Settings
from pipetrail.scheduling.service import TriggerService
from pipetrail.scheduling.spec import check_pipeline, definition_from
from pipetrail.server import create_app
from pipetrail.storage.metadata.base import RunQuery
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

pytestmark = pytest.mark.slow

FLOW = """
@pt.step
def tick():
    return 1

pipeline = pt.Pipeline("ticker", [tick])
"""


def test_the_server_fires_triggers_and_stops_its_scheduler_with_it(
    tmp_path: Path, flow_file: FlowWriter
) -> None:
    workspace = Workspace(Settings.for_home(tmp_path / "home"))
    flow = flow_file(FLOW, "ticker")
    start = datetime.now(UTC) + timedelta(seconds=1)
    TriggerService(workspace.store).create(
        check_pipeline(
            definition_from(
                {"name": "often", "pipeline": str(flow), "every": "1s", "start": start.isoformat()}
            )
        )
    )
    app = create_app(workspace, project_dir=tmp_path, scheduler=True)
    try:
        with TestClient(app):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                runs = workspace.store.list_runs(RunQuery(trigger="often", limit=None))
                if any(r.status.value == "completed" for r in runs):
                    break
                time.sleep(0.2)
            else:
                raise AssertionError("no tick run completed under the server's scheduler")
            (instance,) = workspace.store.schedulers()
            assert instance.pid == os.getpid() and instance.stopped_at is None
        # The server stopped: so did its scheduler, cleanly.
        assert workspace.store.schedulers() == []
        assert (tmp_path / "home" / "scheduler").is_dir()
    finally:
        workspace.close()


def test_the_server_runs_no_scheduler_unless_asked(tmp_path: Path) -> None:
    workspace = Workspace(Settings.for_home(tmp_path / "home"))
    try:
        with TestClient(create_app(workspace, project_dir=tmp_path)):
            assert workspace.store.schedulers() == []
    finally:
        workspace.close()
