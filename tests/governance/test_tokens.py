"""Named API tokens in the store (SQLite and PostgreSQL) and the rules of governance.tokens."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from pipetrail.errors import NotFoundError, UsageError
from pipetrail.governance.identity import acting_user, authorize, hash_token, role_allows
from pipetrail.governance.tokens import create_token, manage_as, revoke_token
from pipetrail.provenance.environment import current_user
from pipetrail.storage.metadata.governance import TokenRecord
from pipetrail.storage.metadata.sql.tables import api_token, governance_event
from pipetrail.workspace import Workspace


def _rows(ws: Workspace) -> list[dict[str, object]]:
    with ws.store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(api_token).order_by(api_token.c.id))]


def _log(ws: Workspace) -> list[tuple[str, str, str]]:
    with ws.store.engine.connect() as conn:
        rows = conn.execute(
            select(governance_event).where(governance_event.c.action.like("token_%"))
        ).all()
    return [(r.action, r.actor, r.detail["token"]) for r in rows]


def _create(ws: Workspace, name: str, role: str, token: str | None) -> tuple[TokenRecord, str]:
    actor = manage_as(ws.store, token, f"create token {name!r}")
    return create_token(ws.store, name, role, actor=actor)


def _revoke(ws: Workspace, name: str, token: str | None) -> TokenRecord:
    return revoke_token(ws.store, name, actor=manage_as(ws.store, token, f"revoke {name!r}"))


def test_a_token_is_shown_once_and_only_its_hash_is_stored(workspace: Workspace) -> None:
    store = workspace.store
    assert not store.has_tokens()
    record, secret = create_token(store, "alice", "admin", actor=current_user())
    assert record.name == "alice" and record.role == "admin" and record.active
    assert record.created_by == current_user() and record.last_used_at is None
    assert len(secret) >= 40
    (row,) = _rows(workspace)
    assert row["token_hash"] == hash_token(secret) and secret not in str(row)
    assert store.token_by_hash(hash_token(secret)) == record
    assert store.token_by_hash(hash_token(secret + "x")) is None
    assert store.has_tokens()
    # Created by the token's owner once the store has tokens; each a fresh secret.
    bob, bob_secret = _create(workspace, "bob", "viewer", secret)
    assert bob.created_by == "alice" and bob_secret != secret
    assert [t.name for t in store.list_tokens()] == ["alice", "bob"]
    assert _log(workspace) == [
        ("token_created", current_user(), "alice"),
        ("token_created", "alice", "bob"),
    ]


def test_managing_tokens_needs_an_admin_token_once_there_are_tokens(workspace: Workspace) -> None:
    store = workspace.store
    _, admin = _create(workspace, "root", "admin", None)
    _, editor = _create(workspace, "ed", "editor", admin)
    with pytest.raises(UsageError, match="needs a token with the admin role"):
        _create(workspace, "x", "viewer", None)
    with pytest.raises(UsageError, match=r"needs the admin role; token 'ed'.*editor"):
        _create(workspace, "x", "viewer", editor)
    with pytest.raises(UsageError, match="not a token of this store"):
        _revoke(workspace, "ed", "made-up")
    with pytest.raises(UsageError, match="needs the admin role"):
        _revoke(workspace, "ed", editor)
    assert [t.name for t in store.list_tokens()] == ["root", "ed"]
    assert all(t.active for t in store.list_tokens())


@pytest.mark.parametrize(
    ("name", "role", "problem"),
    [
        ("root", "viewer", "exists already"),
        ("new", "owner", "role 'owner' is not one of: viewer, editor, approver, admin"),
        ("", "viewer", "without surrounding spaces"),
        (" padded", "viewer", "without surrounding spaces"),
        ("admin", "admin", "stands for the server's own token"),
    ],
)
def test_a_bad_token_request_writes_nothing(
    workspace: Workspace, name: str, role: str, problem: str
) -> None:
    _, admin = _create(workspace, "root", "admin", None)
    before = (_rows(workspace), _log(workspace))
    with pytest.raises(UsageError, match=problem):
        _create(workspace, name, role, admin)
    assert (_rows(workspace), _log(workspace)) == before


def test_revoking_is_for_good_and_logged(workspace: Workspace) -> None:
    store = workspace.store
    _, admin = _create(workspace, "root", "admin", None)
    _, secret = _create(workspace, "carol", "approver", admin)
    revoked = _revoke(workspace, "carol", admin)
    assert revoked.revoked_at is not None and not revoked.active
    record = store.token_by_hash(hash_token(secret))
    assert record is not None and not record.active
    with pytest.raises(UsageError, match="revoked already"):
        _revoke(workspace, "carol", admin)
    with pytest.raises(NotFoundError, match="no token named 'dave'"):
        _revoke(workspace, "dave", admin)
    with pytest.raises(UsageError, match="'carol', which was revoked"):
        acting_user(store, secret)
    # A name is never given to a second token, even after its revocation.
    with pytest.raises(UsageError, match="exists already"):
        _create(workspace, "carol", "viewer", admin)
    assert _log(workspace)[-1] == ("token_revoked", "root", "carol")


def test_the_last_active_admin_token_cannot_be_revoked(workspace: Workspace) -> None:
    store = workspace.store
    _, first = _create(workspace, "first", "admin", None)
    with pytest.raises(UsageError, match="last active admin token"):
        _revoke(workspace, "first", first)
    _, second = _create(workspace, "second", "admin", first)
    _revoke(workspace, "first", second)
    with pytest.raises(UsageError, match="last active admin token"):
        _revoke(workspace, "second", second)
    assert store.has_tokens()


def test_last_used_is_written_at_most_once_a_minute(workspace: Workspace) -> None:
    store = workspace.store
    record, _ = _create(workspace, "u", "viewer", None)
    assert store.touch_token(record.id)
    first = store.list_tokens()[0].last_used_at
    assert first is not None
    assert not store.touch_token(record.id, first + timedelta(seconds=59))
    assert store.list_tokens()[0].last_used_at == first
    later = first + timedelta(seconds=61)
    assert store.touch_token(record.id, later)
    assert store.list_tokens()[0].last_used_at == later


def test_the_acting_user_is_the_token_owner(workspace: Workspace) -> None:
    store = workspace.store
    # No named tokens yet: PIPETRAIL_TOKEN can only be a server's single token.
    assert acting_user(store, "the-server-token") == current_user()
    assert authorize(store, None, "admin", action="x") == current_user()
    _, secret = _create(workspace, "erin", "editor", None)
    assert acting_user(store, secret) == "erin"
    assert acting_user(store, f" {secret}\n") == "erin"
    assert acting_user(store, None) == current_user()
    with pytest.raises(UsageError, match="not a token of this store"):
        acting_user(store, "the-server-token")
    assert authorize(store, secret, "editor", action="x") == "erin"


def test_each_role_includes_the_ones_before() -> None:
    assert role_allows("admin", "viewer") and role_allows("approver", "editor")
    assert role_allows("editor", "editor")
    assert not role_allows("editor", "approver") and not role_allows("viewer", "editor")
