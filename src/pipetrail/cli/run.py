"""``pipetrail run``: run a pipeline file with the live display."""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

import click

from pipetrail.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, count, errors, pairs
from pipetrail.errors import UsageError


@click.command("run")
@click.argument("target", metavar="FILE[:PIPELINE]")
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a parameter (repeatable); lists and dicts as JSON: -p 'layers=[64, 32]'.",
)
@click.option(
    "--var",
    "variables",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a runtime variable, read as pt.current.vars (repeatable).",
)
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Add a user tag (repeatable).")
@click.option(
    "--executor",
    type=click.Choice(["process", "inline", "dask"]),
    default=None,
    help="Where steps run: warm worker processes (default), this process, or a Dask cluster.",
)
@click.option(
    "--dask-address",
    default=None,
    metavar="ADDR",
    help="The Dask scheduler to run on (tcp://HOST:8786; implies --executor dask); "
    "without it --executor dask starts a local cluster. Default: PIPETRAIL_DASK_ADDRESS.",
)
@click.option("--max-parallel", type=count(low=1), default=None, help="Most tasks at once.")
@click.option("--timeout", default=None, metavar="DURATION", help="Run timeout: 90s, 10m, 2h.")
@click.option(
    "--on-timeout",
    type=click.Choice(["failed", "cancelled", "warning"]),
    default=None,
    help="What a run timeout does (default: the pipeline's, else failed).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the finished run as JSON; no live display."
)
@click.option("--quiet", "-q", is_flag=True, help="No live display; print only the outcome.")
@errors
def run_command(
    target: str,
    params: tuple[str, ...],
    variables: tuple[str, ...],
    tags: tuple[str, ...],
    executor: str | None,
    dask_address: str | None,
    max_parallel: int | None,
    timeout: str | None,
    on_timeout: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Run the pipeline in FILE (naming PIPELINE when the file defines several)."""
    from pipetrail.core.ids import validate_user_tags
    from pipetrail.runtime.engine import RunRequest
    from pipetrail.runtime.loader import load_pipeline

    # Everything is validated before the store is opened: bad input writes nothing.
    executor = dask_executor(executor, dask_address)
    overrides = pairs(params, "-p/--param")
    runtime_vars = pairs(variables, "--var")
    user_tags = validate_user_tags(tags)
    pipeline = load_pipeline(target)
    resolved = pipeline.resolve_params(overrides, from_text=True)

    from pipetrail.dsl import parse_duration
    from pipetrail.workspace import open_workspace

    request = RunRequest(
        pipeline=pipeline,
        params=resolved,
        variables=runtime_vars,
        tags=user_tags,
        trigger="cli",
        max_parallel=max_parallel,
        timeout_s=parse_duration(timeout, what="--timeout") if timeout else None,
        on_timeout=on_timeout,
    )
    sys.exit(
        execute(
            open_workspace(),
            request,
            executor,
            as_json=as_json,
            quiet=quiet,
            dask_address=dask_address,
        )
    )


def dask_executor(executor: str | None, dask_address: str | None) -> str | None:
    """The executor ``--executor`` and ``--dask-address`` name together; checks the address.

    Raises:
        UsageError: an address with another executor, or one that is not a scheduler address.
    """
    if dask_address is None:
        return executor
    if executor not in (None, "dask"):
        raise UsageError(f"--dask-address is for --executor dask, not --executor {executor}")
    from pipetrail.runtime.executors.dask import check_address

    check_address(dask_address)
    return "dask"


def execute(
    workspace: Any,
    request: Any,
    executor: str | None,
    *,
    as_json: bool,
    quiet: bool,
    prepared: Any = None,
    dask_address: str | None = None,
) -> int:
    """Run ``request`` with the live display (or not), print the outcome, return the exit code.

    ``prepared``: the run of ``request`` already recorded (``initial``), as a trigger fired by
    hand records it; it is executed instead of recording a new one. ``dask_address``: the
    scheduler for the ``dask`` executor (connected before anything is recorded).
    """
    from pipetrail.cli.render import console, print_run_outcome, run_to_json
    from pipetrail.client import Run

    live = None
    if not (as_json or quiet):
        from pipetrail.cli.live import LiveRunDisplay

        live = LiveRunDisplay(console())
    try:
        engine = workspace.engine(executor=executor, observer=live, dask_address=dask_address)
    except BaseException:
        if live is not None:
            live.stop()
        raise

    def terminated(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt("cancelled: the runner received SIGTERM")

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        record = engine.run(request) if prepared is None else engine.execute(prepared, request)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if live is not None:
            live.stop()
    run = Run(record.id, reader=workspace.reader())
    if as_json:
        click.echo(json.dumps(run_to_json(run), indent=2, default=str))
    else:
        print_run_outcome(run)
    if record.status.value == "completed":
        return EXIT_OK
    return EXIT_INTERRUPTED if record.status.value == "cancelled" else EXIT_FAILED
