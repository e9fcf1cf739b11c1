"""Pipeline runs: list (filters, search, cursor pages), one run, its block runs and metrics,
and the retry and cancel actions, one run at a time or in batches."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import StringConstraints

from pipetrail.api import actions
from pipetrail.api.deps import NO_NUL, Actor, Context, RunId, utc
from pipetrail.api.errors import ERROR_RESPONSES, error_body
from pipetrail.api.paging import decode_cursor, decode_offset, encode_offset, page_runs
from pipetrail.api.schemas import (
    BatchItemResult,
    BatchRequest,
    BatchResponse,
    BlockRunList,
    CancelRequest,
    ErrorBody,
    MetricBucket,
    MetricHistoryOut,
    MetricList,
    MetricPointOut,
    MetricSummary,
    PipelineName,
    PipelineRunEnvelope,
    PipelineRunList,
    PlanStep,
    RetryRequest,
    RetryResponse,
    TriggerName,
)
from pipetrail.api.views import block_run_out, run_detail, run_out
from pipetrail.core.model import RunRecord
from pipetrail.core.series import envelope
from pipetrail.core.status import RunStatus
from pipetrail.errors import NotFoundError
from pipetrail.storage.metadata.base import RunQuery

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["pipeline runs"], responses=ERROR_RESPONSES)

Text = Annotated[str, StringConstraints(max_length=2000, pattern=NO_NUL)]
Tag = Annotated[str, StringConstraints(max_length=500, pattern=NO_NUL)]
#: A next_cursor as the API makes them (URL-safe base64 of a few numbers).
CursorText = Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Za-z0-9_-]*$")]
#: The spec says what BatchRequest's validator checks: exactly one of ids and filter.
_ONE_SELECTOR: dict[str, Any] = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": {"oneOf": [{"required": ["ids"]}, {"required": ["filter"]}]}
            }
        }
    }
}
_CANCELLABLE = (RunStatus.INITIAL, RunStatus.RUNNING)
_RETRYABLE = (RunStatus.FAILED, RunStatus.CANCELLED)


@router.get("/pipeline_runs", response_model=PipelineRunList, summary="List pipeline runs")
def list_pipeline_runs(
    ctx: Context,
    pipeline: Annotated[PipelineName | None, Query(description="Only this pipeline.")] = None,
    status: Annotated[
        list[RunStatus] | None, Query(description="Only these statuses (repeatable).")
    ] = None,
    tag: Annotated[list[Tag] | None, Query(description="Only runs with every tag given.")] = None,
    user: Annotated[
        list[Text] | None, Query(description="Only runs started by these users.")
    ] = None,
    since: Annotated[
        datetime | None, Query(description="Created at or after (ISO 8601; UTC if no offset).")
    ] = None,
    until: Annotated[
        datetime | None, Query(description="Created before (ISO 8601; UTC if no offset).")
    ] = None,
    q: Annotated[
        Text | None,
        Query(
            description="Text search, ignoring case, over pipeline name, tags, parameter names "
            "and values, and error messages."
        ),
    ] = None,
    filter: Annotated[
        Text | None,
        Query(
            description="The search language: metrics.accuracy > 0.9 and params.lr = 0.01, "
            "tags.phase = 'x', status = 'failed', …"
        ),
    ] = None,
    order_by: Annotated[
        list[Text] | None,
        Query(description="Sort keys 'field [asc|desc]' (repeatable); newest first by default."),
    ] = None,
    trigger: Annotated[
        TriggerName | None, Query(description="Only runs started by this trigger (its name).")
    ] = None,
    sla_missed: Annotated[
        bool, Query(description="Only runs that missed their trigger's SLA.")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=500, description="Runs per page.")] = 50,
    cursor: Annotated[
        CursorText | None, Query(description="next_cursor of the previous page.")
    ] = None,
) -> PipelineRunList:
    """Runs newest first (or by ``order_by``), filtered, one page at a time."""
    query = RunQuery(
        pipeline=pipeline,
        statuses=tuple(status or ()),
        tags=tuple(tag or ()),
        since=utc(since, "since"),
        until=utc(until, "until"),
        users=tuple(user or ()),
        filter=filter or None,
        # An empty item adds no key (an empty order_by is the default order).
        order_by=tuple(item for item in order_by or () if item.strip()),
        trigger=trigger,
        sla_missed=sla_missed,
    )
    page = page_runs(
        ctx.workspace.store,
        query,
        limit=limit,
        cursor=decode_cursor(cursor) if cursor else None,
        text=q or None,
    )
    return PipelineRunList(
        pipeline_runs=[run_out(r) for r in page.runs],
        count=len(page.runs),
        next_cursor=page.next_cursor,
    )


# The batch actions come before /pipeline_runs/{run_id}: matched first, OPTIONS and other
# methods on /pipeline_runs/retry and /cancel answer with their own Allow (POST), not GET's.


@router.post(
    "/pipeline_runs/retry",
    response_model=BatchResponse,
    summary="Retry many runs",
    openapi_extra=_ONE_SELECTOR,
)
def retry_pipeline_runs(ctx: Context, actor: Actor, body: BatchRequest) -> BatchResponse:
    """Retry the runs given by ``ids`` or matching ``filter`` (by default the failed and
    cancelled ones); each new run starts in the background."""

    def retry(run_id: int) -> RunRecord:
        run, _ = actions.retry_one(
            ctx.workspace,
            ctx.launcher,
            run_id,
            from_step=body.from_step,
            parameters={},
            executor=body.executor,
            actor=actor,
        )
        return run

    ids = _select(ctx, body, _RETRYABLE)
    return _batch(ids, actions.each(ids, retry))


@router.post(
    "/pipeline_runs/cancel",
    response_model=BatchResponse,
    summary="Cancel many runs",
    openapi_extra=_ONE_SELECTOR,
)
def cancel_pipeline_runs(ctx: Context, actor: Actor, body: BatchRequest) -> BatchResponse:
    """Cancel the runs given by ``ids`` or matching ``filter`` (by default the waiting and
    running ones): "cancel all running of pipeline X" is
    ``{"filter": {"pipeline": "X", "status": ["running"]}}``."""
    ids = _select(ctx, body, _CANCELLABLE)
    outcomes = actions.cancel_many(
        ctx.workspace, ids, reason=body.reason, wait_s=body.wait_s, actor=actor
    )
    return _batch(ids, outcomes)


@router.get(
    "/pipeline_runs/{run_id}", response_model=PipelineRunEnvelope, summary="Get a pipeline run"
)
def get_pipeline_run(ctx: Context, run_id: RunId) -> PipelineRunEnvelope:
    """One run with its latest metrics, DAG, code reference and status history."""
    store = ctx.workspace.store
    run = store.get_run(run_id)
    return PipelineRunEnvelope(
        pipeline_run=run_detail(
            run, store.latest_metrics(run_id), store.events(run_id), store.tasks(run_id)
        )
    )


@router.get(
    "/pipeline_runs/{run_id}/block_runs",
    response_model=BlockRunList,
    summary="List the block runs of a run",
)
def list_block_runs(ctx: Context, run_id: RunId) -> BlockRunList:
    """Every attempt of every task of the run, in the order they were created."""
    store = ctx.workspace.store
    run = store.get_run(run_id)
    return BlockRunList(block_runs=[block_run_out(t, run.pipeline) for t in store.tasks(run_id)])


@router.get(
    "/pipeline_runs/{run_id}/metrics", response_model=MetricList, summary="List a run's metrics"
)
def list_metrics(ctx: Context, run_id: RunId) -> MetricList:
    """Each metric's name and latest value."""
    store = ctx.workspace.store
    store.get_run(run_id)
    return MetricList(
        metrics=[
            MetricSummary(
                name=name, latest=value, url=f"/api/pipeline_runs/{run_id}/metrics/{name}"
            )
            for name, value in store.latest_metrics(run_id).items()
        ]
    )


