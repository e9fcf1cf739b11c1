"""``pipetrail ui``: serve the REST API and the dashboard."""

from __future__ import annotations

import click

from pipetrail.cli.common import errors


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option(
    "--token",
    default=None,
    envvar="PIPETRAIL_TOKEN",
    help="Access token; required when binding anything but 127.0.0.1 (env PIPETRAIL_TOKEN).",
)
@errors
def ui_command(host: str, port: int, token: str | None) -> None:
    """Serve the REST API and the dashboard over the configured store."""
    import uvicorn

    from pipetrail.server import create_app
    from pipetrail.workspace import open_workspace

    app = create_app(open_workspace(), token=token, host=host)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    click.echo(f"pipetrail dashboard: http://{shown}:{port}/pipeline-runs   (API docs: /docs)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
