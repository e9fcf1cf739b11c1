"""The model registry: models and versions, register, policies, promotions and their decisions.

Thin handlers over ``governance.registry`` (the rules) and ``governance.views`` (the JSON the
CLI prints too). Who acts is the request's user (``Actor``); the role each route needs is in
``api/roles.py``, enforced by the access middleware before a handler runs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Request, Response

from pipetrail.api.deps import NO_NUL, Actor, Context
from pipetrail.api.errors import ERROR_RESPONSES, ApiError
from pipetrail.api.model_schemas import (
    AliasName,
    DecisionIn,
    EventList,
    EventOut,
    ModelDetail,
    ModelEnvelope,
    ModelList,
    ModelName,
    ModelOut,
    PolicyIn,
    PromotionIn,
    PromotionOutcome,
    RequestEnvelope,
    RequestList,
    RequestOut,
    VersionCreate,
    VersionEnvelope,
    VersionList,
    VersionOut,
)
from pipetrail.api.roles import GUARDED_ALIAS_ROLES
from pipetrail.core.bounds import MAX_ID
from pipetrail.governance import registry, views
from pipetrail.governance.identity import role_allows

__all__ = ["router"]

_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    404: {**ERROR_RESPONSES[404], "description": "No such model, version, alias, run or request."},
    422: {
        **ERROR_RESPONSES[422],
        "description": "Bad input, or a refusal naming its reason: an ambiguous artifact, a run "
        "that did not complete, a requester deciding on their own request, a closed request.",
    },
}

router = APIRouter(prefix="/api", tags=["models"], responses=_RESPONSES)

Name = Annotated[ModelName, Path(description="Model name.")]
Alias = Annotated[AliasName, Path(description="Alias name.")]
Version = Annotated[int, Path(ge=1, le=2**31 - 1, description="Version number.")]
RequestId = Annotated[int, Path(ge=1, le=MAX_ID, description="Promotion request id.")]
Status = Literal["pending", "approved", "rejected", "withdrawn"]


def _model(ctx: Context, name: str) -> ModelEnvelope:
    detail = views.model_detail_json(ctx.workspace.store, name)
    return ModelEnvelope(model=ModelDetail.model_validate(detail))


def _request(request: Any) -> RequestEnvelope:
    return RequestEnvelope(promotion=RequestOut.model_validate(views.request_json(request)))


@router.get("/models", response_model=ModelList, summary="List models")
def list_models(ctx: Context) -> ModelList:
    """Every registered model by name: latest version, aliases, policies."""
    models = ctx.workspace.store.list_models()
    return ModelList(models=[ModelOut.model_validate(views.model_json(m)) for m in models])


@router.get("/models/{name}", response_model=ModelEnvelope, summary="Show a model")
def get_model(ctx: Context, name: Name) -> ModelEnvelope:
    """The model with its versions (run, status, metrics), pending requests and alias history."""
    return _model(ctx, name)


@router.get("/models/{name}/versions", response_model=VersionList, summary="List versions")
def list_versions(ctx: Context, name: Name) -> VersionList:
    """Every version of the model, oldest first."""
    store = ctx.workspace.store
    return VersionList(
        versions=[
            VersionOut.model_validate(views.version_json(store, v))
            for v in store.model_versions(name)
        ]
    )


@router.post(
    "/models/{name}/versions",
    response_model=VersionEnvelope,
    status_code=201,
    summary="Register a version",
)
def register_version(
    ctx: Context, name: Name, body: VersionCreate, actor: Actor, response: Response
) -> VersionEnvelope:
    """Register an output artifact of a run as the next version (the model is made at its
    first). Refused, with nothing written, for an unknown run or artifact or an ambiguous one."""
    store = ctx.workspace.store
    record = registry.register(
        store,
        name,
        body.run,
        artifact=body.artifact,
        actor=actor,
        step=body.step,
        description=body.description,
    )
    response.headers["Location"] = f"/api/models/{name}/versions/{record.version}"
    return VersionEnvelope(version=VersionOut.model_validate(views.version_json(store, record)))


@router.get(
    "/models/{name}/versions/{version}", response_model=VersionEnvelope, summary="Show a version"
)
def get_version(ctx: Context, name: Name, version: Version) -> VersionEnvelope:
    store = ctx.workspace.store
    record = store.get_model_version(name, version)
    return VersionEnvelope(version=VersionOut.model_validate(views.version_json(store, record)))


@router.get("/models/{name}/events", response_model=EventList, summary="A model's record")
def model_events(
    ctx: Context,
    name: Name,
    action: Annotated[str | None, Query(max_length=32, description="Only this action.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="The newest this many.")] = 1000,
) -> EventList:
    """Who did what to the model, when and why: registrations, policies, requests, decisions,
    alias moves; oldest first."""
    events = ctx.workspace.store.governance_events(model=name, action=action, limit=limit)
    return EventList(events=[EventOut.model_validate(views.event_json(e)) for e in events])


@router.put("/models/{name}/policies/{alias}", response_model=ModelEnvelope, summary="Set a policy")
def set_policy(
    ctx: Context, name: Name, alias: Alias, body: PolicyIn, actor: Actor
) -> ModelEnvelope:
    """Require ``approvers`` approvals before the alias moves (0: it moves when promoted)."""
    registry.set_policy(ctx.workspace.store, name, alias, body.approvers, actor=actor)
    return _model(ctx, name)


@router.post(
    "/models/{name}/promotions",
    response_model=PromotionOutcome,
    status_code=201,
    summary="Promote a version",
    responses={200: {"description": "The alias moved at once (it has no policy)."}},
)
def promote(
    ctx: Context, name: Name, body: PromotionIn, actor: Actor, response: Response
) -> PromotionOutcome:
    """Point an alias at a version: with a policy this opens a request (201) that approvers
    decide; without one the alias moves at once (200). Only a completed run's version."""
    done = registry.promote(
        ctx.workspace.store, name, body.version, body.alias, actor=actor, reason=body.reason
    )
    if done.request is None:
        response.status_code = 200
    else:
        response.headers["Location"] = f"/api/promotions/{done.request.id}"
    return PromotionOutcome.model_validate(views.promotion_json(done))