@router.get(
    "/pipeline_runs/{run_id}/metrics/{name:path}",
    response_model=MetricHistoryOut,
    summary="Get a metric's history",
)
def metric_history(
    ctx: Context,
    run_id: RunId,
    name: Annotated[str, Path(max_length=250, pattern=NO_NUL, description="Metric name.")],
    points: Annotated[
        int,
        Query(
            ge=1,
            le=10000,
            description="Chart width: a longer history comes as this many min/max/last buckets.",
        ),
    ] = 1000,
    exact: Annotated[
        bool, Query(description="Every point as logged, one page of ``limit`` at a time.")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=100000, description="Points per page (exact).")] = 10000,
    cursor: Annotated[
        CursorText | None, Query(description="next_cursor of the previous page.")
    ] = None,
) -> MetricHistoryOut:
    """Exact points when the history fits ``points`` (or ``exact=true``), else envelopes."""
    store = ctx.workspace.store
    store.get_run(run_id)
    history = store.metric_history(run_id, name)
    if not history:
        known = ", ".join(sorted(store.latest_metrics(run_id))) or "none"
        raise NotFoundError(f"run {run_id} has no metric {name!r}; its metrics: {known}")
    total = len(history)
    if exact or total <= points:
        start = decode_offset(cursor) if cursor else 0
        size = limit if exact else total
        chunk = history[start : start + size]
        end = start + len(chunk)
        return MetricHistoryOut(
            run_id=run_id,
            name=name,
            total=total,
            mode="exact",
            points=[
                MetricPointOut(
                    index=start + i,
                    value=p.value,
                    step=p.step,
                    timestamp=p.timestamp,
                    block_run_id=task_id,
                )
                for i, (task_id, p) in enumerate(chunk)
            ],
            buckets=[],
            next_cursor=encode_offset(end) if end < total else None,
        )
    buckets = envelope([p for _, p in history], points)
    return MetricHistoryOut(
        run_id=run_id,
        name=name,
        total=total,
        mode="envelope",
        points=[],
        buckets=[
            MetricBucket(
                start_index=b.start_index,
                end_index=b.end_index,
                count=b.count,
                step_start=b.step_start,
                step_end=b.step_end,
                time_start=b.time_start,
                time_end=b.time_end,
                min=b.min,
                max=b.max,
                last=b.last,
            )
            for b in buckets
        ],
        next_cursor=None,
    )


