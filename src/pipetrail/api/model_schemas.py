"""Request and response models of the model registry's routes (``/api/models``, ``/api/promotions``).

The response fields are the JSON forms of ``governance.views``, which ``pipetrail models ...
--json`` prints too: one shape for both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints

from pipetrail.api.deps import NO_NUL

__all__ = [
    "AliasName",
    "DecisionIn",
    "EventList",
    "EventOut",
    "ModelDetail",
    "ModelEnvelope",
    "ModelList",
    "ModelName",
    "ModelOut",
    "PolicyIn",
    "PromotionIn",
    "PromotionOutcome",
    "RequestEnvelope",
    "RequestList",
    "RequestOut",
    "VersionCreate",
    "VersionEnvelope",
    "VersionList",
    "VersionOut",
]

#: A model's name as a path parameter (the registry checks it in full).
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
AliasName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NO_NUL)]
_Text = Annotated[str, StringConstraints(max_length=10_000, pattern=NO_NUL)]
_Short = Annotated[str, StringConstraints(min_length=1, max_length=300, pattern=NO_NUL)]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelOut(_Out):
    """A registered model: its latest version, aliases and approval policies."""

    name: str
    description: str | None = Field(description="Given at its first registration.")
    created_at: datetime = Field(description="When version 1 was registered (UTC).")
    created_by: str = Field(description="Who registered version 1.")
    latest_version: int | None = Field(description="The highest version number.")
    aliases: dict[str, int] = Field(description="Alias → the version it points at.")
    policies: dict[str, int] = Field(description="Alias → approvals needed to move it.")


class ModelList(_Out):
    models: list[ModelOut]


class RunBrief(_Out):
    """The run a version came from (pathspec and status are null once the run is deleted)."""

    id: int
    pathspec: str | None
    status: str | None


class ArtifactBrief(_Out):
    name: str = Field(description="The output artifact's name.")
    hash: str = Field(description="Its content hash: the version's identity in the store.")


class VersionOut(_Out):
    """One version: an output artifact of one task, with its run and that run's metrics."""

    model: str
    version: int
    ref: str = Field(description="NAME/VERSION, as pt.load_model takes it.")
    aliases: list[str] = Field(description="The aliases pointing at it.")
    description: str | None
    created_at: datetime
    created_by: str
    run: RunBrief
    step: str | None = Field(description="The step of the task that produced it.")
    task_id: int
    artifact: ArtifactBrief
    metrics: dict[str, float] = Field(description="The run's latest value of each metric.")


class VersionList(_Out):
    versions: list[VersionOut]


class VersionEnvelope(_Out):
    version: VersionOut


class DecisionOut(_Out):
    actor: str = Field(description="The approver.")
    decision: Literal["approved", "rejected"]
    comment: str | None
    at: datetime


class RequestOut(_Out):
    """A request to point an alias at a version, and the decisions on it."""

    id: int
    model: str
    version: int
    alias: str
    status: Literal["pending", "approved", "rejected", "withdrawn"]
    reason: str | None = Field(description="Why the requester asked.")
    required: int = Field(description="Approvals needed.")
    approvals: int = Field(description="Approvals given.")
    requested_at: datetime
    requested_by: str
    closed_at: datetime | None = Field(description="When it was approved, rejected or withdrawn.")
    decisions: list[DecisionOut]


class RequestList(_Out):
    promotions: list[RequestOut]


class RequestEnvelope(_Out):
    promotion: RequestOut


class EventOut(_Out):
    """One entry of the governance log: who did what, when and why."""

    id: int
    at: datetime
    actor: str
    action: str = Field(
        description="model_registered, policy_set, promotion_requested, promotion_approved, "
        "promotion_rejected, promotion_withdrawn, alias_moved, alias_removed, ..."
    )
    model: str | None
    version: int | None
    request_id: int | None
    alias: str | None
    run_id: int | None
    message: str | None = Field(description="The reason or comment given.")
    detail: dict[str, JsonValue] = Field(description="An alias move's previous version, ...")


class EventList(_Out):
    events: list[EventOut]


class ModelDetail(ModelOut):
    """A model with its versions, pending requests and the history of its aliases."""

    versions: list[VersionOut]
    pending: list[RequestOut]
    alias_history: list[EventOut] = Field(description="Every alias move, oldest first.")


class ModelEnvelope(_Out):
    model: ModelDetail


class PromotionOutcome(_Out):
    """What a promotion did: moved the alias at once, or opened a request (a policy needs it)."""

    model: str
    version: int
    alias: str
    previous: int | None = Field(description="The version the alias pointed at before.")
    moved: bool = Field(description="Whether the alias moved now (no approvals needed).")
    request: RequestOut | None = Field(description="The request opened, when approvals are needed.")


class VersionCreate(_In):
    """Register an output artifact of a run (or of one task) as the model's next version."""

    run: _Short | int = Field(description="Run pathspec or id; a task's address picks one task.")
    artifact: _Short = Field(default="model", description="The output artifact's name.")
    step: _Short | None = Field(default=None, description="Needed when several steps output it.")
    description: _Text | None = None


class PromotionIn(_In):
    """Point ``alias`` at ``version``."""

    version: int = Field(ge=1, le=2**31 - 1)
    alias: AliasName
    reason: _Text | None = Field(default=None, description="Why (kept in the record).")


class PolicyIn(_In):
    approvers: int = Field(
        ge=0, le=100, description="Approvals needed to move the alias (0: none)."
    )


class DecisionIn(_In):
    comment: _Text | None = Field(default=None, description="Why (kept in the record).")