_ALIAS_PATH = "/api/models/{name}/aliases/{alias}"


@router.delete(
    _ALIAS_PATH.removeprefix("/api"), response_model=ModelEnvelope, summary="Remove an alias"
)
def remove_alias(
    ctx: Context,
    name: Name,
    alias: Alias,
    actor: Actor,
    request: Request,
    reason: Annotated[
        str | None,
        Query(max_length=10_000, pattern=NO_NUL, description="Why (kept in the record)."),
    ] = None,
) -> ModelEnvelope:
    """Remove the alias; the versions stay, and the removal is an event with who and why. An
    alias with a policy is an admin's to remove (403 for any other role)."""
    store = ctx.workspace.store
    if registry.guarded(store, name, alias):
        needed = GUARDED_ALIAS_ROLES[("DELETE", _ALIAS_PATH)]
        role = getattr(request.state, "role", None)
        if role is not None and not role_allows(role, needed):
            raise ApiError(
                403,
                "ForbiddenError",
                f"removing {name}@{alias}, which has a policy, needs the {needed} role; "
                f"token {actor!r} has the {role} role",
            )
    registry.remove_alias(store, name, alias, actor=actor, reason=reason)
    return _model(ctx, name)


@router.get("/promotions", response_model=RequestList, summary="List promotion requests")
def list_promotions(
    ctx: Context,
    status: Annotated[Status | None, Query(description="Only requests in this status.")] = None,
    model: Annotated[ModelName | None, Query(description="Only this model's.")] = None,
) -> RequestList:
    """Promotion requests, oldest first, with their decisions."""
    found = ctx.workspace.store.promotions(model=model, status=status)
    return RequestList(promotions=[RequestOut.model_validate(views.request_json(r)) for r in found])


@router.get(
    "/promotions/{request_id}", response_model=RequestEnvelope, summary="Show a promotion request"
)
def get_promotion(ctx: Context, request_id: RequestId) -> RequestEnvelope:
    return _request(ctx.workspace.store.get_promotion(request_id))


def _decide(
    ctx: Context,
    request_id: int,
    decision: Literal["approved", "rejected", "withdrawn"],
    actor: str,
    body: DecisionIn | None,
) -> RequestEnvelope:
    comment = body.comment if body is not None else None
    done = registry.decide(ctx.workspace.store, request_id, decision, actor=actor, comment=comment)
    return _request(done)


_Body = Annotated[DecisionIn | None, Body()]


@router.post("/promotions/{request_id}/approve", response_model=RequestEnvelope, summary="Approve")
def approve(
    ctx: Context, request_id: RequestId, actor: Actor, body: _Body = None
) -> RequestEnvelope:
    """Approve as the request's user (not the requester); the approval that reaches the
    required count moves the alias in the same transaction."""
    return _decide(ctx, request_id, "approved", actor, body)


@router.post("/promotions/{request_id}/reject", response_model=RequestEnvelope, summary="Reject")
def reject(
    ctx: Context, request_id: RequestId, actor: Actor, body: _Body = None
) -> RequestEnvelope:
    """Reject (not the requester): the request closes and the alias stays."""
    return _decide(ctx, request_id, "rejected", actor, body)


@router.post(
    "/promotions/{request_id}/withdraw", response_model=RequestEnvelope, summary="Withdraw"
)
def withdraw(
    ctx: Context, request_id: RequestId, actor: Actor, body: _Body = None
) -> RequestEnvelope:
    """Withdraw your own pending request."""
    return _decide(ctx, request_id, "withdrawn", actor, body)
