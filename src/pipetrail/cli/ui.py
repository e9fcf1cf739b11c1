"""``pipetrail ui``: serve the REST API and the dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pipetrail.cli.common import errors

#: PostgreSQL connections the server keeps for requests served side by side.
SERVER_CONNECTIONS = 8


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option(
    "--token",
    default=None,
    envvar="PIPETRAIL_TOKEN",
    help="The server's own access token (it acts as the admin 'admin'); required when binding "
    "anything but 127.0.0.1, unless the store has named tokens (env PIPETRAIL_TOKEN).",
)
@click.option(
    "--project-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="The only folder whose pipeline files triggers and retries may import.",
)
@click.option(
    "--no-scheduler",
    is_flag=True,
    help="Do not run the scheduling loop here (run `pipetrail scheduler` elsewhere instead).",
)
@errors
def ui_command(
    host: str, port: int, token: str | None, project_dir: Path, no_scheduler: bool
) -> None:
    """Serve the REST API and the dashboard over the configured store.

    The server also runs the scheduler (triggers fire, SLAs are watched, alerts are sent)
    unless --no-scheduler.
    """
    import uvicorn

    from pipetrail.server import create_app
    from pipetrail.workspace import open_workspace

    project = project_dir.resolve()
    app = create_app(
        open_workspace(connections=SERVER_CONNECTIONS),
        token=token,
        host=host,
        project_dir=project,
        scheduler=not no_scheduler,
    )
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    click.echo(f"pipetrail dashboard: http://{shown}:{port}/pipeline-runs   (API docs: /docs)")
    click.echo(f"pipeline files from: {project}")
    click.echo("scheduler: " + ("not here (--no-scheduler)" if no_scheduler else "running"))
    click.echo(f"access: {_access(app, token)}")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _access(app: Any, token: str | None) -> str:
    """How requests get in, for the start-up lines."""
    store = app.state.pipetrail.workspace.store
    if store.has_tokens():
        active = sum(1 for t in store.list_tokens() if t.active)
        mine = " and the server's token" if token else ""
        return f"named tokens ({active} active){mine}, each with its role"
    if token:
        return "the server's token (admin)"
    return "this machine only (no token)"
