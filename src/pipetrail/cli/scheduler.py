"""``pipetrail scheduler``: the scheduling loop in the foreground (and the launcher of one tick)."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import click

from pipetrail.cli.common import EXIT_OK, EXIT_USAGE, errors


@click.group("scheduler", invoke_without_command=True)
@click.option(
    "--poll",
    default="1s",
    show_default=True,
    metavar="DURATION",
    help="Time between two looks at the triggers.",
)
@click.option(
    "--grace",
    default="60s",
    show_default=True,
    metavar="DURATION",
    help="A tick at most this late is on time; later it is missed (see each trigger's --catchup).",
)
@click.pass_context
@errors
def scheduler_group(ctx: click.Context, poll: str, grace: str) -> None:
    """Fire the triggers' ticks as runs, watch SLAs and send alerts, until Ctrl-C or SIGTERM.

    Any number of schedulers may share one store: each tick starts at most one run. The runs it
    started go on when it stops. `pipetrail ui` runs the same loop unless --no-scheduler.
    """
    if ctx.invoked_subcommand is not None:
        return
    from pipetrail.dsl import parse_duration
    from pipetrail.scheduling.scheduler import SchedulerOptions
    from pipetrail.workspace import open_workspace

    options = SchedulerOptions(
        poll_s=parse_duration(poll, what="--poll") or 1.0,
        grace_s=parse_duration(grace, what="--grace", zero_ok=True) or 0.0,
    )
    workspace = open_workspace()
    scheduler = workspace.scheduler(options)
    stop = threading.Event()

    def stopping(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    count = len(workspace.store.list_triggers())
    click.echo(
        f"pipetrail scheduler: {count} trigger(s) in {_store_name(workspace.settings.db_url)}; "
        f"{len(workspace.notifiers)} notifier(s); Ctrl-C to stop",
        err=True,
    )
    scheduler.run(stop)
    click.echo("pipetrail scheduler: stopped (the runs it started go on)", err=True)
    sys.exit(EXIT_OK)


def _store_name(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@scheduler_group.command("fire", hidden=True)
@click.argument("name")
@click.option("--at", "at", required=True, help="The tick's scheduled time (ISO 8601).")
@click.option("--upstream", type=int, default=None, help="The run that caused it (after).")
@click.option("--cwd", "cwd", default=None, help="Run in this folder.")
@errors
def fire_command(name: str, at: str, upstream: int | None, cwd: str | None) -> None:
    """Start the run of a tick a scheduler claimed (the scheduler runs this in a new process)."""
    if cwd is not None:
        import os

        os.chdir(cwd)
    from pipetrail.cli.run import execute
    from pipetrail.errors import TickTakenError
    from pipetrail.scheduling.fire import open_tick
    from pipetrail.scheduling.spec import parse_time
    from pipetrail.workspace import open_workspace

    workspace = open_workspace()
    request = open_tick(
        workspace.store,
        name,
        parse_time(at, "--at"),
        upstream_run_id=upstream,
        alerts=workspace.alert_center(),
        base_url=workspace.settings.base_url,
    )
    if isinstance(request, str):
        failed = request.startswith("could not start")
        click.echo(f"error: {request}" if failed else request, err=failed)
        sys.exit(EXIT_USAGE if failed else EXIT_OK)
    try:
        code = execute(workspace, request, None, as_json=False, quiet=True)
    except TickTakenError as exc:
        click.echo(f"nothing to do: {exc}")
        code = EXIT_OK
    sys.exit(code)
