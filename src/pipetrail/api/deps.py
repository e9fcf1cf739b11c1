"""Dependency providers: the app's workspace and run launcher, and shared parameter types."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Path, Request

from pipetrail.api.actions import RunLauncher
from pipetrail.api.errors import ApiError
from pipetrail.client import Reader
from pipetrail.core.bounds import MAX_ID, check_time
from pipetrail.errors import UsageError
from pipetrail.provenance.environment import current_user
from pipetrail.workspace import Workspace

__all__ = [
    "NO_NUL",
    "Actor",
    "ApiContext",
    "BlockRunId",
    "Context",
    "RunId",
    "get_actor",
    "get_context",
    "utc",
]

#: Text parameters may not hold NUL characters (PostgreSQL text cannot store them).
NO_NUL = r"^[^\x00]*$"


@dataclass(frozen=True)
class ApiContext:
    """What every route works with; one per app, kept in ``app.state.pipetrail``."""

    workspace: Workspace
    launcher: RunLauncher

    @property
    def reader(self) -> Reader:
        """A fresh client reader over the workspace's stores."""
        return self.workspace.reader()


def get_context(request: Request) -> ApiContext:
    """The app's :class:`ApiContext`."""
    context: ApiContext = request.app.state.pipetrail
    return context


Context = Annotated[ApiContext, Depends(get_context)]


def get_actor(request: Request) -> str:
    """The user a request acts as: its token's user (set by the access middleware), else the
    user the server runs as."""
    actor = getattr(request.state, "actor", None)
    return actor if isinstance(actor, str) and actor else current_user()


Actor = Annotated[str, Depends(get_actor)]
RunId = Annotated[int, Path(ge=1, le=MAX_ID, description="Pipeline run id.")]
BlockRunId = Annotated[int, Path(ge=1, le=MAX_ID, description="Block run id.")]


def utc(value: datetime | None, name: str) -> datetime | None:
    """``value`` as a UTC-aware time; a time without an offset is taken as UTC.

    Raises:
        ApiError: 422 for a time outside the range of ``core.bounds`` (naming ``name``).
    """
    if value is None:
        return None
    try:
        return check_time(value, name)
    except UsageError as exc:
        raise ApiError(422, "ValidationError", str(exc)) from None
