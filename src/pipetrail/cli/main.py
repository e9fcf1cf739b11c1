"""The ``pipetrail`` command: a thin shell over the workspace, the engine and the client."""

from __future__ import annotations

import functools
import json
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click

from pipetrail.errors import PipetrailError, UsageError

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _errors(func: F) -> F:
    """Turn pipetrail errors into one line on stderr and the right exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UsageError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except PipetrailError as exc:  # the store failing, an artifact unreadable, …
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_FAILED)

    return wrapper  # type: ignore[return-value]


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"{option} expects NAME=VALUE, got {item!r}")
        result[name.strip()] = value
    return result


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pipetrail")
def cli() -> None:
    """pipetrail: run pipelines and keep a complete record of every run."""


@cli.command("run")
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
    type=click.Choice(["process", "inline"]),
    default=None,
    help="Where steps run: warm worker processes (default) or this process.",
)
@click.option(
    "--max-parallel", type=click.IntRange(min=1), default=None, help="Most tasks at once."
)
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
@_errors
def run_command(
    target: str,
    params: tuple[str, ...],
    variables: tuple[str, ...],
    tags: tuple[str, ...],
    executor: str | None,
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
    overrides = _pairs(params, "-p/--param")
    runtime_vars = _pairs(variables, "--var")
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
    sys.exit(_execute(open_workspace(), request, executor, as_json=as_json, quiet=quiet))


def _execute(
    workspace: Any, request: Any, executor: str | None, *, as_json: bool, quiet: bool
) -> int:
    """Run ``request`` with the live display (or not), print the outcome, return the exit code."""
    from pipetrail.cli.render import console, print_run_outcome, run_to_json
    from pipetrail.client import Run

    live = None
    if not (as_json or quiet):
        from pipetrail.cli.live import LiveRunDisplay

        live = LiveRunDisplay(console())
    engine = workspace.engine(executor=executor, observer=live)

    def terminated(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt("cancelled: the runner received SIGTERM")

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        record = engine.run(request)
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


@cli.group("runs")
def runs_group() -> None:
    """List, inspect, compare, retry, reproduce and cancel recorded runs."""


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    units = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
    stripped = text.strip().lower()
    if stripped[-1:] in units and stripped[:-1].isdigit():
        return datetime.now(UTC) - timedelta(seconds=int(stripped[:-1]) * units[stripped[-1]])
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--since expects a duration like '30m', '2h', '7d' or an ISO date, got {text!r}"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@runs_group.command("list")
@click.option("--pipeline", default=None, help="Only runs of this pipeline.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["initial", "running", "completed", "failed", "cancelled"]),
    help="Only runs in this status (repeatable).",
)
@click.option(
    "--tag", "tags", multiple=True, help="Only runs with this tag (repeatable: all must match)."
)
@click.option("--since", default=None, help="Only runs created since: 30m, 2h, 7d or an ISO date.")
@click.option("--user", default=None, help="Only runs started by this user.")
@click.option(
    "--filter",
    "filter_text",
    default=None,
    metavar="QUERY",
    help="Search: \"metrics.accuracy > 0.9 and params.lr = 0.01 or tags.phase = 'exp'\".",
)
@click.option(
    "--order-by",
    "order_by",
    multiple=True,
    metavar="FIELD [asc|desc]",
    help="Sort, e.g. --order-by 'metrics.accuracy desc' (repeatable).",
)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_errors
def runs_list(
    pipeline: str | None,
    statuses: tuple[str, ...],
    tags: tuple[str, ...],
    since: str | None,
    user: str | None,
    filter_text: str | None,
    order_by: tuple[str, ...],
    limit: int,
    as_json: bool,
) -> None:
    """Recorded runs of every pipeline and user, newest first (or --order-by)."""
    from pipetrail.client import list_runs
    from pipetrail.core.status import RunStatus

    since_at = _since(since)
    try:
        workspace = _workspace()
    except NothingRecorded as exc:
        click.echo([] if as_json else str(exc).replace("no runs recorded yet: ", "No runs yet: "))
        sys.exit(EXIT_OK)
    runs = list_runs(
        pipeline=pipeline,
        statuses=tuple(RunStatus(s) for s in statuses),
        tags=tags + ((f"user:{user}",) if user else ()),
        since=since_at,
        limit=limit,
        filter=filter_text,
        order_by=order_by,
        all_namespaces=True,
        reader=workspace.reader(),
    )
    from pipetrail.cli.render import print_run_list, run_summary_json

    if as_json:
        click.echo(json.dumps([run_summary_json(r) for r in runs], indent=2, default=str))
    else:
        print_run_list(runs)


@runs_group.command("show")
@click.argument("run_ref", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print everything recorded as JSON.")
@_errors
def runs_show(run_ref: str, as_json: bool) -> None:
    """Everything recorded about RUN ('iris/42' or '42')."""
    from pipetrail.cli.render import print_run, run_to_json

    run, step = _run_and_step(run_ref)
    if step is not None:
        raise UsageError(
            f"runs show takes a run ({run.pathspec}), not a step; for a step's output use: "
            f"pipetrail logs {run.pathspec} {step}"
        )
    if as_json:
        click.echo(json.dumps(run_to_json(run), indent=2, default=str))
    else:
        print_run(run)


def _run_and_step(ref: str) -> tuple[Any, str | None]:
    """The run a pathspec names, and its step part (checked against the run's steps)."""
    from pipetrail.client import Run
    from pipetrail.core.ids import parse_pathspec

    spec = parse_pathspec(ref)
    workspace = _workspace()
    record = workspace.store.get_run(spec.run_id)
    if spec.pipeline is not None and spec.pipeline != record.pipeline:
        raise UsageError(
            f"run {spec.run_id} is {record.pathspec}, not a run of {spec.pipeline!r}; run ids are "
            f"shared by all pipelines: see pipetrail runs list --pipeline {spec.pipeline}"
        )
    run = Run(spec.run_id, reader=workspace.reader())
    if spec.step is not None and spec.step not in run:
        raise UsageError(
            f"run {run.pathspec} has no step {spec.step!r}; steps: {', '.join(s.name for s in run)}"
        )
    return run, spec.step


_STATUSES = ["initial", "running", "completed", "failed", "cancelled"]


def _select_runs(
    workspace: Any,
    refs: tuple[str, ...],
    *,
    pipeline: str | None,
    statuses: tuple[str, ...],
    since: str | None,
    what: str,
) -> list[Any]:
    from pipetrail.core.ids import parse_pathspec
    from pipetrail.core.status import RunStatus
    from pipetrail.storage.metadata.base import RunQuery

    if refs and (statuses or pipeline or since):
        raise UsageError(f"{what}: give RUN ids or filters (--status/--pipeline/--since), not both")
    if refs:
        records = []
        for ref in refs:
            spec = parse_pathspec(ref)
            record = workspace.store.get_run(spec.run_id)
            if spec.pipeline is not None and spec.pipeline != record.pipeline:
                raise UsageError(
                    f"run {spec.run_id} belongs to pipeline {record.pipeline!r}, "
                    f"not {spec.pipeline!r}"
                )
            records.append(record)
        return records
    if not (statuses or pipeline or since):
        raise UsageError(f"{what}: name a RUN, or select runs with --status/--pipeline/--since")
    query = RunQuery(
        pipeline=pipeline,
        statuses=tuple(RunStatus(s) for s in statuses),
        since=_since(since),
        limit=None,
    )
    return list(reversed(workspace.store.list_runs(query)))


@runs_group.command("retry")
@click.argument("run_refs", metavar="[RUN]...", nargs=-1)
@click.option(
    "--from", "from_step", default=None, metavar="STEP", help="Re-run STEP and all downstream."
)
@click.option(
    "-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="Change a parameter."
)
@click.option(
    "--dry-run", is_flag=True, help="Print the plan (reuse or re-run, and why); run nothing."
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(_STATUSES),
    help="Retry runs in this status.",
)
@click.option("--pipeline", default=None, help="With --status: only this pipeline's runs.")
@click.option("--since", default=None, help="With --status: only runs created since (30m, 2h, 7d).")
@click.option("--executor", type=click.Choice(["process", "inline"]), default=None)
@click.option("--max-parallel", type=click.IntRange(min=1), default=None)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.option("--quiet", "-q", is_flag=True, help="No live display.")
@_errors
def runs_retry(
    run_refs: tuple[str, ...],
    from_step: str | None,
    params: tuple[str, ...],
    dry_run: bool,
    statuses: tuple[str, ...],
    pipeline: str | None,
    since: str | None,
    executor: str | None,
    max_parallel: int | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Run RUN again as a new run: completed steps are reused, the rest re-run.

    Steps re-run when they did not complete, when they read a parameter changed with -p, when
    their code changed, with --from, or when anything upstream of them re-runs. The origin run
    is never changed.
    """
    from pipetrail.cli.render import print_plan
    from pipetrail.runtime.control import describe_plan, retry_request

    overrides = _pairs(params, "-p/--param")
    workspace = _workspace()
    origins = _select_runs(
        workspace, run_refs, pipeline=pipeline, statuses=statuses, since=since, what="runs retry"
    )
    if not origins:
        click.echo("no runs match; nothing to retry")
        sys.exit(EXIT_OK)
    planned = []
    for origin in origins:
        request, plan = retry_request(
            workspace.store,
            origin,
            overrides=overrides,
            from_step=from_step,
            max_parallel=max_parallel,
        )
        planned.append((origin, request, plan))
    if dry_run:
        if as_json:
            rows = [{"origin": o.pathspec, "plan": describe_plan(plan)} for o, _, plan in planned]
            click.echo(json.dumps(rows, indent=2))
        else:
            for origin, _, plan in planned:
                print_plan(origin.pathspec, plan)
        sys.exit(EXIT_OK)
    codes = [
        _execute(workspace, request, executor, as_json=as_json, quiet=quiet)
        for _, request, _ in planned
    ]
    sys.exit(max(codes))


@runs_group.command("cancel")
@click.argument("run_refs", metavar="[RUN]...", nargs=-1)
@click.option("--all-running", is_flag=True, help="Cancel every waiting or running run.")
@click.option("--pipeline", default=None, help="With --all-running: only this pipeline's runs.")
@click.option("--reason", default=None, help="Recorded with the cancel.")
@click.option("--no-wait", is_flag=True, help="Ask the runners and return at once.")
@_errors
def runs_cancel(
    run_refs: tuple[str, ...],
    all_running: bool,
    pipeline: str | None,
    reason: str | None,
    no_wait: bool,
) -> None:
    """Cancel RUN(s) from any terminal: running steps are stopped, the rest never start."""
    from pipetrail.cli.render import console
    from pipetrail.core.status import RUN_TERMINAL
    from pipetrail.runtime.control import cancel_run

    workspace = _workspace()
    if all_running:
        if run_refs:
            raise UsageError("runs cancel: give RUN ids or --all-running, not both")
        targets = _select_runs(
            workspace,
            (),
            pipeline=pipeline,
            statuses=("initial", "running"),
            since=None,
            what="runs cancel",
        )
    elif pipeline:
        raise UsageError("--pipeline goes with --all-running")
    elif not run_refs:
        raise UsageError("runs cancel: name a RUN, or use --all-running [--pipeline NAME]")
    else:
        targets = _select_runs(
            workspace, run_refs, pipeline=None, statuses=(), since=None, what="runs cancel"
        )
        for run in targets:
            if run.status in RUN_TERMINAL:
                raise UsageError(
                    f"run {run.pathspec} has already ended ({run.status.value}); nothing to cancel"
                )
    if not targets:
        console().print("no waiting or running runs; nothing to cancel")
        sys.exit(EXIT_OK)
    for run in targets:
        if no_wait:
            workspace.store.request_cancel(run.id, reason or "cancel requested")
            console().print(f"{run.pathspec}: cancel requested")
        else:
            ended = cancel_run(workspace.store, run, reason=reason)
            console().print(f"{ended.pathspec}: {ended.status.value}")


@runs_group.command("diff")
@click.argument("run_refs", metavar="RUN RUN [RUN]...", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@_errors
def runs_diff(run_refs: tuple[str, ...], as_json: bool) -> None:
    """Compare runs: parameters, metrics with deltas, code, environment, artifacts, inputs.

    With more than two runs (of any pipelines): a table of parameters and metrics, the
    columns that differ first.
    """
    from pipetrail.cli.render import console
    from pipetrail.client.comparison import compare, render

    if len(run_refs) < 2:
        raise UsageError(
            "runs diff needs at least two runs, e.g. pipetrail runs diff iris/3 iris/4"
        )
    runs = [_run_and_step(ref)[0] for ref in run_refs]
    comparison = compare(*runs)
    if as_json:
        click.echo(json.dumps(comparison.to_dict(), indent=2, default=str))
    else:
        console().print(render(comparison))


@cli.command("lineage")
@click.argument("target", metavar="RUN|ARTIFACT_HASH")
@click.option(
    "--direction",
    type=click.Choice(["up", "down"]),
    default="up",
    show_default=True,
    help="up: what made it (back to input files); down: everything that used it.",
)
@click.option("--depth", type=click.IntRange(min=0), default=None, help="Most task hops.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["tree", "json", "dot", "mermaid"]),
    default="tree",
    show_default=True,
)
@_errors
def lineage_command(target: str, direction: str, depth: int | None, fmt: str) -> None:
    """The graph of artifacts and the tasks that produced and consumed them, across runs.

    TARGET is a run ('iris/42') or an artifact content hash (8 characters or more).
    """
    from pipetrail.cli.render import console
    from pipetrail.client.lineage_graph import lineage

    workspace = _workspace()
    graph = lineage(target, direction=direction, depth=depth, reader=workspace.reader())
    if fmt == "json":
        click.echo(json.dumps(graph.to_dict(), indent=2, default=str))
    elif fmt == "dot":
        click.echo(graph.to_dot())
    elif fmt == "mermaid":
        click.echo(graph.to_mermaid())
    else:
        console().print(graph.render_tree())


@runs_group.command("reproduce")
@click.argument("run_ref", metavar="RUN")
@click.option(
    "--use-working-tree", is_flag=True, help="Run the pipeline file as it is now, not as recorded."
)
@click.option("--executor", type=click.Choice(["process", "inline"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No live display.")
@_errors
def runs_reproduce(
    run_ref: str, use_working_tree: bool, executor: str | None, as_json: bool, quiet: bool
) -> None:
    """Run RUN again from its stored code with its recorded parameters and variables.

    Then report, output by output, whether the content hashes match the original run's
    (deterministic or not), and whether the environment differs from the recorded one.
    """
    from pipetrail.cli.render import print_reproduction
    from pipetrail.runtime.control import reproduce_request, reproduction_report

    run, step = _run_and_step(run_ref)
    if step is not None:
        raise UsageError("runs reproduce takes a run, not a step")
    workspace = _workspace()
    origin = workspace.store.get_run(run.id)
    request = reproduce_request(
        workspace.store,
        workspace.cas.get_bytes,
        origin,
        workdir=workspace.settings.home / "reproduce",
        use_working_tree=use_working_tree,
    )
    engine = workspace.engine(executor=executor, observer=None if (quiet or as_json) else _live())
    record = _run_quietly(engine, request)
    report = reproduction_report(workspace.store, origin, record)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        print_reproduction(report)
    sys.exit(EXIT_OK if record.status.value == "completed" else EXIT_FAILED)


@runs_group.command("tag")
@click.argument("run_ref", metavar="RUN")
@click.option("--add", "adding", multiple=True, metavar="TAG", help="Add a user tag.")
@click.option("--remove", "removing", multiple=True, metavar="TAG", help="Remove a user tag.")
@_errors
def runs_tag(run_ref: str, adding: tuple[str, ...], removing: tuple[str, ...]) -> None:
    """Change RUN's user tags (removals first, then additions, in one step)."""
    if not adding and not removing:
        raise UsageError("runs tag: give --add TAG and/or --remove TAG")
    run, _ = _run_and_step(run_ref)
    run.replace_tags(removing, adding)
    click.echo(f"{run.pathspec}: {', '.join(sorted(run.user_tags)) or '(no user tags)'}")


def _live() -> Any:
    from pipetrail.cli.live import LiveRunDisplay
    from pipetrail.cli.render import console

    return LiveRunDisplay(console())


def _run_quietly(engine: Any, request: Any) -> Any:
    observer = engine.observer
    try:
        return engine.run(request)
    finally:
        if hasattr(observer, "stop"):
            observer.stop()


def _logs(run_ref: str, step: str | None, stream: str, attempt: int | None) -> None:
    from pipetrail.cli.render import print_logs

    run, in_ref = _run_and_step(run_ref)
    if in_ref is not None and step is not None and in_ref != step:
        raise UsageError(f"two steps given: {in_ref!r} in {run_ref!r} and {step!r}")
    step = step or in_ref
    if attempt is not None:
        attempts = sorted({t.attempt for s in run if step in (None, s.name) for t in s.tasks})
        if attempt not in attempts:
            raise UsageError(
                f"no attempt {attempt} of {run.pathspec}{'/' + step if step else ''}; attempts: "
                f"{', '.join(map(str, attempts)) or 'none'}"
            )
    if step is not None and step not in run:
        raise UsageError(
            f"run {run.pathspec} has no step {step!r}; steps: {', '.join(s.name for s in run)}"
        )
    print_logs(run, step, stream, attempt)


_stream_option = click.option(
    "--stream",
    type=click.Choice(["all", "stdout", "stderr"]),
    default="all",
    show_default=True,
    help="Which captured stream to print.",
)
_attempt_option = click.option(
    "--attempt", type=click.IntRange(min=0), default=None, help="Only this attempt."
)


@runs_group.command("logs")
@click.argument("run_ref", metavar="RUN")
@click.argument("step", required=False)
@_stream_option
@_attempt_option
@_errors
def runs_logs(run_ref: str, step: str | None, stream: str, attempt: int | None) -> None:
    """Captured stdout/stderr of RUN's tasks (or of STEP's)."""
    _logs(run_ref, step, stream, attempt)


@cli.command("logs")
@click.argument("run_ref", metavar="RUN")
@click.argument("step", required=False)
@_stream_option
@_attempt_option
@_errors
def logs_command(run_ref: str, step: str | None, stream: str, attempt: int | None) -> None:
    """Captured stdout/stderr of RUN's tasks (or of STEP's)."""
    _logs(run_ref, step, stream, attempt)


@cli.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option(
    "--token",
    default=None,
    envvar="PIPETRAIL_TOKEN",
    help="Access token; required when binding anything but 127.0.0.1 (env PIPETRAIL_TOKEN).",
)
@_errors
def ui_command(host: str, port: int, token: str | None) -> None:
    """Serve the REST API and the dashboard over the configured store."""
    import uvicorn

    from pipetrail.server import create_app
    from pipetrail.workspace import open_workspace

    app = create_app(open_workspace(), token=token, host=host)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    click.echo(f"pipetrail dashboard: http://{shown}:{port}/pipeline-runs   (API docs: /docs)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _workspace() -> Any:
    """The configured store, for commands that read or act on recorded runs.

    They never create an embedded store: with nothing recorded yet they say so.
    """
    from pipetrail.config import load_settings
    from pipetrail.workspace import open_workspace

    settings = load_settings()
    database = settings.sqlite_file
    if database is not None and not database.exists():
        raise NothingRecorded(
            f"no runs recorded yet: there is no store at {str(database)!r} (PIPETRAIL_HOME is "
            f"{str(settings.home)!r}); start one with: pipetrail run FILE"
        )
    return open_workspace(settings)


class NothingRecorded(UsageError):
    """The embedded store does not exist yet."""


def main() -> None:
    """Entry point of the ``pipetrail`` console script."""
    try:
        cli.main(prog_name="pipetrail")
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
