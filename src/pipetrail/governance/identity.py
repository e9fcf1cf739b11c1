"""Who is acting: the owner of a named API token, else the local user."""

from __future__ import annotations

import hashlib

from pipetrail.errors import UsageError
from pipetrail.provenance.environment import current_user
from pipetrail.storage.metadata.governance import TokenStore

__all__ = ["acting_user", "hash_token"]


def hash_token(token: str) -> str:
    """What the store keeps of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def acting_user(store: TokenStore, token: str | None) -> str:
    """The user a command acts as: the owner of ``token`` (``PIPETRAIL_TOKEN``), else the local user.

    Raises:
        UsageError: ``token`` is set but is no active token of this store (a typo must not
            silently act as the local user).
    """
    if not token:
        return current_user()
    record = store.token_by_hash(hash_token(token))
    if record is None or not record.active:
        raise UsageError("PIPETRAIL_TOKEN is not an active token of this store")
    return record.name
