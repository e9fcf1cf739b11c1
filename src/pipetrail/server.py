"""create_app(workspace): the REST API, the dashboard (when installed) and access control.

No module-level app state: everything an app needs hangs off the app it belongs to.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from pipetrail.api import api_router
from pipetrail.api.actions import RunLauncher
from pipetrail.api.auth import AccessMiddleware, AccessPolicy
from pipetrail.api.deps import ApiContext
from pipetrail.api.docs import docs_router
from pipetrail.api.errors import install_error_handlers
from pipetrail.api.login import login_router
from pipetrail.api.project import ProjectDir
from pipetrail.runtime.recovery import LostRunReaper
from pipetrail.workspace import Workspace

__all__ = ["create_app"]

_DESCRIPTION = """\
The record of every pipeline run: what ran, with which code, data and parameters, what it
produced, and how it ended. Nouns follow Mage's API (pipeline runs, block runs).

Triggers and retries import pipeline files only from the project directory the server was
started for (`pipetrail ui --project-dir`). Access: without a token the server listens on
127.0.0.1 only. With a token, send
`Authorization: Bearer <token>`. Errors are JSON: `{"error": {"type": ..., "message": ...}}`.
"""


def create_app(
    workspace: Workspace,
    *,
    token: str | None = None,
    host: str = "127.0.0.1",
    project_dir: Path | None = None,
    scheduler: bool = False,
) -> FastAPI:
    """The server over ``workspace``: ``/api``, ``/docs``, ``/login`` and the dashboard pages.

    Args:
        workspace: the stores to serve; runs it starts run with Workspaces of the same settings.
        token: the server's access token (it acts as user ``admin``, with the admin role);
            required when ``host`` is not a loopback address, unless the store has named
            tokens.
        host: the address the server will bind (decides whether a token is required).
        project_dir: the only folder whose pipeline files triggers and retries may import
            (symlinks out of it count as outside); by default the current directory.
        scheduler: run the scheduling loop in the server (``pipetrail ui`` does, unless
            ``--no-scheduler``): triggers fire, SLAs are watched, alerts sent.

    Raises:
        ConfigError: ``host`` is not a loopback address, no token is given and the store has
            no named tokens.
    """
    # The single server token acts as an admin named "admin"; the store's named tokens, once it
    # has any, are required of every request, each with its role (api/auth.py, api/roles.py).
    policy = AccessPolicy(token, host, workspace.store)
    launcher = RunLauncher(workspace.settings, ProjectDir(project_dir or Path.cwd()))

    # A server left running must notice runs whose runner died, with no other command.
    reaper = LostRunReaper(workspace.store, workspace.spool_root)

    loop = _SchedulerThread(workspace, project_dir or Path.cwd()) if scheduler else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reaper.start()
        if loop is not None:
            loop.start()
        try:
            yield
        finally:
            if loop is not None:
                loop.stop()
            reaper.stop()
            # Runs this server was driving cannot go on without it: end them as cancelled.
            launcher.shutdown(workspace)

    app = FastAPI(
        title="pipetrail",
        summary="REST API of the pipetrail run recorder",
        description=_DESCRIPTION,
        version=_version(),
        lifespan=lifespan,
        # Served by docs_router from the package: FastAPI's own pages load from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.pipetrail = ApiContext(workspace=workspace, launcher=launcher)
    install_error_handlers(app)
    app.include_router(api_router())
    app.include_router(login_router(policy))
    app.include_router(docs_router(app.openapi_url or "/openapi.json", app.title))
    if not _mount_dashboard(app, workspace):

        @app.get("/", include_in_schema=False)
        def home() -> RedirectResponse:
            return RedirectResponse("/docs", status_code=307)

    app.add_middleware(AccessMiddleware, policy=policy)
    return app


class _SchedulerThread:
    """The scheduling loop in a thread of the server; the runs it starts are processes."""

    def __init__(self, workspace: Workspace, cwd: Path) -> None:
        self._scheduler = workspace.scheduler(cwd=cwd)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._scheduler.run, args=(self._stop,), name="pipetrail-scheduler", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30.0)


def _mount_dashboard(app: FastAPI, workspace: Workspace) -> bool:
    """Include the dashboard's pages when it is installed; the API works without it."""
    try:
        from pipetrail.dashboard import create_router
    except ImportError:
        return False
    # Pages read request.state.csrf_token, which AccessMiddleware sets.
    app.include_router(create_router(workspace))
    return True


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pipetrail")
    except PackageNotFoundError:
        return "0"
