"""The registry's JSON forms: what ``pipetrail models ... --json`` prints and REST returns."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pipetrail.errors import NotFoundError
from pipetrail.governance.registry import Promotion
from pipetrail.storage.metadata.base import MetadataStore
from pipetrail.storage.metadata.governance import (
    GovernanceEvent,
    ModelRecord,
    ModelVersionRecord,
    PromotionRequest,
)

__all__ = [
    "event_json",
    "model_detail_json",
    "model_json",
    "promotion_json",
    "request_json",
    "version_json",
]

#: The log's actions that move an alias: an alias's history.
ALIAS_ACTIONS = ("alias_moved", "alias_removed")


def _iso(at: datetime | None) -> str | None:
    return at.astimezone(UTC).isoformat() if at is not None else None


def model_json(record: ModelRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "description": record.description,
        "created_at": _iso(record.created_at),
        "created_by": record.created_by,
        "latest_version": record.latest_version,
        "aliases": dict(record.aliases),
        "policies": dict(record.policies),
    }


def version_json(store: MetadataStore, record: ModelVersionRecord) -> dict[str, Any]:
    """A version with its run (pathspec, status), its task's step and the run's metrics."""
    run: dict[str, Any] = {"id": record.run_id, "pathspec": None, "status": None}
    step = None
    try:
        found = store.get_run(record.run_id)
        run.update(pathspec=found.pathspec, status=found.status.value)
        tasks = store.get_tasks([record.task_id])
        step = tasks[0].step if tasks else None
        metrics = store.latest_metrics(record.run_id)
    except NotFoundError:  # the run was deleted; the version's record stays
        metrics = {}
    return {
        "model": record.model,
        "version": record.version,
        "ref": record.ref,
        "aliases": list(record.aliases),
        "description": record.description,
        "created_at": _iso(record.created_at),
        "created_by": record.created_by,
        "run": run,
        "step": step,
        "task_id": record.task_id,
        "artifact": {"name": record.artifact_name, "hash": record.artifact_key},
        "metrics": metrics,
    }


def request_json(request: PromotionRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "model": request.model,
        "version": request.version,
        "alias": request.alias,
        "status": request.status,
        "reason": request.reason,
        "required": request.required,
        "approvals": sum(1 for d in request.decisions if d.decision == "approved"),
        "requested_at": _iso(request.requested_at),
        "requested_by": request.requested_by,
        "closed_at": _iso(request.closed_at),
        "decisions": [
            {"actor": d.actor, "decision": d.decision, "comment": d.comment, "at": _iso(d.at)}
            for d in request.decisions
        ],
    }


def event_json(event: GovernanceEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": _iso(event.at),
        "actor": event.actor,
        "action": event.action,
        "model": event.model,
        "version": event.version,
        "request_id": event.request_id,
        "alias": event.alias,
        "run_id": event.run_id,
        "message": event.message,
        "detail": dict(event.detail),
    }


def promotion_json(promotion: Promotion) -> dict[str, Any]:
    """What a promotion did: ``moved`` at once, or the ``request`` it opened."""
    return {
        "model": promotion.version.model,
        "version": promotion.version.version,
        "alias": promotion.alias,
        "previous": promotion.previous,
        "moved": promotion.moved,
        "request": request_json(promotion.request) if promotion.request is not None else None,
    }


def model_detail_json(store: MetadataStore, name: str) -> dict[str, Any]:
    """``models show``: the model, its versions, pending requests and alias history."""
    record = store.get_model(name)
    moves = [e for a in ALIAS_ACTIONS for e in store.governance_events(model=name, action=a)]
    history = [event_json(e) for e in sorted(moves, key=lambda e: e.id)]
    return {
        **model_json(record),
        "versions": [version_json(store, v) for v in store.model_versions(name)],
        "pending": [request_json(r) for r in store.promotions(model=name, status="pending")],
        "alias_history": history,
    }
