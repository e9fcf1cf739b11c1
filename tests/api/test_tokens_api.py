"""Named tokens at the server: 401 without a valid one, login with one, revocation on the next
request, /api/tokens, last_used_at, and how the server's single token lives beside them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from pipetrail.api.auth import CSRF_HEADER, SESSION_COOKIE
from pipetrail.errors import ConfigError
from pipetrail.governance.identity import hash_token
from pipetrail.governance.tokens import create_token, revoke_token
from pipetrail.server import create_app
from pipetrail.storage.metadata.sql.tables import api_token
from pipetrail.workspace import Workspace
from tests.api.conftest import error_of

BASE = "http://pipetrail.example:8765"


@pytest.fixture
def admin_secret(sqlite_workspace: Workspace) -> str:
    return create_token(sqlite_workspace.store, "ada", "admin", actor="setup")[1]


@pytest.fixture
def server(sqlite_workspace: Workspace, admin_secret: str, tmp_path: Path) -> Iterator[TestClient]:
    """Off loopback with no token of its own: the store's named tokens are required."""
    app = create_app(sqlite_workspace, host="0.0.0.0", project_dir=tmp_path)
    with TestClient(app, base_url=BASE) as client:
        yield client


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_requests_need_a_valid_active_token(
    server: TestClient, sqlite_workspace: Workspace, admin_secret: str
) -> None:
    error = error_of(server.get("/api/pipeline_runs"), 401)
    assert error["type"] == "AuthenticationError"
    assert server.get("/api/pipeline_runs").headers["www-authenticate"].startswith("Bearer")
    error_of(server.get("/api/pipeline_runs", headers=_bearer("not-a-token")), 401)
    error_of(server.post("/api/pipeline_runs/1/cancel", headers=_bearer("not-a-token")), 401)
    page = server.get("/pipeline-runs", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")

    _, secret = create_token(sqlite_workspace.store, "vera", "viewer", actor="ada")
    assert server.get("/api/pipeline_runs", headers=_bearer(secret)).status_code == 200
    # Revoked elsewhere (the CLI): refused from the very next request.
    revoke_token(sqlite_workspace.store, "vera", actor="ada")
    error_of(server.get("/api/pipeline_runs", headers=_bearer(secret)), 401)
    assert server.get("/api/pipeline_runs", headers=_bearer(admin_secret)).status_code == 200


def test_the_tokens_api_shows_a_token_once_and_revokes_it(
    server: TestClient, sqlite_workspace: Workspace, admin_secret: str
) -> None:
    made = server.post(
        "/api/tokens", json={"name": "eddie", "role": "editor"}, headers=_bearer(admin_secret)
    )
    assert made.status_code == 201, made.text
    body = made.json()
    secret = body["secret"]
    assert body["token"]["name"] == "eddie" and body["token"]["created_by"] == "ada"
    listed = server.get("/api/tokens", headers=_bearer(admin_secret))
    assert [t["name"] for t in listed.json()["tokens"]] == ["ada", "eddie"]
    assert secret not in listed.text and hash_token(secret) not in listed.text
    with sqlite_workspace.store.engine.connect() as conn:
        stored = conn.execute(select(api_token.c.token_hash).where(api_token.c.name == "eddie"))
        assert stored.scalar_one() == hash_token(secret)

    assert server.get("/api/pipeline_runs", headers=_bearer(secret)).status_code == 200
    taken = server.post(
        "/api/tokens", json={"name": "eddie", "role": "viewer"}, headers=_bearer(admin_secret)
    )
    assert "exists already" in error_of(taken, 422)["message"]
    bad_role = server.post(
        "/api/tokens", json={"name": "x", "role": "owner"}, headers=_bearer(admin_secret)
    )
    error_of(bad_role, 422)
    last = server.delete("/api/tokens/ada", headers=_bearer(admin_secret))
    assert "last active admin token" in error_of(last, 422)["message"]
    error_of(server.delete("/api/tokens/nobody", headers=_bearer(admin_secret)), 404)

    revoked = server.delete("/api/tokens/eddie", headers=_bearer(admin_secret))
    assert revoked.status_code == 200 and revoked.json()["token"]["active"] is False
    error_of(server.get("/api/pipeline_runs", headers=_bearer(secret)), 401)


def test_login_with_a_named_token_and_its_revocation(
    server: TestClient, sqlite_workspace: Workspace
) -> None:
    _, secret = create_token(sqlite_workspace.store, "eddie", "editor", actor="ada")
    _, viewer = create_token(sqlite_workspace.store, "vera", "viewer", actor="ada")
    wrong = server.post("/login", data={"token": "nope", "next": "/api/pipelines"})
    assert wrong.status_code == 401 and SESSION_COOKIE not in server.cookies
    login = server.post("/login", data={"token": secret, "next": "/"}, follow_redirects=False)
    assert login.status_code == 303
    cookie = server.cookies[SESSION_COOKIE]
    assert hash_token(secret) in cookie and secret not in cookie
    page = server.get("/pipeline-runs")
    assert page.status_code == 200 and "eddie" in page.text and "editor" in page.text
    csrf = page.text.split('name="pipetrail-csrf" content="', 1)[1].split('"', 1)[0]
    # The session acts with the token's role: an editor may cancel (404: no such run).
    error_of(server.post("/api/pipeline_runs/999/cancel", headers={CSRF_HEADER: csrf}), 404)
    tokens = server.get("/api/tokens")
    assert "needs the admin role; token 'eddie'" in error_of(tokens, 403)["message"]

    # A forged session (another hash, the same MAC) lets nobody in.
    issued, _, nonce, mac = cookie.split(".")
    server.cookies.clear()
    server.cookies.set(SESSION_COOKIE, f"{issued}.{hash_token(viewer)}.{nonce}.{mac}")
    error_of(server.get("/api/pipelines"), 401)
    server.cookies.clear()
    server.cookies.set(SESSION_COOKIE, cookie)
    assert server.get("/api/pipelines").status_code == 200

    revoke_token(sqlite_workspace.store, "eddie", actor="ada")
    error_of(server.get("/api/pipelines"), 401)
    again = server.post("/login", data={"token": secret, "next": "/"}, follow_redirects=False)
    assert again.status_code == 401


def test_last_used_is_noted_once_a_minute(
    server: TestClient, sqlite_workspace: Workspace, admin_secret: str
) -> None:
    def last_used() -> object:
        return sqlite_workspace.store.list_tokens()[0].last_used_at

    assert last_used() is None
    server.get("/api/pipelines", headers=_bearer(admin_secret))
    first = last_used()
    assert first is not None
    for _ in range(3):
        server.get("/api/pipelines", headers=_bearer(admin_secret))
    assert last_used() == first


def test_the_servers_single_token_beside_named_tokens(
    sqlite_workspace: Workspace, admin_secret: str, tmp_path: Path
) -> None:
    _, viewer = create_token(sqlite_workspace.store, "vera", "viewer", actor="ada")
    # A server whose own token is a viewer's named token gives it no more than a viewer's role.
    app = create_app(sqlite_workspace, token=viewer, host="0.0.0.0", project_dir=tmp_path)
    with TestClient(app, base_url=BASE) as client:
        refused = client.get("/api/tokens", headers=_bearer(viewer))
        assert "token 'vera' has the viewer role" in error_of(refused, 403)["message"]
    app = create_app(sqlite_workspace, token="server-only", host="0.0.0.0", project_dir=tmp_path)
    with TestClient(app, base_url=BASE) as client:
        assert client.get("/api/tokens", headers=_bearer("server-only")).status_code == 200
        assert client.get("/api/tokens", headers=_bearer(admin_secret)).status_code == 200
        error_of(client.get("/api/tokens"), 401)


def test_local_mode_closes_once_the_store_has_tokens(
    sqlite_workspace: Workspace, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="tokens create"):
        create_app(sqlite_workspace, host="0.0.0.0")
    app = create_app(sqlite_workspace, project_dir=tmp_path)
    with TestClient(app) as client:
        assert client.get("/api/pipeline_runs").status_code == 200
        assert client.get("/login", follow_redirects=False).status_code == 303
        _, secret = create_token(sqlite_workspace.store, "ada", "admin", actor="local")
        # Whether the store has tokens is re-read within a second.
        deadline = time.monotonic() + 5
        while client.get("/api/pipeline_runs").status_code == 200:
            assert time.monotonic() < deadline, "the server did not notice the first token"
            time.sleep(0.1)
        error_of(client.get("/api/pipeline_runs"), 401)
        assert client.get("/api/pipeline_runs", headers=_bearer(secret)).status_code == 200
        assert 'name="token"' in client.get("/login").text
