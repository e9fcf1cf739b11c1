"""Roles on every route: each role against every route of the app, and the table's completeness."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from pipetrail.api.roles import PUBLIC, READ_METHODS, ROUTE_ROLES, least_role, route_index
from pipetrail.governance.identity import role_allows
from pipetrail.governance.tokens import create_token
from pipetrail.server import create_app
from pipetrail.storage.metadata.governance import ROLES, Role
from pipetrail.storage.metadata.sql.tables import api_token, metadata
from pipetrail.workspace import Workspace
from tests.api.conftest import error_of, record
from tests.conftest import FlowWriter

USERS: dict[Role, str] = {"viewer": "vera", "editor": "eddie", "approver": "april", "admin": "ada"}
_PARAM = re.compile(r"\{[^}]*\}")

TINY = """
@pt.step
def one(x: int = 1):
    return x

pipeline = pt.Pipeline("tiny", [one])
"""


@dataclass
class Governed:
    """An app over a store with one token per role, bound off loopback (tokens required)."""

    app: FastAPI
    client: TestClient
    workspace: Workspace
    secrets: dict[Role, str]

    def headers(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[role]}"}


@pytest.fixture
def governed(sqlite_workspace: Workspace, tmp_path: Path) -> Iterator[Governed]:
    secrets: dict[Role, str] = {}
    for role, name in USERS.items():
        secrets[role] = create_token(sqlite_workspace.store, name, role, actor="setup")[1]
    app = create_app(sqlite_workspace, host="0.0.0.0", project_dir=tmp_path)
    with TestClient(app, base_url="http://pipetrail.example:8765") as client:
        yield Governed(app, client, sqlite_workspace, secrets)
    assert app.state.pipetrail.launcher.wait(30)


def app_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path template) the app serves; HEAD goes with GET."""
    found = {
        (method, template)
        for methods, template in route_index(app).routes()
        for method in (methods or {"GET"})
        if method != "HEAD"
    }
    return sorted(found, key=lambda r: (r[1], r[0]))


def concrete(template: str) -> str:
    """A path the template matches, naming nothing that exists (ids and names alike)."""
    return _PARAM.sub("999999", template)


def _role_refusal(response: object) -> str | None:
    """The role a refusal names, when the response is the middleware's role refusal."""
    status = getattr(response, "status_code", 0)
    text = str(getattr(response, "text", ""))
    found = re.search(r"needs the (\w+) role", text)
    return found.group(1) if status == 403 and found else None


def test_every_route_of_the_app_has_a_role(governed: Governed) -> None:
    routes = app_routes(governed.app)
    assert len(routes) > 40
    missing = [f"{m} {p}" for m, p in routes if least_role(m, p) is None]
    assert missing == [], f"routes without a role in api/roles.py: {missing}"
    stale = sorted(f"{m} {p}" for m, p in ROUTE_ROLES if (m, p) not in routes)
    assert stale == [], f"api/roles.py names routes the app does not have: {stale}"
    # Only routes that are not reads need an entry; reads above viewer are the exceptions.
    above_viewer_reads = {
        p for (m, p), need in ROUTE_ROLES.items() if m in READ_METHODS and need != "viewer"
    }
    assert above_viewer_reads <= {"/api/tokens", "/login"}


@pytest.mark.parametrize("role", ROLES)
def test_each_role_on_every_route(governed: Governed, role: Role) -> None:
    wrong: list[str] = []
    refused: set[tuple[str, str]] = set()
    for method, template in app_routes(governed.app):
        need = least_role(method, template)
        if need == PUBLIC:
            continue
        assert need is not None
        body: dict[str, Any] | None = {} if method in ("POST", "PUT", "PATCH") else None
        response = governed.client.request(
            method, concrete(template), headers=governed.headers(role), json=body
        )
        named = _role_refusal(response)
        if role_allows(role, need):
            if named is not None or response.status_code == 401:
                wrong.append(f"{role} refused on {method} {template}: {response.text[:200]}")
        elif named != need:
            wrong.append(
                f"{role} not refused for {need} on {method} {template}: "
                f"{response.status_code} {response.text[:200]}"
            )
        else:
            refused.add((method, template))
    assert wrong == []
    actions = {
        (m, p)
        for m, p in app_routes(governed.app)
        if m not in READ_METHODS and least_role(m, p) != PUBLIC
    }
    if role == "viewer":
        # A viewer reads: every action of the app is refused.
        assert refused >= actions and actions
    if role == "admin":
        assert refused == set()


def test_the_refusal_names_the_role_needed_and_the_token(governed: Governed) -> None:
    response = governed.client.post(
        "/api/pipeline_runs/5/cancel", headers=governed.headers("viewer")
    )
    error = error_of(response, 403)
    assert error["type"] == "ForbiddenError"
    assert error["message"] == (
        "POST /api/pipeline_runs/{run_id}/cancel needs the editor role; token 'vera' has the "
        "viewer role"
    )
    tokens = governed.client.get("/api/tokens", headers=governed.headers("approver"))
    assert "needs the admin role" in error_of(tokens, 403)["message"]


def _counts(ws: Workspace) -> dict[str, int]:
    with ws.store.engine.connect() as conn:
        return {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in metadata.sorted_tables
        }


def test_a_refused_action_writes_nothing(governed: Governed, flow_file: FlowWriter) -> None:
    ws = governed.workspace
    run = record(ws, flow_file(TINY, name="tiny_flow"))
    before = _counts(ws)
    with ws.store.engine.connect() as conn:
        tokens_before = conn.execute(select(api_token.c.name, api_token.c.revoked_at)).all()
    attempts: list[tuple[Role, str, str, dict[str, Any] | None]] = [
        ("viewer", "POST", f"/api/pipeline_runs/{run.id}/retry", {}),
        ("viewer", "POST", "/api/pipeline_runs/retry", {"ids": [run.id]}),
        ("viewer", "POST", "/api/pipelines/tiny/runs", {}),
        ("editor", "POST", "/api/tokens", {"name": "mallory", "role": "admin"}),
        ("approver", "DELETE", "/api/tokens/vera", None),
        ("editor", "DELETE", f"/api/runs/{run.id}", None),
        ("approver", "POST", "/api/gc", {}),
        ("viewer", "DELETE", "/api/models/churn/aliases/production", None),
    ]
    for role, method, url, body in attempts:
        response = governed.client.request(method, url, headers=governed.headers(role), json=body)
        assert _role_refusal(response) is not None, (role, method, url, response.text)
    assert _counts(ws) == before
    with ws.store.engine.connect() as conn:
        assert conn.execute(select(api_token.c.name, api_token.c.revoked_at)).all() == (
            tokens_before
        )
    assert ws.store.get_run(run.id).status.value == "completed"
