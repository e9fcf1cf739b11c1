"""Triggers: define, list, change, pause, resume and delete them; fire one now; its runs.

The fields of a trigger are the ones the CLI and YAML files use (``scheduling.spec``); its
pipeline file must be under the server's project directory, as for every run the server starts.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Response
from pydantic import StringConstraints

from pipetrail.api import actions
from pipetrail.api.deps import Actor, Context
from pipetrail.api.errors import ERROR_RESPONSES
from pipetrail.api.paging import decode_cursor, page_runs
from pipetrail.api.schemas import (
    PipelineRunEnvelope,
    PipelineRunList,
    TriggerCreate,
    TriggerDetailEnvelope,
    TriggerEnvelope,
    TriggerFireRequest,
    TriggerList,
    TriggerName,
    TriggerPatch,
    UpcomingList,
    UpcomingOut,
)
from pipetrail.api.views import run_detail, run_out, trigger_detail, trigger_out, trigger_url
from pipetrail.scheduling.service import TriggerService
from pipetrail.storage.metadata.base import RunQuery, TriggerRecord

__all__ = ["router"]

#: The shared error responses, described for triggers.
_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    404: {**ERROR_RESPONSES[404], "description": "No such trigger."},
    409: {
        **ERROR_RESPONSES[409],
        "description": "A trigger of that name exists already, or the trigger is paused.",
    },
}

router = APIRouter(prefix="/api", tags=["triggers"], responses=_RESPONSES)

Name = Annotated[TriggerName, Path(description="Trigger name.")]
#: A next_cursor as the API makes them (URL-safe base64 of a few numbers).
CursorText = Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Za-z0-9_-]*$")]


def _one(service: TriggerService, record: TriggerRecord) -> TriggerEnvelope:
    return TriggerEnvelope(trigger=trigger_out(service.overview(record)))


@router.get("/triggers", response_model=TriggerList, summary="List triggers")
def list_triggers(ctx: Context) -> TriggerList:
    """Every trigger by name: its schedule in words, next fire time, last run and SLA misses."""
    service = TriggerService(ctx.workspace.store)
    return TriggerList(triggers=[trigger_out(service.overview(r)) for r in service.all()])


@router.post(
    "/triggers", response_model=TriggerEnvelope, status_code=201, summary="Create a trigger"
)
def create_trigger(ctx: Context, body: TriggerCreate, response: Response) -> TriggerEnvelope:
    """Define a trigger (active at once). Its pipeline is loaded and its parameters checked
    before it is stored; a scheduler fires it (``pipetrail scheduler`` or ``pipetrail ui``)."""
    record = actions.create_trigger(ctx.workspace, ctx.launcher, body.model_dump(exclude_none=True))
    response.headers["Location"] = trigger_url(record.name)
    return _one(TriggerService(ctx.workspace.store), record)


# Routes match in order: "upcoming" and the routes under a trigger come before
# /triggers/{name:path}, whose name may hold slashes.
@router.get("/triggers/upcoming", response_model=UpcomingList, summary="List upcoming fire times")
def upcoming_fire_times(
    ctx: Context,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most fire times.")] = 20,
) -> UpcomingList:
    """The next fire times of the active clock triggers (cron, every, once), soonest first."""
    found = TriggerService(ctx.workspace.store).upcoming(limit)
    return UpcomingList(upcoming=[UpcomingOut(trigger=u.trigger.name, at=u.at) for u in found])


@router.post(
    "/triggers/{name:path}/pause", response_model=TriggerEnvelope, summary="Pause a trigger"
)
def pause_trigger(ctx: Context, name: Name) -> TriggerEnvelope:
    """Stop firing it until resumed (runs already started go on)."""
    service = TriggerService(ctx.workspace.store)
    return _one(service, service.pause(name))


@router.post(
    "/triggers/{name:path}/resume", response_model=TriggerEnvelope, summary="Resume a trigger"
)
def resume_trigger(ctx: Context, name: Name) -> TriggerEnvelope:
    """Fire it again; ticks that passed while it was paused are not caught up."""
    service = TriggerService(ctx.workspace.store)
    return _one(service, service.resume(name))


@router.post(
    "/triggers/{name:path}/runs",
    response_model=PipelineRunEnvelope,
    status_code=201,
    summary="Fire a trigger now",
)
def fire_trigger(
    ctx: Context,
    actor: Actor,
    name: Name,
    response: Response,
    body: Annotated[TriggerFireRequest | None, Body()] = None,
) -> PipelineRunEnvelope:
    """Start one run of the trigger now, with its parameters (and those given): the run is
    recorded before the answer (its id is in it) and executes in the background."""
    body = body or TriggerFireRequest()
    run = actions.fire_trigger(
        ctx.workspace,
        ctx.launcher,
        name,
        params=body.params,
        variables=body.variables,
        executor=body.executor,
        actor=actor,
    )
    response.headers["Location"] = f"/api/pipeline_runs/{run.id}"
    return PipelineRunEnvelope(pipeline_run=run_detail(run, {}, ctx.workspace.store.events(run.id)))


@router.get(
    "/triggers/{name:path}/runs",
    response_model=PipelineRunList,
    summary="List the runs a trigger started",
)
def list_trigger_runs(
    ctx: Context,
    name: Name,
    limit: Annotated[int, Query(ge=1, le=500, description="Runs per page.")] = 50,
    cursor: Annotated[
        CursorText | None, Query(description="next_cursor of the previous page.")
    ] = None,
) -> PipelineRunList:
    """The runs the trigger started (by the clock, after upstream runs, or fired by hand),
    newest first, one page at a time."""
    TriggerService(ctx.workspace.store).get(name)
    page = page_runs(
        ctx.workspace.store,
        RunQuery(trigger=name),
        limit=limit,
        cursor=decode_cursor(cursor) if cursor else None,
        text=None,
    )
    return PipelineRunList(
        pipeline_runs=[run_out(r) for r in page.runs],
        count=len(page.runs),
        next_cursor=page.next_cursor,
    )


@router.get("/triggers/{name:path}", response_model=TriggerDetailEnvelope, summary="Get a trigger")
def get_trigger(ctx: Context, name: Name) -> TriggerDetailEnvelope:
    """A trigger with its recent ticks (and their runs or why they have none), its alerts and
    its next fire times."""
    service = TriggerService(ctx.workspace.store)
    overview = service.overview(service.get(name), detail=True)
    return TriggerDetailEnvelope(trigger=trigger_detail(overview))


@router.patch("/triggers/{name:path}", response_model=TriggerEnvelope, summary="Change a trigger")
def change_trigger(ctx: Context, name: Name, body: TriggerPatch) -> TriggerEnvelope:
    """Change the fields given; the others keep their values. A changed schedule starts
    afresh: ticks before the change are not missed ones."""
    record = actions.update_trigger(
        ctx.workspace, ctx.launcher, name, body.model_dump(exclude_unset=True)
    )
    return _one(TriggerService(ctx.workspace.store), record)


@router.delete(
    "/triggers/{name:path}", status_code=204, response_class=Response, summary="Delete a trigger"
)
def delete_trigger(ctx: Context, name: Name) -> Response:
    """Delete the trigger; the runs it started stay."""
    TriggerService(ctx.workspace.store).delete(name)
    return Response(status_code=204)
