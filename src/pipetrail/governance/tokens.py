"""Named API tokens: make one (shown once, only its hash kept), list them, revoke one.

Who may manage tokens: anyone while the store has none (the first token is how a store gets
governed), then only the owner of an active ``admin`` token.
"""

from __future__ import annotations

import secrets

from pipetrail.errors import UsageError
from pipetrail.governance.identity import authorize, hash_token
from pipetrail.storage.metadata.governance import ROLES, Role, TokenRecord, TokenStore

__all__ = ["TOKEN_BYTES", "check_role", "create_token", "revoke_token"]

#: Random bytes in a token (URL-safe base64: 43 characters).
TOKEN_BYTES = 32


def check_role(text: str) -> Role:
    """``text`` as a role.

    Raises:
        UsageError: it is not one of :data:`ROLES`.
    """
    if text not in ROLES:
        raise UsageError(f"role {text!r} is not one of: {', '.join(ROLES)}")
    return text


def create_token(
    store: TokenStore, name: str, role: str, *, token: str | None
) -> tuple[TokenRecord, str]:
    """Make a token for user ``name`` with ``role``; returns its record and the token itself,
    which is never stored (only its SHA-256) and cannot be shown again.

    Args:
        token: the caller's own token (``PIPETRAIL_TOKEN``, a bearer token): it must be an
            active admin token once the store has tokens.

    Raises:
        UsageError: a bad role or name, a name taken (revoked tokens included), or the caller
            is not allowed (no admin token while the store has tokens).
    """
    checked = check_role(role)
    if not name.strip() or name != name.strip():
        raise UsageError(f"token name {name!r}: give a name without surrounding spaces")
    actor = authorize(store, token, "admin", action=f"create token {name!r}")
    secret = secrets.token_urlsafe(TOKEN_BYTES)
    record = store.create_token(name, checked, hash_token(secret), actor)
    return record, secret


def revoke_token(store: TokenStore, name: str, *, token: str | None) -> TokenRecord:
    """Revoke token ``name``: requests with it are refused from the next one on.

    Raises:
        NotFoundError: no token of that name.
        UsageError: revoked already, the last active admin token, or the caller is not an
            admin.
    """
    actor = authorize(store, token, "admin", action=f"revoke token {name!r}")
    return store.revoke_token(name, actor)
