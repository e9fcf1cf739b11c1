"""The dashboard's routes: server-rendered pages, table fragments for live refresh, assets."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from pipetrail.client import Run
from pipetrail.core.bounds import check_id
from pipetrail.core.status import RUN_TERMINAL
from pipetrail.dashboard.assets import asset_version, static_response
from pipetrail.dashboard.charts import run_series
from pipetrail.dashboard.comparison import compare_view, parse_run_ids
from pipetrail.dashboard.detail import run_detail, step_states
from pipetrail.dashboard.formatting import FILTERS
from pipetrail.dashboard.lineage import run_lineage
from pipetrail.dashboard.listing import PipelineNames, RunFilters, load_page
from pipetrail.dashboard.models import approvals_page, model_href, model_page, models_page
from pipetrail.dashboard.triggers import (
    record_href,
    relative,
    trigger_href,
    trigger_page,
    triggers_page,
    upcoming_rows,
)
from pipetrail.errors import NotFoundError, PipetrailError, UsageError
from pipetrail.scheduling.service import TriggerService

if TYPE_CHECKING:
    from pipetrail.workspace import Workspace

__all__ = ["create_router"]

TEMPLATES = Path(__file__).parent / "templates"


def _templates(version: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(("html",)),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    env.filters["urlpart"] = lambda text: quote(str(text), safe="")
    env.filters["relative"] = relative
    env.filters["basename"] = lambda text: str(text).replace("\\", "/").rsplit("/", 1)[-1]
    env.globals["trigger_href"] = trigger_href
    env.globals["record_href"] = record_href
    env.globals["model_href"] = model_href
    env.globals["asset"] = lambda path: f"/static/{path}?v={version}"
    env.globals["TERMINAL"] = {s.value for s in RUN_TERMINAL}
    return env


def create_router(
    workspace: Workspace, csrf_for: Callable[[Request], str] | None = None
) -> APIRouter:
    """The dashboard's pages over ``workspace``, to include in the server's app.

    Args:
        workspace: the stores the pages read (through the client, never SQL).
        csrf_for: the token the page's scripts send back in ``X-Pipetrail-CSRF`` with each
            action (retry, cancel); by default ``request.state.csrf_token``, which the
            server's access middleware sets.

    Returns:
        A router with ``/pipeline-runs`` (and ``/pipeline-runs/upcoming``),
        ``/pipelines/{name}/runs``, ``/pipelines/{name}/runs/{id}``, ``/triggers``,
        ``/triggers/{name}``, ``/models``, ``/models/{name}``, ``/approvals``, ``/compare`` and
        ``/static/{path}``.
    """
    router = APIRouter(include_in_schema=False)
    version = asset_version()
    templates = _templates(version)
    reader = workspace.reader()
    store = workspace.store
    pipeline_names = PipelineNames(reader)
    service = TriggerService(store)

    def trigger_names() -> list[str]:
        try:
            return sorted(r.name for r in service.all())
        except PipetrailError:
            return []

    def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        context["request"] = request
        context["csrf_token"] = (
            csrf_for(request)
            if csrf_for is not None
            else str(getattr(request.state, "csrf_token", "") or "")
        )
        context.setdefault("nav", "")
        html = templates.get_template(name).render(context)
        return HTMLResponse(html, status_code=status_code)

    def problem(request: Request, exc: PipetrailError) -> HTMLResponse:
        code = (
            404 if isinstance(exc, NotFoundError) else 400 if isinstance(exc, UsageError) else 500
        )
        title = {404: "Not found", 400: "Cannot show this"}.get(code, "Something went wrong")
        return render(request, "error.html", code, title=title, message=str(exc))

    def runs_list(request: Request, pipeline: str | None, fragment: bool) -> HTMLResponse:
        filters = RunFilters.from_query(request.query_params.multi_items(), pipeline=pipeline)
        page = load_page(reader, filters, names=pipeline_names)
        if pipeline is not None:
            base = f"/pipelines/{quote(pipeline, safe='')}/runs"
        else:
            base = "/pipeline-runs"
        template = (
            "_runs_live.html"
            if fragment
            else ("pipeline_runs.html" if pipeline is not None else "runs.html")
        )
        return render(
            request,
            template,
            page=page,
            filters=filters,
            base=base,
            pipeline=pipeline,
            trigger_names=[] if fragment else trigger_names(),
            tab="past",
            nav="runs",
        )

    @router.get("/")
    def home() -> RedirectResponse:
        return RedirectResponse("/pipeline-runs", status_code=307)

    @router.get("/pipeline-runs", response_class=HTMLResponse)
    def all_runs(request: Request) -> HTMLResponse:
        return runs_list(request, None, fragment=False)

    @router.get("/pipeline-runs/_table", response_class=HTMLResponse)
    def all_runs_table(request: Request) -> HTMLResponse:
        return runs_list(request, None, fragment=True)

    @router.get("/pipeline-runs/upcoming", response_class=HTMLResponse)
    def upcoming_runs(request: Request) -> HTMLResponse:
        try:
            upcoming = upcoming_rows(service)
        except PipetrailError as exc:
            return problem(request, exc)
        return render(
            request,
            "upcoming.html",
            upcoming=upcoming,
            scheduler_running=service.scheduler_running(),
            tab="upcoming",
            nav="runs",
        )

    @router.get("/triggers", response_class=HTMLResponse)
    def triggers(request: Request) -> HTMLResponse:
        try:
            view = triggers_page(service)
        except PipetrailError as exc:
            return problem(request, exc)
        return render(request, "triggers.html", view=view, nav="triggers")

    # ``path``: a trigger's name may hold slashes (quoted as %2F in links, decoded by then).
    @router.get("/triggers/{name:path}", response_class=HTMLResponse)
    def trigger(request: Request, name: str) -> Response:
        if not name:
            return RedirectResponse("/triggers", status_code=307)
        try:
            view = trigger_page(service, name)
        except PipetrailError as exc:
            return problem(request, exc)
        return render(request, "trigger.html", view=view, nav="triggers")

    @router.get("/models", response_class=HTMLResponse)
    def models(request: Request) -> HTMLResponse:
        try:
            rows = models_page(store)
        except PipetrailError as exc:
            return problem(request, exc)
        return render(request, "models.html", rows=rows, nav="models")

    # ``path``: a link quotes the whole name, so a slash in it must not end the route.
    @router.get("/models/{name:path}", response_class=HTMLResponse)
    def model(request: Request, name: str) -> Response:
        if not name:
            return RedirectResponse("/models", status_code=307)
        try:
            view = model_page(store, name)
        except PipetrailError as exc:
            return problem(request, exc)
        return render(request, "model.html", view=view, nav="models")

    @router.get("/approvals", response_class=HTMLResponse)
    def approvals(request: Request) -> HTMLResponse:
        try:
            view = approvals_page(store)
        except PipetrailError as exc:
            return problem(request, exc)
        return render(request, "approvals.html", view=view, nav="approvals")

    @router.get("/pipelines/{name}/runs", response_class=HTMLResponse)
    def pipeline_runs(request: Request, name: str) -> HTMLResponse:
        return runs_list(request, name, fragment=False)

    @router.get("/pipelines/{name}/runs/_table", response_class=HTMLResponse)
    def pipeline_runs_table(request: Request, name: str) -> HTMLResponse:
        return runs_list(request, name, fragment=True)

    def open_run(name: str, run_id: int, suffix: str = "") -> Run | RedirectResponse:
        run = Run(check_id(run_id, "run"), reader=reader)
        if run.pipeline_name != name:
            # An old link, or a typo in the pipeline: the id alone names the run.
            target = f"/pipelines/{quote(run.pipeline_name, safe='')}/runs/{run_id}{suffix}"
            return RedirectResponse(target, status_code=307)
        return run

    @router.get("/pipelines/{name}/runs/{run_id:int}", response_class=HTMLResponse)
    def run_page(request: Request, name: str, run_id: int) -> Response:
        try:
            run = open_run(name, run_id)
            if isinstance(run, RedirectResponse):
                return run
            detail = run_detail(run, store)
            step_names = {a.record.id: s.name for s in detail.steps for a in s.attempts}
            series = [s.to_dict() for s in run_series(store, run.id, step_names)]
            lineage = run_lineage(run, store, reader)
            environment = run.environment
            code = run.code
        except PipetrailError as exc:
            return problem(request, exc)
        data = {
            "run": {
                "id": run.id,
                "pipeline": run.pipeline_name,
                "status": run.status,
                "live": detail.live,
            },
            "dag": detail.dag,
            "selected": detail.selected,
            "metrics": series,
        }
        return render(
            request,
            "run.html",
            detail=detail,
            run=run,
            lineage=lineage,
            environment=environment,
            code=code,
            events=run.events,
            series=series,
            data=data,
            nav="runs",
        )

    @router.get("/pipelines/{name}/runs/{run_id:int}/_state")
    def run_state(name: str, run_id: int) -> JSONResponse:
        """Statuses for the run page's live refresh (the page reloads once the run ends)."""
        try:
            run = Run(check_id(run_id, "run"), reader=reader)
        except NotFoundError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=404)
        except UsageError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        return JSONResponse(
            {
                "id": run.id,
                "status": run.status,
                "finished": run.finished,
                "steps": step_states(run),
                "at": datetime.now(UTC).isoformat(),
            },
            headers={"Cache-Control": "no-store"},
        )

    @router.get("/compare", response_class=HTMLResponse)
    def compare_page(request: Request, runs: str = "") -> HTMLResponse:
        if not runs.strip():
            return render(request, "compare.html", view=None, ids="", nav="compare")
        try:
            ids = [check_id(i, "compare") for i in parse_run_ids(runs)]
            view = compare_view(ids, reader, store)
        except PipetrailError as exc:
            return render(
                request,
                "compare.html",
                404 if isinstance(exc, NotFoundError) else 400,
                view=None,
                ids=runs,
                message=str(exc),
                nav="compare",
            )
        data = {
            "runs": [r.pathspec for r in view.runs],
            "histories": view.histories,
            "coordinates": view.coordinates,
        }
        return render(
            request,
            "compare.html",
            view=view,
            ids=",".join(map(str, ids)),
            data=data,
            nav="compare",
        )

    @router.get("/static/{path:path}")
    def static(request: Request, path: str) -> Response:
        return static_response(path, versioned=request.query_params.get("v") == version)

    return router