# -- actions -------------------------------------------------------------------------------------


@router.post(
    "/pipeline_runs/{run_id}/retry",
    response_model=RetryResponse,
    status_code=201,
    summary="Retry a run",
)
def retry_pipeline_run(
    ctx: Context,
    actor: Actor,
    run_id: RunId,
    body: Annotated[RetryRequest | None, Body()] = None,
) -> RetryResponse:
    """Start a new run that reuses what completed (or re-runs from ``from_step``); it runs in
    the background and its id is returned at once."""
    body = body or RetryRequest()
    run, plan = actions.retry_one(
        ctx.workspace,
        ctx.launcher,
        run_id,
        from_step=body.from_step,
        parameters=body.parameters,
        executor=body.executor,
        actor=actor,
    )
    return RetryResponse(pipeline_run=run_out(run), plan=[PlanStep(**p) for p in plan])


@router.post(
    "/pipeline_runs/{run_id}/cancel", response_model=PipelineRunEnvelope, summary="Cancel a run"
)
def cancel_pipeline_run(
    ctx: Context,
    actor: Actor,
    run_id: RunId,
    body: Annotated[CancelRequest | None, Body()] = None,
) -> PipelineRunEnvelope:
    """Cancel a waiting or running run and return it once it has ended."""
    body = body or CancelRequest()
    store = ctx.workspace.store
    run = actions.cancel_one(
        ctx.workspace, run_id, reason=body.reason, wait_s=body.wait_s, actor=actor
    )
    return PipelineRunEnvelope(
        pipeline_run=run_detail(
            run, store.latest_metrics(run_id), store.events(run_id), store.tasks(run_id)
        )
    )


def _select(ctx: Context, body: BatchRequest, default: tuple[RunStatus, ...]) -> list[int]:
    selector = body.filter
    return actions.select_runs(
        ctx.workspace,
        ids=body.ids,
        pipeline=selector.pipeline if selector else None,
        statuses=selector.status if selector else (),
        tags=selector.tag if selector else (),
        default_statuses=default,
    )


def _batch(ids: list[int], outcomes: list[actions.BatchOutcome]) -> BatchResponse:
    results = [
        BatchItemResult(
            id=o.run_id,
            ok=o.error is None,
            pipeline_run=run_out(o.run) if o.run is not None else None,
            error=ErrorBody(**error_body(o.error)) if o.error is not None else None,
        )
        for o in outcomes
    ]
    return BatchResponse(
        matched=len(ids), succeeded=sum(1 for r in results if r.ok), results=results
    )
