"""The governance part of the MetadataStore port: the model registry, its event log, API tokens.

Records only, and the store methods the governance layer (``pipetrail.governance``) calls; rules
that are not about rows (who may approve, which runs may be promoted) live there, not here. A
store method that changes several rows (a decision that completes a request and moves an alias)
does so in one transaction, and writes its ``governance_event`` rows in the same one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

__all__ = [
    "ROLES",
    "Decision",
    "GovernanceEvent",
    "ModelRecord",
    "ModelVersionRecord",
    "NewModelVersion",
    "PromotionRequest",
    "RegistryStore",
    "RequestStatus",
    "Role",
    "TokenRecord",
    "TokenStore",
]

Role = Literal["viewer", "editor", "approver", "admin"]
# Each role may do all that the roles before it may.
ROLES: tuple[Role, ...] = ("viewer", "editor", "approver", "admin")

RequestStatus = Literal["pending", "approved", "rejected", "withdrawn"]


@dataclass(frozen=True)
class ModelRecord:
    """A named model: its versions are numbered from 1 in registration order."""

    id: int
    name: str
    description: str | None
    created_at: datetime
    created_by: str
    latest_version: int | None
    aliases: Mapping[str, int] = field(default_factory=dict)  # alias -> version number
    policies: Mapping[str, int] = field(default_factory=dict)  # alias -> approvers required


@dataclass(frozen=True)
class NewModelVersion:
    """What ``register_model_version`` records; the next version number is the store's to give."""

    model: str
    run_id: int
    task_id: int
    artifact_name: str
    artifact_key: str
    actor: str
    description: str | None = None


@dataclass(frozen=True)
class ModelVersionRecord:
    """One version of a model: the content hash of one task's output artifact."""

    id: int
    model: str
    version: int
    run_id: int
    task_id: int
    artifact_name: str
    artifact_key: str
    description: str | None
    created_at: datetime
    created_by: str
    aliases: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        """``name/version``, as ``pt.load_model`` takes it."""
        return f"{self.model}/{self.version}"


@dataclass(frozen=True)
class Decision:
    """One approver's approval or rejection of a request."""

    actor: str
    decision: Literal["approved", "rejected"]
    comment: str | None
    at: datetime


@dataclass(frozen=True)
class PromotionRequest:
    """A request to point ``alias`` at a version, waiting for ``required`` approvals."""

    id: int
    model: str
    version: int
    alias: str
    status: RequestStatus
    reason: str | None
    required: int
    requested_at: datetime
    requested_by: str
    closed_at: datetime | None
    decisions: tuple[Decision, ...] = ()


@dataclass(frozen=True)
class GovernanceEvent:
    """One row of the append-only governance log.

    ``action`` is one of: ``model_registered``, ``policy_set``, ``promotion_requested``,
    ``promotion_approved``, ``promotion_rejected``, ``promotion_withdrawn``, ``alias_moved``,
    ``alias_removed``, ``token_created``, ``token_revoked``, ``run_deleted``, ``gc``,
    ``run_kept``, ``run_unkept``. ``detail`` holds what the action needs besides the columns
    (an alias move's previous version, a gc's bytes freed).
    """

    id: int
    at: datetime
    actor: str
    action: str
    model: str | None = None
    version: int | None = None
    request_id: int | None = None
    alias: str | None = None
    run_id: int | None = None
    message: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenRecord:
    """A named API token (the name is its user); the token itself is never stored."""

    id: int
    name: str
    role: Role
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class RegistryStore(Protocol):
    """Rows of the model registry and the governance log. Unknown names raise NotFoundError."""

    def register_model_version(self, new: NewModelVersion) -> ModelVersionRecord: ...
    def get_model(self, name: str) -> ModelRecord: ...
    def list_models(self) -> list[ModelRecord]: ...
    def model_versions(self, name: str) -> list[ModelVersionRecord]: ...
    def get_model_version(self, name: str, version: int) -> ModelVersionRecord: ...
    def model_versions_of_runs(self, run_ids: Sequence[int]) -> list[ModelVersionRecord]: ...
    def set_model_policy(self, name: str, alias: str, approvers: int, actor: str) -> None: ...
    def open_promotion(
        self, name: str, version: int, alias: str, reason: str | None, actor: str, required: int
    ) -> PromotionRequest: ...
    def decide_promotion(
        self,
        request_id: int,
        decision: Literal["approved", "rejected", "withdrawn"],
        actor: str,
        comment: str | None,
    ) -> PromotionRequest: ...
    def get_promotion(self, request_id: int) -> PromotionRequest: ...
    def promotions(
        self, *, model: str | None = None, status: RequestStatus | None = None
    ) -> list[PromotionRequest]: ...
    def move_alias(
        self, name: str, alias: str, version: int | None, actor: str, message: str | None
    ) -> None: ...
    # The log: every governed change writes here, in its own transaction.
    def record_governance_event(self, event: GovernanceEvent) -> None: ...
    def governance_events(
        self,
        *,
        model: str | None = None,
        run_id: int | None = None,
        action: str | None = None,
        limit: int = 1000,
    ) -> list[GovernanceEvent]: ...


class TokenStore(Protocol):
    """Rows of the named API tokens."""

    def create_token(self, name: str, role: Role, token_hash: str, actor: str) -> TokenRecord: ...
    def token_by_hash(self, token_hash: str) -> TokenRecord | None: ...
    def list_tokens(self) -> list[TokenRecord]: ...
    def revoke_token(self, name: str, actor: str) -> TokenRecord: ...
    def has_tokens(self) -> bool: ...
    # At most one write a minute per token (``last_used_at``); whether it wrote.
    def touch_token(self, token_id: int, at: datetime | None = None) -> bool: ...
