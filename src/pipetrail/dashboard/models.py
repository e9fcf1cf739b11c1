"""The model registry's pages: every model, one model's versions and alias history, and the
promotion requests waiting for approval."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from pipetrail.core.model import RunRecord
from pipetrail.errors import NotFoundError, UsageError
from pipetrail.governance.registry import MAX_NAME

if TYPE_CHECKING:
    from pipetrail.storage.metadata.base import MetadataStore
    from pipetrail.storage.metadata.governance import (
        GovernanceEvent,
        ModelRecord,
        ModelVersionRecord,
        PromotionRequest,
    )

__all__ = [
    "HISTORY_ACTIONS",
    "VERSION_LIMIT",
    "ApprovalsPage",
    "HistoryEntry",
    "ModelPage",
    "ModelRow",
    "PendingView",
    "VersionView",
    "approvals_page",
    "describe_event",
    "model_href",
    "model_page",
    "models_page",
]

#: The newest versions a model's page lists with their runs and metrics.
VERSION_LIMIT = 200
#: The governance log's actions that make a model's alias history.
HISTORY_ACTIONS = frozenset(
    {
        "policy_set",
        "promotion_requested",
        "promotion_approved",
        "promotion_rejected",
        "promotion_withdrawn",
        "alias_moved",
        "alias_removed",
    }
)


def _lookup_name(name: str) -> str:
    """``name``, unless no model can have it: empty, too long, a NUL (which PostgreSQL text
    cannot hold). Anything else is looked up, so a name the store holds always opens, and an
    unknown one is a 404 (the registry's stricter rules are for new names)."""
    if not name or len(name) > MAX_NAME or "\x00" in name:
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise UsageError(
            f"model name {shown!r} is not a model name; names have 1 to {MAX_NAME} "
            "characters and no NUL"
        )
    return name


def model_href(name: str) -> str:
    """The model's page (its name quoted whole)."""
    return f"/models/{quote(name, safe='')}"


# -- /models ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRow:
    """One model in the list: its record and how many requests wait on it."""

    record: ModelRecord
    pending: int

    @property
    def aliases(self) -> list[tuple[str, int]]:
        """``(alias, version)``, by alias."""
        return sorted(self.record.aliases.items())


def models_page(store: MetadataStore) -> list[ModelRow]:
    """Every model, by name, with its pending requests counted."""
    waiting = Counter(p.model for p in store.promotions(status="pending"))
    models = sorted(store.list_models(), key=lambda m: m.name)
    return [ModelRow(m, waiting.get(m.name, 0)) for m in models]


# -- /models/{name} -----------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionView:
    """A version with the run that produced it (None when that run is gone) and its metrics."""

    record: ModelVersionRecord
    run: RunRecord | None
    step: str | None
    metrics: dict[str, float]


@dataclass(frozen=True)
class PendingView:
    """A request waiting for approval, with what the alias points at now."""

    request: PromotionRequest
    current: int | None

    @property
    def approvals(self) -> int:
        return sum(1 for d in self.request.decisions if d.decision == "approved")


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a model's alias history."""

    event: GovernanceEvent
    #: ``moved``, ``removed``, ``requested``, ``approved``, ``rejected``, ``withdrawn``, ``policy``.
    kind: str
    summary: str


@dataclass(frozen=True)
class ModelPage:
    """``/models/{name}``: versions newest first, policies, pending requests, alias history."""

    model: ModelRecord
    versions: list[VersionView]
    #: How many versions there are in all (the page lists the newest VERSION_LIMIT).
    total_versions: int
    pending: list[PendingView]
    history: list[HistoryEntry]

    @property
    def policies(self) -> list[tuple[str, int]]:
        """``(alias, approvals required)``, by alias."""
        return sorted(self.model.policies.items())

    @property
    def aliases(self) -> list[tuple[str, int]]:
        return sorted(self.model.aliases.items())


def _version_text(value: object) -> str:
    return f"v{value}" if isinstance(value, int) and not isinstance(value, bool) else "none"


def describe_event(event: GovernanceEvent) -> HistoryEntry:
    """The event in words: ``production → v2 (was v1)``, ``request #3 approved``, ..."""
    action = event.action
    alias = event.alias or "?"
    target = f"{alias} → {_version_text(event.version)}"
    detail = event.detail
    if action == "alias_moved":
        previous = detail.get("previous")
        was = f"was {_version_text(previous)}" if previous is not None else "new alias"
        return HistoryEntry(event, "moved", f"{target} ({was})")
    if action == "alias_removed":
        previous = detail.get("previous")
        was = f" (was {_version_text(previous)})" if previous is not None else ""
        return HistoryEntry(event, "removed", f"{alias} removed{was}")
    if action == "policy_set":
        count = detail.get("approvers")
        if isinstance(count, int) and count > 0:
            summary = f"{alias} needs {count} approval{'s' if count != 1 else ''}"
        else:
            summary = f"{alias} moves without approval"
        return HistoryEntry(event, "policy", summary)
    request = f"request #{event.request_id}" if event.request_id is not None else "a request"
    verb = action.removeprefix("promotion_")
    if action == "promotion_requested":
        return HistoryEntry(event, "requested", f"{request}: {target}")
    summary = f"{request} {verb}: {target}"
    if action == "promotion_approved" and detail.get("status") == "pending":
        summary += "; it waits for more approvals"
    return HistoryEntry(event, verb, summary)


def _runs(store: MetadataStore, ids: Sequence[int]) -> dict[int, RunRecord]:
    runs: dict[int, RunRecord] = {}
    for run_id in sorted(set(ids)):
        try:
            runs[run_id] = store.get_run(run_id)
        except NotFoundError:
            continue
    return runs


def model_page(store: MetadataStore, name: str) -> ModelPage:
    """One model in detail.

    Raises:
        NotFoundError: no model of that name.
        UsageError: a name no model can have.
    """
    model = store.get_model(_lookup_name(name))
    records = sorted(store.model_versions(name), key=lambda v: v.version, reverse=True)
    shown = records[:VERSION_LIMIT]
    runs = _runs(store, [v.run_id for v in shown])
    steps = {t.id: t.step for t in store.get_tasks(sorted({v.task_id for v in shown}))}
    metrics = {run_id: store.latest_metrics(run_id) for run_id in runs}
    versions = [
        VersionView(v, runs.get(v.run_id), steps.get(v.task_id), metrics.get(v.run_id, {}))
        for v in shown
    ]
    pending = [
        PendingView(p, model.aliases.get(p.alias))
        for p in sorted(store.promotions(model=name, status="pending"), key=lambda p: p.id)
    ]
    events = [e for e in store.governance_events(model=name) if e.action in HISTORY_ACTIONS]
    events.sort(key=lambda e: (e.at, e.id), reverse=True)
    return ModelPage(
        model=model,
        versions=versions,
        total_versions=len(records),
        pending=pending,
        history=[describe_event(e) for e in events],
    )


# -- /approvals ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApprovalsPage:
    """``/approvals``: every pending request, oldest first (the queue's order)."""

    pending: list[PendingView]


def approvals_page(store: MetadataStore) -> ApprovalsPage:
    """The pending requests, each with the version its alias points at now."""
    requests = sorted(store.promotions(status="pending"), key=lambda p: p.id)
    models: dict[str, ModelRecord | None] = {}
    for name in {p.model for p in requests}:
        try:
            models[name] = store.get_model(name)
        except NotFoundError:
            models[name] = None
    views = []
    for p in requests:
        record = models.get(p.model)
        views.append(PendingView(p, record.aliases.get(p.alias) if record else None))
    return ApprovalsPage(views)
