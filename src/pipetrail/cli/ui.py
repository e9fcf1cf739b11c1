"""``pipetrail ui``: serve the REST API and the dashboard."""

from __future__ import annotations

from pathlib import Path

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
    help="Access token; required when binding anything but 127.0.0.1 (env PIPETRAIL_TOKEN).",
)
@click.option(
    "--project-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="The only folder whose pipeline files triggers and retries may import.",
)
@errors
def ui_command(host: str, port: int, token: str | None, project_dir: Path) -> None:
    """Serve the REST API and the dashboard over the configured store."""
    import uvicorn

    from pipetrail.server import create_app
    from pipetrail.workspace import open_workspace

    project = project_dir.resolve()
    app = create_app(
        open_workspace(connections=SERVER_CONNECTIONS), token=token, host=host, project_dir=project
    )
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    click.echo(f"pipetrail dashboard: http://{shown}:{port}/pipeline-runs   (API docs: /docs)")
    click.echo(f"pipeline files from: {project}")
    uvicorn.run(app, host=host, port=port, log_level="warning")
