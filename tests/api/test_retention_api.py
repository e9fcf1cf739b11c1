"""Retention over REST: delete a run (409 with the reason when refused), delete by rule, gc."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipetrail.workspace import Workspace
from tests.api.conftest import error_of, record
from tests.conftest import FlowWriter

FLOW = """
@pt.step
def make(n: int = 3, fail: bool = False):
    if fail:
        raise ValueError("make failed")
    return list(range(n))

pipeline = pt.Pipeline("api-ret", [make])
"""


@pytest.fixture
def flow(flow_file: FlowWriter) -> Path:
    return flow_file(FLOW)


def test_delete_a_run_or_be_told_why_not(
    client: TestClient, workspace: Workspace, flow: Path
) -> None:
    kept = record(workspace, flow, {"n": 1}, tags=["keep"])
    free = record(workspace, flow, {"n": 2})

    dry = client.delete(f"/api/runs/{free.id}", params={"dry_run": "true"})
    assert dry.status_code == 200 and dry.json()["dry_run"] is True
    assert workspace.store.get_run(free.id)
    done = client.delete(f"/api/runs/{free.id}")
    assert done.status_code == 200, done.text
    assert done.json()["deleted"] == [
        {"id": free.id, "pathspec": free.pathspec, "status": "completed", "cleared": {}}
    ]
    assert error_of(client.delete(f"/api/runs/{free.id}"), 404)["type"] == "NotFoundError"
    refused = error_of(client.delete(f"/api/runs/{kept.id}"), 409)
    assert refused["type"] == "ConflictError" and "is tagged 'keep'" in refused["message"]
    assert workspace.store.get_run(kept.id).user_tags == ("keep",)
    [event] = workspace.store.governance_events(action="run_deleted")
    assert event.run_id == free.id


def test_delete_by_rule_and_collect_garbage(
    client: TestClient, workspace: Workspace, flow: Path
) -> None:
    failed = record(workspace, flow, {"fail": True})
    done = record(workspace, flow, {"n": 4})
    kept = record(workspace, flow, {"fail": True, "n": 2}, tags=["keep"])
    body = {"older_than": "1s", "status": ["failed"]}
    for bad, message in (
        ({}, "give exactly one of ids and older_than"),
        ({"ids": [1], "older_than": "1d"}, "give exactly one of ids and older_than"),
        ({"ids": [1], "status": ["failed"]}, "go with older_than"),
        ({"older_than": "soon"}, "cannot read 'soon' as a duration"),
    ):
        assert message in error_of(client.post("/api/runs/delete", json=bad), 422)["message"]
    time.sleep(1.1)
    answer = client.post("/api/runs/delete", json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert [r["id"] for r in result["deleted"]] == [failed.id]
    assert [r["id"] for r in result["refused"]] == [kept.id]
    assert workspace.store.get_run(done.id)
    by_id = client.post("/api/runs/delete", json={"ids": [done.id]}).json()
    assert [r["id"] for r in by_id["deleted"]] == [done.id]

    gc = client.post("/api/gc", json={"grace": "0s", "dry_run": True})
    assert gc.status_code == 200, gc.text
    assert gc.json()["dry_run"] is True and gc.json()["objects"] == len(gc.json()["keys"]) >= 1
    assert error_of(client.post("/api/gc", json={"grace": "later"}), 422)
    freed = client.post("/api/gc", json={"grace": "0s"}).json()
    assert freed["objects"] == gc.json()["objects"] and freed["bytes"] == gc.json()["bytes"]
    assert client.post("/api/gc", json={"grace": "0s"}).json()["objects"] == 0
