"""Retention over REST: delete a run, delete runs by id or by rule, collect garbage (admin)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from pipetrail.api.deps import NO_NUL, Actor, Context, RunId
from pipetrail.api.errors import ERROR_RESPONSES, ApiError
from pipetrail.core.bounds import MAX_COUNT, MAX_ID
from pipetrail.core.status import RunStatus
from pipetrail.errors import DefinitionError
from pipetrail.governance.gc import collect_garbage
from pipetrail.governance.retention import (
    DeletionReport,
    RetentionRule,
    delete_runs,
    select_runs,
)

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["retention"], responses=ERROR_RESPONSES)

Duration = Annotated[str, StringConstraints(max_length=40, pattern=NO_NUL)]
Ended = Literal["completed", "failed", "cancelled"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeleteRunsRequest(_In):
    """Runs to delete: ``ids``, or a rule (``older_than`` with its filters)."""

    ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None = Field(
        default=None, max_length=10_000, description="These runs."
    )
    older_than: Duration | None = Field(
        default=None, description="Runs created more than this long ago: '90d', '12h'."
    )
    status: list[Ended] = Field(
        default_factory=list, description="With older_than: only these ended statuses."
    )
    pipeline: Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL)] | None = Field(
        default=None, description="With older_than: only this pipeline's runs."
    )
    keep_last: int = Field(
        default=0, ge=0, le=MAX_COUNT, description="With older_than: keep each pipeline's newest N."
    )
    dry_run: bool = Field(default=False, description="Say what would be deleted; delete nothing.")

    @model_validator(mode="after")
    def _one_selector(self) -> DeleteRunsRequest:
        if (self.ids is None) == (self.older_than is None):
            raise ValueError("give exactly one of ids and older_than")
        if self.ids is not None and (self.status or self.pipeline or self.keep_last):
            raise ValueError("status, pipeline and keep_last go with older_than, not with ids")
        return self


class GcRequest(_In):
    """A garbage collection."""

    dry_run: bool = Field(default=False, description="Say what would be removed; remove nothing.")
    grace: Duration = Field(
        default="1h", description="Keep unreferenced content younger than this (writes in flight)."
    )


class DeletedRunOut(BaseModel):
    id: int
    pathspec: str
    status: str
    cleared: dict[str, list[int]] = Field(
        description="Pointers of other rows at the run that were emptied, by column."
    )


class RefusedRunOut(BaseModel):
    id: int
    pathspec: str
    reason: str


class DeletionOut(BaseModel):
    """Per run: deleted (or deletable, on a dry run), or refused with the reason."""

    dry_run: bool
    deleted: list[DeletedRunOut]
    refused: list[RefusedRunOut]


class GcOut(BaseModel):
    """What a garbage collection removed (or would remove) and kept."""

    dry_run: bool
    grace_s: float
    objects: int = Field(description="Unreferenced objects removed from the artifact store.")
    bytes: int = Field(description="Their size.")
    young: int = Field(description="Unreferenced objects kept: younger than the grace.")
    young_bytes: int
    referenced: int = Field(description="Objects kept because a run or model version uses them.")
    temporaries: int
    temporary_bytes: int
    rows: dict[str, int] = Field(description="Rows of the metadata store removed, by kind.")
    keys: list[str] = Field(description="Keys of the objects removed.")


def _out(report: DeletionReport) -> DeletionOut:
    return DeletionOut(
        dry_run=report.dry_run,
        deleted=[
            DeletedRunOut(
                id=o.facts.run_id,
                pathspec=o.facts.pathspec,
                status=o.facts.status,
                cleared=o.cleared,
            )
            for o in report.deleted
        ],
        refused=[
            RefusedRunOut(id=o.facts.run_id, pathspec=o.facts.pathspec, reason=o.refused or "")
            for o in report.refused
        ],
    )


def _seconds(text: str, name: str, *, zero_ok: bool) -> float:
    from pipetrail.dsl import parse_duration

    try:
        seconds = parse_duration(text, what=name, zero_ok=zero_ok)
    except DefinitionError as exc:
        raise ApiError(422, "ValidationError", str(exc)) from None
    if seconds is None or seconds < 0 or (seconds == 0 and not zero_ok):
        raise ApiError(422, "ValidationError", f"{name} must be a positive duration, got {text!r}")
    return seconds


@router.delete("/runs/{run_id}", response_model=DeletionOut, summary="Delete a run")
def delete_run(
    ctx: Context,
    actor: Actor,
    run_id: RunId,
    dry_run: Annotated[
        bool, Query(description="Say whether it can be deleted; delete nothing.")
    ] = (False),
) -> DeletionOut:
    """Delete a run with everything recorded under it; 409 with the reason when it may not be
    deleted (not ended, a model version comes from it, tagged ``keep``)."""
    report = delete_runs(ctx.workspace.store, [run_id], actor=actor, dry_run=dry_run)
    if report.refused:
        raise ApiError(409, "ConflictError", report.refused[0].refused or "refused")
    return _out(report)


@router.post("/runs/delete", response_model=DeletionOut, summary="Delete runs by id or by rule")
def delete_runs_route(ctx: Context, actor: Actor, body: DeleteRunsRequest) -> DeletionOut:
    """Delete the runs named or selected, each on its own; refusals are reported per run."""
    store = ctx.workspace.store
    message = None
    if body.ids is not None:
        ids = body.ids
    else:
        rule = RetentionRule(
            _seconds(body.older_than or "", "older_than", zero_ok=False),
            body.pipeline,
            tuple(RunStatus(s) for s in body.status),
            body.keep_last,
        )
        ids = select_runs(store, rule, datetime.now(UTC))
        message = f"api: {rule.describe()}"
    return _out(delete_runs(store, ids, actor=actor, dry_run=body.dry_run, message=message))


@router.post("/gc", response_model=GcOut, summary="Collect garbage")
def garbage_collect(ctx: Context, actor: Actor, body: GcRequest | None = None) -> GcOut:
    """Remove artifacts, code snapshots and rows that no remaining run or model version uses,
    older than the grace."""
    body = body or GcRequest()
    grace_s = _seconds(body.grace, "grace", zero_ok=True)
    report = collect_garbage(
        ctx.workspace.store, ctx.workspace.cas, actor=actor, grace_s=grace_s, dry_run=body.dry_run
    )
    values: dict[str, Any] = report.as_dict()
    return GcOut(**values, keys=list(report.keys))
