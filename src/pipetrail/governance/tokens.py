"""Named API tokens: make one (shown once, only its hash kept), list them, revoke one.

Who may manage tokens: anyone while the store has none (the first token is how a store gets
governed), then only the owner of an active ``admin`` token.
"""

from __future__ import annotations

import secrets

from pipetrail.errors import UsageError
from pipetrail.governance.identity import authorize, hash_token
from pipetrail.storage.metadata.governance import ROLES, Role, TokenRecord, TokenStore

__all__ = [
    "SERVER_TOKEN_USER",
    "TOKEN_BYTES",
    "check_role",
    "create_token",
    "manage_as",
    "revoke_token",
]

#: The user a server's single access token (``pipetrail ui --token``) acts as, with the admin
#: role; no named token may take the name, so the record says which of the two acted.
SERVER_TOKEN_USER = "admin"

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


def create_token(store: TokenStore, name: str, role: str, *, actor: str) -> tuple[TokenRecord, str]:
    """Make a token for user ``name`` with ``role``, on behalf of ``actor``; returns its record
    and the token itself, which is never stored (only its SHA-256) and cannot be shown again.

    Whether ``actor`` may is the caller's to check first: :func:`authorize` with the admin
    role (the CLI), or the route's role (the server).

    Raises:
        UsageError: a bad role or name, or a name taken (revoked tokens included) or
            reserved (:data:`SERVER_TOKEN_USER`); nothing is written.
    """
    checked = check_role(role)
    if not name.strip() or name != name.strip():
        raise UsageError(f"token name {name!r}: give a name without surrounding spaces")
    if name == SERVER_TOKEN_USER:
        raise UsageError(
            f"token name {name!r} stands for the server's own token (pipetrail ui --token); "
            "name the token for its user"
        )
    secret = secrets.token_urlsafe(TOKEN_BYTES)
    record = store.create_token(name, checked, hash_token(secret), actor)
    return record, secret


def revoke_token(store: TokenStore, name: str, *, actor: str) -> TokenRecord:
    """Revoke token ``name`` on behalf of ``actor``: requests with it are refused from the
    next one on (whether ``actor`` may is the caller's to check, as for :func:`create_token`).

    Raises:
        NotFoundError: no token of that name.
        UsageError: revoked already, or the last active admin token.
    """
    return store.revoke_token(name, actor)


def manage_as(store: TokenStore, token: str | None, action: str) -> str:
    """Who manages tokens with ``token`` (``PIPETRAIL_TOKEN``): anyone while the store has no
    tokens (the local user), then only an active admin token's owner.

    Raises:
        UsageError: the store has tokens and ``token`` is none of its active admin tokens.
    """
    return authorize(store, token, "admin", action=action)
