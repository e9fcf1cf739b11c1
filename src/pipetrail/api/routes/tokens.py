"""Named API tokens: list, create (the token is in the answer, once), revoke. Admins only
(``api/roles.py``); while the store has no tokens, the first one is made like any local action.

The request and response models are here, next to their three routes, not in ``schemas.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from pipetrail.api.deps import NO_NUL, Actor, Context
from pipetrail.api.errors import ERROR_RESPONSES
from pipetrail.governance.tokens import create_token, revoke_token
from pipetrail.storage.metadata.governance import Role, TokenRecord

__all__ = ["TokenCreate", "TokenCreated", "TokenEnvelope", "TokenList", "TokenOut", "router"]

_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    403: {**ERROR_RESPONSES[403], "description": "Managing tokens needs the admin role."},
    404: {**ERROR_RESPONSES[404], "description": "No token of that name."},
    422: {
        **ERROR_RESPONSES[422],
        "description": "A bad role or name, a name taken (revoked tokens keep theirs), or the "
        "last active admin token (it cannot be revoked).",
    },
}

router = APIRouter(prefix="/api", tags=["tokens"], responses=_RESPONSES)

TokenName = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL, strip_whitespace=False)
]


class TokenOut(BaseModel):
    """A named token: its user, role and use; never the token itself."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="The token's user: whom its requests are attributed to.")
    role: Role = Field(description="viewer, editor, approver or admin.")
    created_at: datetime = Field(description="When it was made (UTC).")
    created_by: str = Field(description="Who made it.")
    last_used_at: datetime | None = Field(description="Last request with it (within a minute).")
    revoked_at: datetime | None = Field(description="When it was revoked; null while active.")
    active: bool = Field(description="Whether requests with it are let in.")


class TokenList(BaseModel):
    model_config = ConfigDict(frozen=True)

    tokens: list[TokenOut]


class TokenEnvelope(BaseModel):
    model_config = ConfigDict(frozen=True)

    token: TokenOut


class TokenCreated(BaseModel):
    """The new token's record and the token: shown this once, the store keeps only a hash."""

    model_config = ConfigDict(frozen=True)

    token: TokenOut
    secret: str = Field(description="The token (Authorization: Bearer ...); not shown again.")


class TokenCreate(BaseModel):
    """A token for user ``name`` with ``role``."""

    model_config = ConfigDict(extra="forbid")

    name: TokenName = Field(description="The user the token stands for; never reused.")
    role: Role = Field(description="viewer, editor, approver or admin.")


def _out(record: TokenRecord) -> TokenOut:
    return TokenOut(
        name=record.name,
        role=record.role,
        created_at=record.created_at,
        created_by=record.created_by,
        last_used_at=record.last_used_at,
        revoked_at=record.revoked_at,
        active=record.active,
    )


@router.get("/tokens", response_model=TokenList, summary="List the named tokens")
def list_tokens(ctx: Context) -> TokenList:
    """Every token, revoked ones included, oldest first."""
    return TokenList(tokens=[_out(t) for t in ctx.workspace.store.list_tokens()])


@router.post(
    "/tokens", response_model=TokenCreated, status_code=201, summary="Create a named token"
)
def create_named_token(ctx: Context, actor: Actor, body: TokenCreate) -> TokenCreated:
    """Make a token for a user; the answer holds the token, which cannot be shown again."""
    record, secret = create_token(ctx.workspace.store, body.name, body.role, actor=actor)
    return TokenCreated(token=_out(record), secret=secret)


@router.delete("/tokens/{name}", response_model=TokenEnvelope, summary="Revoke a named token")
def revoke_named_token(
    ctx: Context,
    actor: Actor,
    name: Annotated[str, Path(max_length=200, pattern=NO_NUL, description="Token name.")],
) -> TokenEnvelope:
    """Revoke a token for good: its next request is refused (401)."""
    return TokenEnvelope(token=_out(revoke_token(ctx.workspace.store, name, actor=actor)))
