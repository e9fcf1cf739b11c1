"""Who is acting: the owner of a named API token, else the local user; and what a role allows."""

from __future__ import annotations

import hashlib

from pipetrail.errors import UsageError
from pipetrail.provenance.environment import current_user
from pipetrail.storage.metadata.governance import ROLES, Role, TokenRecord, TokenStore

__all__ = ["acting_user", "authorize", "hash_token", "role_allows", "token_owner"]


def hash_token(token: str) -> str:
    """What the store keeps of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def role_allows(role: Role, needed: Role) -> bool:
    """Whether ``role`` may do what ``needed`` may (each role includes the ones before it)."""
    return ROLES.index(role) >= ROLES.index(needed)


def token_owner(store: TokenStore, token: str) -> TokenRecord:
    """The active token record ``token`` is.

    Raises:
        UsageError: it is no active token of this store (a typo must not silently act as
            someone else).
    """
    record = store.token_by_hash(hash_token(token.strip()))
    if record is None:
        raise UsageError("PIPETRAIL_TOKEN is not a token of this store; see: pipetrail tokens list")
    if not record.active:
        raise UsageError(f"PIPETRAIL_TOKEN is token {record.name!r}, which was revoked")
    return record


def acting_user(store: TokenStore, token: str | None) -> str:
    """The user a command acts as: the owner of ``token`` (``PIPETRAIL_TOKEN``), else the local user.

    While the store has no named tokens, ``PIPETRAIL_TOKEN`` can only be a server's single
    access token (``pipetrail ui --token``), which names nobody: the local user acts.

    Raises:
        UsageError: ``token`` is set, the store has tokens, and it is no active one of them.
    """
    if not token or not token.strip() or not store.has_tokens():
        return current_user()
    return token_owner(store, token).name


def authorize(store: TokenStore, token: str | None, needed: Role, *, action: str) -> str:
    """The user who may do ``action`` (which needs role ``needed``) with ``token``.

    While the store has no tokens everyone may (the local user acts); once it has, ``token``
    must be an active token whose role includes ``needed``.

    Raises:
        UsageError: no token, a token that is not active here, or a role below ``needed``
            (naming the role needed and the one the token has).
    """
    if not store.has_tokens():
        return current_user()
    if not token or not token.strip():
        raise UsageError(
            f"{action} needs a token with the {needed} role: this store has named tokens; set "
            "PIPETRAIL_TOKEN to yours"
        )
    record = token_owner(store, token)
    if not role_allows(record.role, needed):
        raise UsageError(
            f"{action} needs the {needed} role; token {record.name!r} (PIPETRAIL_TOKEN) has "
            f"the {record.role} role"
        )
    return record.name
