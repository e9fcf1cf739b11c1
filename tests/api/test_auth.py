"""Access: token and login cookie, CSRF on actions, cross-site refusal in local mode."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from pipetrail.api.auth import CSRF_HEADER, SESSION_COOKIE, AccessPolicy, is_loopback
from pipetrail.errors import ConfigError
from pipetrail.server import create_app
from pipetrail.workspace import Workspace
from tests.api.conftest import error_of

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def locked(sqlite_workspace: Workspace) -> Iterator[TestClient]:
    """A client of an app that requires the token (bound to all interfaces)."""
    app = create_app(sqlite_workspace, token=TOKEN, host="0.0.0.0")
    with TestClient(app, base_url="http://pipetrail.example:8765") as client:
        yield client


@pytest.fixture
def local(sqlite_workspace: Workspace) -> Iterator[TestClient]:
    app = create_app(sqlite_workspace)
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        yield client


def test_a_token_is_required_off_loopback(sqlite_workspace: Workspace) -> None:
    with pytest.raises(ConfigError, match="token"):
        create_app(sqlite_workspace, host="0.0.0.0")
    with pytest.raises(ConfigError):
        create_app(sqlite_workspace, token="  ", host="192.168.1.20")
    create_app(sqlite_workspace, host="::1")
    create_app(sqlite_workspace, host="localhost")
    assert is_loopback("127.0.0.2") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")


def test_requests_without_the_token_get_401(locked: TestClient) -> None:
    error = error_of(locked.get("/api/pipeline_runs"), 401)
    assert error["type"] == "AuthenticationError"
    response = locked.get("/api/pipeline_runs")
    assert response.headers["www-authenticate"].startswith("Bearer")
    error_of(locked.get("/openapi.json"), 401)
    error_of(locked.get("/api/pipeline_runs", headers={"Authorization": "Bearer wrong"}), 401)
    error_of(locked.get("/api/pipeline_runs", headers={"Authorization": f"Basic {TOKEN}"}), 401)
    error_of(locked.post("/api/pipeline_runs/1/cancel"), 401)
    # Pages redirect to the login form, keeping where the person was going.
    page = locked.get("/pipeline-runs?status=failed", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fpipeline-runs%3Fstatus%3Dfailed"

    ok = locked.get("/api/pipeline_runs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    # The bearer header alone is enough for an action.
    action = locked.post(
        "/api/pipeline_runs/999/cancel", headers={"Authorization": f"bearer {TOKEN}"}
    )
    error_of(action, 404)


def test_login_sets_a_strict_cookie_and_actions_need_the_csrf_header(locked: TestClient) -> None:
    form = locked.get("/login?next=/api/pipelines")
    assert form.status_code == 200 and 'name="token"' in form.text
    wrong = locked.post("/login", data={"token": "nope", "next": "/api/pipelines"})
    assert wrong.status_code == 401 and "not right" in wrong.text
    assert SESSION_COOKIE not in locked.cookies

    login = locked.post(
        "/login", data={"token": TOKEN, "next": "/api/pipelines"}, follow_redirects=False
    )
    assert login.status_code == 303 and login.headers["location"] == "/api/pipelines"
    cookie = login.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert locked.get("/api/pipelines").status_code == 200  # the cookie jar sends it

    # An action with only the cookie is refused; with the session's CSRF value it passes.
    refused = error_of(locked.post("/api/pipeline_runs/999/cancel"), 403)
    assert CSRF_HEADER in refused["message"]
    error_of(locked.post("/api/pipeline_runs/999/cancel", headers={CSRF_HEADER: "forged"}), 403)
    policy = AccessPolicy(TOKEN, "0.0.0.0")
    session = locked.cookies[SESSION_COOKIE]
    csrf = policy.csrf_token(session)
    error_of(locked.post("/api/pipeline_runs/999/cancel", headers={CSRF_HEADER: csrf}), 404)
    # ... unless it comes from another site anyway.
    error_of(
        locked.post(
            "/api/pipeline_runs/999/cancel",
            headers={CSRF_HEADER: csrf, "Origin": "https://evil.example"},
        ),
        403,
    )
    # A redirect target off this server is ignored.
    off = locked.post(
        "/login", data={"token": TOKEN, "next": "//evil.example/x"}, follow_redirects=False
    )
    assert off.headers["location"] == "/"

    locked.post("/logout", follow_redirects=False)
    assert SESSION_COOKIE not in locked.cookies
    error_of(locked.get("/api/pipelines"), 401)


def test_sessions_expire_and_die_with_the_token() -> None:
    policy = AccessPolicy(TOKEN, "0.0.0.0")
    session = policy.new_session(now=1_000_000)
    assert policy.session_valid(session, now=1_000_010)
    assert not policy.session_valid(session, now=1_000_000 + 8 * 24 * 3600)
    assert not AccessPolicy("another-token", "0.0.0.0").session_valid(session, now=1_000_010)
    issued, nonce, mac = session.split(".")
    assert not policy.session_valid(f"{int(issued) + 1}.{nonce}.{mac}", now=1_000_010)
    assert not policy.session_valid("garbage", now=1_000_010)


def test_cross_site_actions_are_refused_in_local_mode(local: TestClient) -> None:
    url = "/api/pipeline_runs/999/cancel"
    # Scripts send no browser headers: allowed (404: no such run).
    error_of(local.post(url), 404)
    # Same-origin browser requests: allowed.
    error_of(local.post(url, headers={"Origin": "http://127.0.0.1:8765"}), 404)
    error_of(local.post(url, headers={"Sec-Fetch-Site": "same-origin"}), 404)
    error_of(local.post(url, headers={"Referer": "http://127.0.0.1:8765/pipeline-runs"}), 404)
    # Other sites, other local servers (same-site), opaque origins: refused.
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "http://127.0.0.1:9999"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Referer": "https://evil.example/page"},
    ):
        error = error_of(local.post(url, headers=headers), 403)
        assert error["type"] == "ForbiddenError", headers
    error_of(local.post("/login", headers={"Origin": "https://evil.example"}), 403)
    # Reads need nothing in local mode, and GET never acts.
    assert local.get("/api/pipeline_runs", headers={"Origin": "http://127.0.0.1:8765"}).is_success


def test_dns_rebinding_is_refused_in_local_mode(local: TestClient) -> None:
    headers = {"Host": "attacker.example:8765", "Sec-Fetch-Site": "same-origin"}
    error = error_of(local.get("/api/pipeline_runs", headers=headers), 403)
    assert "attacker.example" in error["message"]
    assert local.get("/api/pipeline_runs", headers={"Host": "localhost:8765"}).is_success


def test_the_csrf_value_reaches_pages(sqlite_workspace: Workspace) -> None:
    app = create_app(sqlite_workspace)
    seen: dict[str, object] = {}

    @app.get("/state")
    def state(request: Request) -> dict[str, object]:
        seen.update(csrf=request.state.csrf_token, auth=request.state.auth)
        return {}

    with TestClient(app) as client:
        assert client.get("/state").status_code == 200
        token = str(seen["csrf"])
        assert seen["auth"] == "local" and len(token) == 64
        # In local mode, the page's value also vouches for a request with a foreign Referer.
        response = client.post(
            "/api/pipeline_runs/999/cancel",
            headers={CSRF_HEADER: token, "Referer": "https://elsewhere.example/"},
        )
        error_of(response, 404)
