"""Every action over REST is attributed to its token's user: the runs it starts, its cancels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipetrail.governance.tokens import create_token
from pipetrail.provenance.environment import current_user
from pipetrail.server import create_app
from pipetrail.storage.metadata.governance import Role
from pipetrail.workspace import Workspace
from tests.api.conftest import FAILING, chain_source, record, wait_status
from tests.conftest import FlowWriter

_ENDED = ("completed", "failed", "cancelled")
SERVER_TOKEN = "the-servers-own-token"


@pytest.fixture
def secrets(sqlite_workspace: Workspace) -> dict[Role, str]:
    store = sqlite_workspace.store
    return {
        "editor": create_token(store, "eddie", "editor", actor="setup")[1],
        "approver": create_token(store, "april", "approver", actor="setup")[1],
    }


@pytest.fixture
def eddie(
    sqlite_workspace: Workspace, secrets: dict[Role, str], tmp_path: Path
) -> Iterator[TestClient]:
    """A client whose requests carry the editor token of user 'eddie' (the server also has a
    single token of its own)."""
    app = create_app(sqlite_workspace, token=SERVER_TOKEN, host="0.0.0.0", project_dir=tmp_path)
    headers = {"Authorization": f"Bearer {secrets['editor']}"}
    with TestClient(app, base_url="http://pipetrail.example", headers=headers) as client:
        yield client
    assert app.state.pipetrail.launcher.wait(30)


def _as(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _started(response: Any) -> int:
    assert response.status_code == 201, response.text
    return int(response.json()["pipeline_run"]["id"])


def test_runs_started_over_rest_are_their_token_users(
    eddie: TestClient,
    secrets: dict[Role, str],
    sqlite_workspace: Workspace,
    flow_file: FlowWriter,
) -> None:
    chain = flow_file(chain_source(1), name="chain_flow")
    body = {"file": str(chain), "executor": "inline", "parameters": {"pause": 0}}
    triggered = _started(eddie.post("/api/pipelines/chain/runs", json=body))
    run = wait_status(eddie, triggered, _ENDED)
    assert run["user"] == "eddie" and "user:eddie" in run["system_tags"]

    failed = record(sqlite_workspace, flow_file(FAILING, name="failing_flow"))
    assert failed.user == current_user()
    retry = eddie.post(
        f"/api/pipeline_runs/{failed.id}/retry",
        json={"executor": "inline"},
        headers=_as(secrets["approver"]),
    )
    assert wait_status(eddie, _started(retry), _ENDED)["user"] == "april"

    made = eddie.post("/api/triggers", json={"name": "hook", "pipeline": str(chain), "api": True})
    assert made.status_code == 201, made.text
    fired = _started(eddie.post("/api/triggers/hook/runs", json={"executor": "inline"}))
    assert wait_status(eddie, fired, _ENDED)["user"] == "eddie"

    # The server's own token acts as the admin 'admin'.
    by_server = eddie.post(
        f"/api/pipeline_runs/{failed.id}/retry",
        json={"executor": "inline"},
        headers=_as(SERVER_TOKEN),
    )
    assert wait_status(eddie, _started(by_server), _ENDED)["user"] == "admin"
    assert sqlite_workspace.store.get_run(fired).user == "eddie"


def test_a_cancel_over_rest_names_who_cancelled(
    eddie: TestClient, secrets: dict[Role, str], flow_file: FlowWriter
) -> None:
    file = flow_file(chain_source(12), name="chain_flow")
    run_id = _started(
        eddie.post("/api/pipelines/chain/runs", json={"file": str(file), "executor": "inline"})
    )
    wait_status(eddie, run_id, ("running",))
    cancelled = eddie.post(
        f"/api/pipeline_runs/{run_id}/cancel",
        json={"wait_s": 20},
        headers=_as(secrets["approver"]),
    )
    assert cancelled.status_code == 200, cancelled.text
    events = cancelled.json()["pipeline_run"]["events"]
    (request,) = [e for e in events if e["kind"] == "cancel_requested"]
    assert request["actor"] == "april" and request["message"].startswith("cancelled by april@")
    # Status changes made by the runner name nobody.
    assert {e["actor"] for e in events if e["kind"] == "status"} == {None}
    again = eddie.get(f"/api/pipeline_runs/{run_id}").json()["pipeline_run"]["events"]
    assert [e["actor"] for e in again if e["kind"] == "cancel_requested"] == ["april"]


def test_local_mode_acts_as_the_servers_user(
    workspace: Workspace, tmp_path: Path, flow_file: FlowWriter
) -> None:
    app = create_app(workspace, project_dir=tmp_path)
    failed = record(workspace, flow_file(FAILING, name="failing_flow"))
    with TestClient(app) as client:
        retry = client.post(f"/api/pipeline_runs/{failed.id}/retry", json={"executor": "inline"})
        assert wait_status(client, _started(retry), _ENDED)["user"] == current_user()
    assert app.state.pipetrail.launcher.wait(30)
