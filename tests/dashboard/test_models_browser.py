"""The model registry's pages in a real browser, each user logged in with a named token of
their own: an approver approves a promotion another user asked for and sees the alias move,
another rejects one from the model's page, and a requester's own approval (and a viewer's) is
refused with the server's message.

The browser acts through the login cookie, so every action also proves the page sends the CSRF
header the cookie needs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from playwright.sync_api import Page, expect

from pipetrail.governance.registry import promote, register, set_policy
from pipetrail.governance.tokens import create_token
from pipetrail.storage.metadata.governance import PromotionRequest
from tests.conftest import FlowWriter
from tests.dashboard.conftest import LiveServer
from tests.dashboard.test_models_pages import SCRIPT, train

Shot = Callable[..., Path]

NAME = "churn-eu.v2"
#: The users and their roles: alice asks, bob and carol approve, vera only looks.
USERS = {"alice": "editor", "bob": "approver", "carol": "approver", "vera": "viewer"}


@dataclass(frozen=True)
class Registry:
    server: LiveServer
    tokens: dict[str, str]

    def request(self, version: int, alias: str, reason: str, by: str) -> PromotionRequest:
        """A request opened by ``by``, as ``pipetrail models promote`` would open it."""
        made = promote(self.server.workspace.store, NAME, version, alias, actor=by, reason=reason)
        assert made.request is not None
        return made.request

    def login(self, page: Page, user: str, target: str) -> None:
        """Log ``user`` in with their token through the login form, landing on ``target``."""
        page.goto(f"{self.server.url}/login?{urlencode({'next': target})}")
        page.fill("#token", self.tokens[user])
        page.click('button[type="submit"]')
        page.wait_for_url(f"{self.server.url}{target}")


@pytest.fixture
def registered(server: LiveServer, flow_file: FlowWriter) -> Registry:
    """``NAME`` v1 and v2 (alice's), production at v1 and then needing one approval; a named
    token for each of USERS (so the server asks every request for one)."""
    server.require_api()
    store = server.workspace.store
    for run in train(server.workspace, flow_file, 2, 5):
        register(store, NAME, run.id, artifact="model", actor="alice")
    promote(store, NAME, 1, "production", actor="alice", reason="the first")
    set_policy(store, NAME, "production", 1, actor="ops")
    tokens = {user: create_token(store, user, role, actor="ops")[1] for user, role in USERS.items()}
    return Registry(server, tokens)


def test_approve_in_the_browser_moves_the_alias(
    page: Page, registered: Registry, screenshot: Shot
) -> None:
    server = registered.server
    request = registered.request(2, "production", f"better loss {SCRIPT}", "alice")
    registered.login(page, "bob", "/models")
    page.get_by_role("link", name="Approvals", exact=True).first.click()
    page.wait_for_url(f"{server.url}/approvals")
    row = page.locator(f'[data-role="pending-table"] tr[data-request="{request.id}"]')
    expect(row.locator('[data-role="reason"]')).to_have_text(f"better loss {SCRIPT}")
    expect(row.locator('[data-role="approvals"]')).to_have_text("0 / 1")
    expect(row.locator('[data-role="requester"]')).to_contain_text("alice")
    expect(row.locator('[data-role="promotion"]')).to_have_text(
        re.compile(r"^production → v2\s*now v1$")
    )
    screenshot(page, "approvals")

    row.locator('input[name="comment"]').fill("checked the <b>metrics</b>")
    with page.expect_response(re.compile(r"/api/promotions/\d+/approve$")) as answer:
        row.get_by_role("button", name="Approve").click()
    assert answer.value.status == 200
    expect(page.locator(".toast")).to_contain_text(
        f"Request #{request.id} approved: the alias moved"
    )
    # The list is read again: the request has left it.
    expect(page.locator('[data-role="pending-table"] tr.empty')).to_have_text(
        "No requests wait for approval."
    )
    decided = server.workspace.store.get_promotion(request.id)
    assert decided.status == "approved"
    assert [(d.actor, d.comment) for d in decided.decisions] == [
        ("bob", "checked the <b>metrics</b>")
    ]

    page.get_by_role("link", name="Models", exact=True).first.click()
    page.wait_for_url(f"{server.url}/models")
    listed = page.locator(f'table.models tr[data-model="{NAME}"]')
    expect(listed.locator('[data-role="aliases"]')).to_have_text("production → v2")
    expect(listed.locator('[data-role="pending"]')).to_have_text("0")
    listed.locator("a.model-link").click()
    page.wait_for_url(f"{server.url}/models/{quote(NAME, safe='')}")
    expect(page.locator('[data-role="model-name"]')).to_have_text(NAME)
    expect(page.locator('#model-summary [data-alias="production"]')).to_have_attribute(
        "data-version", "2"
    )
    expect(page.locator('tr[data-version="2"] [data-role="version-aliases"]')).to_have_text(
        "production"
    )
    history = page.locator('[data-role="history"] tbody tr')
    expect(history.first).to_have_attribute("data-action", "alias_moved")
    expect(history.first.locator('[data-role="actor"]')).to_have_text("bob")
    expect(history.first.locator('[data-role="summary"]')).to_have_text(
        "moved production → v2 (was v1)"
    )
    expect(history.first.locator('[data-role="message"]')).to_have_text(
        "checked the <b>metrics</b>"
    )
    expect(history.nth(1)).to_have_attribute("data-action", "promotion_approved")
    expect(history.nth(2).locator('[data-role="actor"]')).to_have_text("alice")
    expect(history.nth(2).locator('[data-role="message"]')).to_have_text(f"better loss {SCRIPT}")
    screenshot(page, "model")

    # The run page the version links to.
    page.locator('tr[data-version="2"] [data-role="run"] a').click()
    page.wait_for_url(re.compile(r"/pipelines/trainer/runs/\d+$"))


def test_reject_from_the_model_page(page: Page, registered: Registry, screenshot: Shot) -> None:
    server = registered.server
    request = registered.request(2, "production", "try it", "alice")
    registered.login(page, "carol", f"/models/{quote(NAME, safe='')}")
    row = page.locator(f'#model-pending tr[data-request="{request.id}"]')
    row.locator('input[name="comment"]').fill("loss is worse on the holdout")
    row.get_by_role("button", name="Reject").click()
    expect(page.locator(".toast")).to_contain_text(f"Request #{request.id} rejected")
    # The model's page reloads: the request is gone, the alias stayed, the history says why.
    expect(page.locator("#model-pending tr.empty")).to_have_text("No requests wait for approval.")
    expect(page.locator('#model-summary [data-alias="production"]')).to_have_attribute(
        "data-version", "1"
    )
    newest = page.locator('[data-role="history"] tbody tr').first
    expect(newest).to_have_attribute("data-action", "promotion_rejected")
    expect(newest.locator('[data-role="actor"]')).to_have_text("carol")
    expect(newest.locator('[data-role="message"]')).to_have_text("loss is worse on the holdout")
    rejected = server.workspace.store.get_promotion(request.id)
    assert rejected.status == "rejected"
    assert [(d.actor, d.decision) for d in rejected.decisions] == [("carol", "rejected")]
    screenshot(page, "model-rejected")


def _refused(page: Page, registered: Registry, request: PromotionRequest) -> str:
    """Click Approve on ``request``, which the server refuses: the row's message and the
    status; nothing changed, and the row and its buttons stay."""
    row = page.locator(f'[data-role="pending-table"] tr[data-request="{request.id}"]')
    with page.expect_response(re.compile(r"/api/promotions/\d+/approve$")) as answer:
        row.get_by_role("button", name="Approve").click()
    error = row.locator('[data-role="error"]')
    expect(error).to_be_visible()
    expect(error).to_contain_text(f"Could not approve request #{request.id}: ")
    expect(page.locator(".toast.error")).to_contain_text(f"Could not approve request #{request.id}")
    store = registered.server.workspace.store
    after = store.get_promotion(request.id)
    assert after.status == "pending" and after.decisions == ()
    assert store.get_model(NAME).aliases == {"production": 1}
    expect(row.locator('[data-role="approvals"]')).to_have_text("0 / 1")
    expect(row.get_by_role("button", name="Approve")).to_be_enabled()
    return f"{answer.value.status} {error.text_content()}"


def test_approving_ones_own_request_is_refused_with_the_servers_message(
    page: Page, registered: Registry, screenshot: Shot
) -> None:
    request = registered.request(2, "production", "mine", "bob")
    registered.login(page, "bob", "/approvals")
    status, _, message = _refused(page, registered, request).partition(" ")
    # Refused by the rule (the role would allow it): a 4xx, not a 403.
    assert status.startswith("4") and status != "403", status
    assert f"'bob' requested promotion {request.id} and may not approve it" in message
    screenshot(page, "approvals-refused")


def test_a_viewer_cannot_approve_and_is_told_the_role_needed(
    page: Page, registered: Registry
) -> None:
    request = registered.request(2, "production", "for review", "alice")
    registered.login(page, "vera", "/approvals")
    status, _, message = _refused(page, registered, request).partition(" ")
    assert status == "403"
    assert "approver" in message
