"""Pipelines, as known from their recorded runs, and the trigger action."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Response

from pipetrail.api import actions
from pipetrail.api.deps import Actor, Context
from pipetrail.api.errors import ERROR_RESPONSES
from pipetrail.api.schemas import (
    PipelineEnvelope,
    PipelineList,
    PipelineName,
    PipelineRunEnvelope,
    TriggerRequest,
)
from pipetrail.api.views import pipeline_detail, pipeline_summaries, run_detail
from pipetrail.errors import NotFoundError

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["pipelines"], responses=ERROR_RESPONSES)

Name = Annotated[PipelineName, Path(description="Pipeline name.")]


@router.get("/pipelines", response_model=PipelineList, summary="List pipelines")
def list_pipelines(ctx: Context) -> PipelineList:
    """Every pipeline with a recorded run: run counts by status and its latest run."""
    return PipelineList(pipelines=pipeline_summaries(ctx.workspace.store))


@router.get("/pipelines/{name}", response_model=PipelineEnvelope, summary="Get a pipeline")
def get_pipeline(ctx: Context, name: Name) -> PipelineEnvelope:
    """Steps, DAG and parameters as the latest run had them; versions seen; counts by status."""
    detail = pipeline_detail(ctx.workspace.store, name)
    if detail is None:
        raise NotFoundError(f"no pipeline {name!r} in the store: it has no recorded run")
    return PipelineEnvelope(pipeline=detail)


@router.post(
    "/pipelines/{name}/runs",
    response_model=PipelineRunEnvelope,
    status_code=201,
    summary="Trigger a run",
)
def trigger_run(
    ctx: Context,
    actor: Actor,
    name: Name,
    response: Response,
    body: Annotated[TriggerRequest | None, Body()] = None,
) -> PipelineRunEnvelope:
    """Record a new run at once (status ``initial``; its id is in the answer) and execute it in
    the background. Poll ``GET /api/pipeline_runs/{id}`` for its progress."""
    body = body or TriggerRequest()
    run = actions.trigger(
        ctx.workspace,
        ctx.launcher,
        name,
        parameters=body.parameters,
        variables=body.variables,
        tags=body.tags,
        executor=body.executor,
        file=body.file,
        max_parallel=body.max_parallel,
        actor=actor,
    )
    response.headers["Location"] = f"/api/pipeline_runs/{run.id}"
    return PipelineRunEnvelope(pipeline_run=run_detail(run, {}, ctx.workspace.store.events(run.id)))
