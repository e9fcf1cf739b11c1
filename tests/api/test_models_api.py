"""The model registry over REST: real runs, a real app, on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipetrail.client import Run
from pipetrail.governance.identity import hash_token
from pipetrail.server import create_app
from pipetrail.workspace import Workspace
from tests.api.conftest import error_of, record
from tests.conftest import FlowWriter

FLOW = """
@pt.step
def train(lr: float = 0.1):
    pt.log_metric("auc", 0.8 + lr)
    pt.log_artifact({"weights": [lr]}, "model")
    return lr

@pt.step
def check(train, fail: bool = False):
    if fail:
        raise ValueError("check failed")
    pt.log_artifact({"checked": train}, "model")
    return train

pipeline = pt.Pipeline("churn", [train, check])
"""


@pytest.fixture
def flow(flow_file: FlowWriter) -> Path:
    return flow_file(FLOW)


@pytest.fixture
def run(workspace: Workspace, flow: Path) -> Run:
    """A completed run of ``churn``."""
    return record(workspace, flow, {"lr": 0.1})


def _register(client: TestClient, run: Run, **extra: Any) -> dict[str, Any]:
    body = {"run": run.pathspec, "step": "train", **extra}
    response = client.post("/api/models/churn/versions", json=body)
    assert response.status_code == 201, response.text
    version: dict[str, Any] = response.json()["version"]
    return version


def test_register_read_and_refusals(
    client: TestClient, run: Run, workspace: Workspace, flow: Path
) -> None:
    first, second = run, record(workspace, flow, {"lr": 0.2})
    response = client.post(
        "/api/models/churn/versions",
        json={"run": first.id, "step": "train", "description": "baseline"},
    )
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == "/api/models/churn/versions/1"
    one = response.json()["version"]
    assert one["ref"] == "churn/1" and one["run"]["pathspec"] == first.pathspec
    assert one["run"]["status"] == "completed" and one["step"] == "train"
    assert one["metrics"] == {"auc": pytest.approx(0.9)} and len(one["artifact"]["hash"]) == 64
    _register(client, second)
    assert [m["name"] for m in client.get("/api/models").json()["models"]] == ["churn"]
    versions = client.get("/api/models/churn/versions").json()["versions"]
    assert [v["version"] for v in versions] == [1, 2]
    assert client.get("/api/models/churn/versions/1").json()["version"] == one
    detail = client.get("/api/models/churn").json()["model"]
    assert detail["latest_version"] == 2 and detail["pending"] == [] and detail["aliases"] == {}
    events = client.get("/api/models/churn/events").json()["events"]
    assert [(e["action"], e["version"]) for e in events] == [
        ("model_registered", 1),
        ("model_registered", 2),
    ]
    refusals = [
        ({"run": first.pathspec}, 422, "output of steps check, train"),
        ({"run": first.id, "artifact": "nope"}, 404, "no output artifact 'nope'"),
        ({"run": 99999, "step": "train"}, 404, "99999"),
        ({"run": first.id, "unknown": 1}, 422, "unknown"),
    ]
    for body, status, message in refusals:
        error = error_of(client.post("/api/models/churn/versions", json=body), status)
        assert message in error["message"] + str(error.get("details")), error
    assert error_of(client.get("/api/models/nope"), 404)["message"].startswith("no model named")
    assert error_of(client.get("/api/models/churn/versions/7"), 404)
    bad = client.post("/api/models/bad%20name/versions", json={"run": first.id, "step": "train"})
    assert "invalid model name" in error_of(bad, 422)["message"]
    assert len(workspace.store.model_versions("churn")) == 2, "refusals wrote nothing"


def test_promotion_without_and_with_a_policy(
    client: TestClient, run: Run, workspace: Workspace, flow: Path
) -> None:
    failed = record(workspace, flow, {"fail": True})
    for registered in (run, run, failed):
        _register(client, registered)
    moved = client.post("/api/models/churn/promotions", json={"version": 1, "alias": "production"})
    assert moved.status_code == 200, moved.text
    assert moved.json() == {
        "model": "churn",
        "version": 1,
        "alias": "production",
        "previous": None,
        "moved": True,
        "request": None,
    }
    policy = client.put("/api/models/churn/policies/production", json={"approvers": 1})
    assert policy.status_code == 200 and policy.json()["model"]["policies"] == {"production": 1}
    opened = client.post(
        "/api/models/churn/promotions", json={"version": 2, "alias": "production", "reason": "r"}
    )
    assert opened.status_code == 201, opened.text
    request = opened.json()["request"]
    assert opened.headers["Location"] == f"/api/promotions/{request['id']}"
    assert request["status"] == "pending" and request["required"] == 1
    pending = client.get("/api/promotions", params={"status": "pending"}).json()["promotions"]
    assert [r["id"] for r in pending] == [request["id"]]
    # In local mode every request is the server's user: the requester, who may not approve.
    own = client.post(f"/api/promotions/{request['id']}/approve", json={"comment": "mine"})
    assert "may not approve it" in error_of(own, 422)["message"]
    assert client.get(f"/api/promotions/{request['id']}").json()["promotion"]["decisions"] == []
    not_done = client.post("/api/models/churn/promotions", json={"version": 3, "alias": "staging"})
    assert f"run {failed.pathspec}, which is failed" in error_of(not_done, 422)["message"]
    withdrawn = client.post(f"/api/promotions/{request['id']}/withdraw")
    assert withdrawn.json()["promotion"]["status"] == "withdrawn"
    detail = client.get("/api/models/churn").json()["model"]
    assert detail["aliases"] == {"production": 1} and detail["pending"] == []
    assert [e["action"] for e in detail["alias_history"]] == ["alias_moved"]
    assert error_of(client.get("/api/promotions/424242"), 404)
    assert error_of(client.get("/api/promotions", params={"status": "odd"}), 422)


@pytest.fixture
def governed(workspace: Workspace, tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """An app whose store has named tokens: ana and bo approve, eve edits, ada administers."""
    headers = {}
    for name, role in (
        ("ana", "approver"),
        ("bo", "approver"),
        ("eve", "editor"),
        ("ada", "admin"),
    ):
        secret = secrets.token_urlsafe(16)
        workspace.store.create_token(name, role, hash_token(secret), "setup")  # type: ignore[arg-type]
        headers[name] = secret
    app = create_app(workspace, host="0.0.0.0", project_dir=tmp_path)
    with TestClient(app, base_url="http://pipetrail.example:8765") as client:
        yield client, headers
    assert app.state.pipetrail.launcher.wait(30)


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_two_users_approve_and_the_record_names_them(
    governed: tuple[TestClient, dict[str, str]], run: Run
) -> None:
    client, tokens = governed
    body = {"run": run.pathspec, "step": "train"}
    made = client.post("/api/models/churn/versions", json=body, headers=_as(tokens["eve"]))
    assert made.status_code == 201 and made.json()["version"]["created_by"] == "eve"
    policy = {"approvers": 1}
    assert error_of(
        client.put(
            "/api/models/churn/policies/production", json=policy, headers=_as(tokens["ana"])
        ),
        403,
    )
    client.put("/api/models/churn/policies/production", json=policy, headers=_as(tokens["ada"]))
    opened = client.post(
        "/api/models/churn/promotions",
        json={"version": 1, "alias": "production", "reason": "auc 0.9"},
        headers=_as(tokens["ana"]),
    )
    request = opened.json()["request"]
    assert opened.status_code == 201 and request["requested_by"] == "ana"
    url = f"/api/promotions/{request['id']}"
    own = client.post(f"{url}/approve", json={"comment": "mine"}, headers=_as(tokens["ana"]))
    assert "'ana' requested promotion" in error_of(own, 422)["message"]
    assert error_of(client.post(f"{url}/approve", headers=_as(tokens["eve"])), 403)
    done = client.post(f"{url}/approve", json={"comment": "checked"}, headers=_as(tokens["bo"]))
    assert done.status_code == 200, done.text
    promotion = done.json()["promotion"]
    assert promotion["status"] == "approved" and promotion["decisions"][0]["actor"] == "bo"
    detail = client.get("/api/models/churn", headers=_as(tokens["eve"])).json()["model"]
    assert detail["aliases"] == {"production": 1}
    log = client.get("/api/models/churn/events", headers=_as(tokens["eve"])).json()["events"]
    assert [(e["action"], e["actor"], e["message"]) for e in log] == [
        ("model_registered", "eve", None),
        ("policy_set", "ada", None),
        ("promotion_requested", "ana", "auc 0.9"),
        ("promotion_approved", "bo", "checked"),
        ("alias_moved", "bo", "checked"),
    ]
    again = client.post(
        "/api/models/churn/promotions",
        json={"version": 1, "alias": "production"},
        headers=_as(tokens["ana"]),
    )
    assert "points at version 1 already" in error_of(again, 422)["message"]


def test_a_rejection_closes_the_request(
    governed: tuple[TestClient, dict[str, str]], run: Run
) -> None:
    client, tokens = governed
    body = {"run": run.pathspec, "step": "train"}
    client.post("/api/models/churn/versions", json=body, headers=_as(tokens["eve"]))
    client.put(
        "/api/models/churn/policies/production", json={"approvers": 2}, headers=_as(tokens["ada"])
    )
    opened = client.post(
        "/api/models/churn/promotions",
        json={"version": 1, "alias": "production"},
        headers=_as(tokens["eve"]),
    ).json()["request"]
    url = f"/api/promotions/{opened['id']}"
    half = client.post(f"{url}/approve", headers=_as(tokens["ana"])).json()["promotion"]
    assert half["status"] == "pending" and half["approvals"] == 1
    closed = client.post(f"{url}/reject", json={"comment": "no"}, headers=_as(tokens["bo"]))
    assert closed.json()["promotion"]["status"] == "rejected"
    late = client.post(f"{url}/approve", headers=_as(tokens["ada"]))
    assert "is rejected already" in error_of(late, 422)["message"]
    models = client.get("/api/models", headers=_as(tokens["eve"])).json()["models"]
    assert models[0]["aliases"] == {}


def test_an_alias_is_removed_over_rest_and_a_guarded_one_only_by_an_admin(
    governed: tuple[TestClient, dict[str, str]], run: Run
) -> None:
    client, tokens = governed
    eve, ada = _as(tokens["eve"]), _as(tokens["ada"])
    body = {"run": run.pathspec, "step": "train"}
    client.post("/api/models/churn/versions", json=body, headers=eve)
    for alias in ("staging", "production"):
        moved = client.post(
            "/api/models/churn/promotions", json={"version": 1, "alias": alias}, headers=eve
        )
        assert moved.status_code == 200, moved.text
    client.put("/api/models/churn/policies/production", json={"approvers": 1}, headers=ada)

    gone = client.delete("/api/models/churn/aliases/staging?reason=retired", headers=eve)
    assert gone.status_code == 200, gone.text
    assert gone.json()["model"]["aliases"] == {"production": 1}
    missing = client.delete("/api/models/churn/aliases/staging", headers=eve)
    assert "has no alias 'staging'" in error_of(missing, 404)["message"]

    refused = client.delete("/api/models/churn/aliases/production", headers=eve)
    assert error_of(refused, 403)["message"] == (
        "removing churn@production, which has a policy, needs the admin role; token 'eve' has "
        "the editor role"
    )
    before = client.get("/api/models/churn/events", headers=eve).json()["events"]
    assert client.get("/api/models/churn", headers=eve).json()["model"]["aliases"] == {
        "production": 1
    }
    done = client.delete("/api/models/churn/aliases/production", headers=ada)
    assert done.status_code == 200 and done.json()["model"]["aliases"] == {}
    log = client.get("/api/models/churn/events", headers=eve).json()["events"]
    assert len(log) == len(before) + 1, "the refusal wrote nothing"
    removals = [
        (e["actor"], e["alias"], e["message"]) for e in log if e["action"] == "alias_removed"
    ]
    assert removals == [("eve", "staging", "retired"), ("ada", "production", None)]
