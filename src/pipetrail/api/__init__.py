"""The REST API (FastAPI): pipelines, pipeline runs, block runs, artifacts, run actions and
triggers."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["api_router"]


def api_router() -> APIRouter:
    """Every ``/api`` route, in one router (the server mounts it with the dashboard)."""
    from pipetrail.api.routes import (
        artifacts,
        block_runs,
        models,
        pipelines,
        retention,
        runs,
        tokens,
        triggers,
    )

    router = APIRouter()
    for module in (pipelines, runs, block_runs, artifacts, triggers, retention, tokens, models):
        router.include_router(module.router)
    return router
