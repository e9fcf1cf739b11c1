"""``pipetrail runs``: list, inspect, compare, retry, reproduce, tag and cancel recorded runs."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import click

from pipetrail.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    NothingRecorded,
    asked_runs,
    count,
    errors,
    pairs,
    run_and_step,
    since_time,
    workspace_or_nothing,
)
from pipetrail.cli.inspect import attempt_option, print_run_logs, stream_option
from pipetrail.cli.run import dask_executor, execute
from pipetrail.cli.tokens import acting
from pipetrail.errors import UsageError


@click.group("runs")
def runs_group() -> None:
    """List, inspect, compare, retry, reproduce, cancel and delete recorded runs."""


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
@click.option("--trigger", default=None, metavar="NAME", help="Only runs trigger NAME started.")
@click.option("--sla-missed", is_flag=True, help="Only runs that missed their SLA.")
@click.option("--limit", type=count(low=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def runs_list(
    pipeline: str | None,
    statuses: tuple[str, ...],
    tags: tuple[str, ...],
    since: str | None,
    user: str | None,
    filter_text: str | None,
    order_by: tuple[str, ...],
    trigger: str | None,
    sla_missed: bool,
    limit: int,
    as_json: bool,
) -> None:
    """Recorded runs of every pipeline and user, newest first (or --order-by)."""
    from pipetrail.core.status import RunStatus

    since_at = since_time(since)
    try:
        workspace = workspace_or_nothing()
    except NothingRecorded as exc:
        click.echo([] if as_json else str(exc).replace("no runs recorded yet: ", "No runs yet: "))
        sys.exit(EXIT_OK)
    from pipetrail.client import Run
    from pipetrail.storage.metadata.base import RunQuery

    query = RunQuery(
        pipeline=pipeline,
        statuses=tuple(RunStatus(s) for s in statuses),
        tags=tags + ((f"user:{user}",) if user else ()),
        since=since_at,
        limit=limit,
        filter=filter_text,
        order_by=order_by,
        trigger=trigger,
        sla_missed=sla_missed,
    )
    reader = workspace.reader()
    runs = [Run._of(record, reader) for record in workspace.store.list_runs(query)]
    from pipetrail.cli.render import print_run_list, run_summary_json

    if as_json:
        click.echo(json.dumps([run_summary_json(r) for r in runs], indent=2, default=str))
    else:
        print_run_list(runs)


@runs_group.command("show")
@click.argument("run_ref", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print everything recorded as JSON.")
@errors
def runs_show(run_ref: str, as_json: bool) -> None:
    """Everything recorded about RUN ('iris/42' or '42')."""
    from pipetrail.cli.render import print_run, run_to_json

    run, step = run_and_step(run_ref)
    if step is not None:
        raise UsageError(
            f"runs show takes a run ({run.pathspec}), not a step; for a step's output use: "
            f"pipetrail logs {run.pathspec} {step}"
        )
    if as_json:
        click.echo(json.dumps(run_to_json(run), indent=2, default=str))
    else:
        print_run(run)


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
        since=since_time(since),
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
@click.option("--executor", type=click.Choice(["process", "inline", "dask"]), default=None)
@click.option(
    "--dask-address", default=None, metavar="ADDR", help="Dask scheduler (implies --executor dask)."
)
@click.option("--max-parallel", type=count(low=1), default=None)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.option("--quiet", "-q", is_flag=True, help="No live display.")
@errors
def runs_retry(
    run_refs: tuple[str, ...],
    from_step: str | None,
    params: tuple[str, ...],
    dry_run: bool,
    statuses: tuple[str, ...],
    pipeline: str | None,
    since: str | None,
    executor: str | None,
    dask_address: str | None,
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

    overrides = pairs(params, "-p/--param")
    executor = dask_executor(executor, dask_address)
    workspace = workspace_or_nothing(asked_runs(run_refs))
    user = acting(workspace)
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
        planned.append((origin, dataclasses.replace(request, user=user), plan))
    if dry_run:
        if as_json:
            rows = [{"origin": o.pathspec, "plan": describe_plan(plan)} for o, _, plan in planned]
            click.echo(json.dumps(rows, indent=2))
        else:
            for origin, _, plan in planned:
                print_plan(origin.pathspec, plan)
        sys.exit(EXIT_OK)
    codes = [
        execute(
            workspace, request, executor, as_json=as_json, quiet=quiet, dask_address=dask_address
        )
        for _, request, _ in planned
    ]
    sys.exit(max(codes))


@runs_group.command("cancel")
@click.argument("run_refs", metavar="[RUN]...", nargs=-1)
@click.option("--all-running", is_flag=True, help="Cancel every waiting or running run.")
@click.option("--pipeline", default=None, help="With --all-running: only this pipeline's runs.")
@click.option("--reason", default=None, help="Recorded with the cancel.")
@click.option("--no-wait", is_flag=True, help="Ask the runners and return at once.")
@errors
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

    workspace = workspace_or_nothing(asked_runs(run_refs))
    user = acting(workspace)
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
            workspace.store.request_cancel(run.id, reason or "cancel requested", actor=user)
            console().print(f"{run.pathspec}: cancel requested")
        else:
            ended = cancel_run(workspace.store, run, reason=reason, actor=user)
            console().print(f"{ended.pathspec}: {ended.status.value}")


@runs_group.command("diff")
@click.argument("run_refs", metavar="RUN RUN [RUN]...", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@errors
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
    runs = [run_and_step(ref)[0] for ref in run_refs]
    comparison = compare(*runs)
    if as_json:
        click.echo(json.dumps(comparison.to_dict(), indent=2, default=str))
    else:
        console().print(render(comparison))


@runs_group.command("reproduce")
@click.argument("run_ref", metavar="RUN")
@click.option(
    "--use-working-tree", is_flag=True, help="Run the pipeline file as it is now, not as recorded."
)
@click.option("--executor", type=click.Choice(["process", "inline", "dask"]), default=None)
@click.option(
    "--dask-address", default=None, metavar="ADDR", help="Dask scheduler (implies --executor dask)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No live display.")
@errors
def runs_reproduce(
    run_ref: str,
    use_working_tree: bool,
    executor: str | None,
    dask_address: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Run RUN again from its stored code with its recorded parameters and variables.

    Then report, output by output, whether the content hashes match the original run's
    (deterministic or not), and whether the environment differs from the recorded one.
    """
    from pipetrail.cli.render import print_reproduction
    from pipetrail.runtime.control import reproduce_request, reproduction_report

    executor = dask_executor(executor, dask_address)
    run, step = run_and_step(run_ref)
    if step is not None:
        raise UsageError("runs reproduce takes a run, not a step")
    workspace = workspace_or_nothing()
    origin = workspace.store.get_run(run.id)
    request = reproduce_request(
        workspace.store,
        workspace.cas.get_bytes,
        origin,
        workdir=workspace.settings.home / "reproduce",
        use_working_tree=use_working_tree,
    )
    engine = workspace.engine(
        executor=executor,
        observer=None if (quiet or as_json) else _live(),
        dask_address=dask_address,
    )
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
@errors
def runs_tag(run_ref: str, adding: tuple[str, ...], removing: tuple[str, ...]) -> None:
    """Change RUN's user tags (removals first, then additions, in one step)."""
    if not adding and not removing:
        raise UsageError("runs tag: give --add TAG and/or --remove TAG")
    run, _ = run_and_step(run_ref)
    run.replace_tags(removing, adding, actor=acting(workspace_or_nothing()))
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


@runs_group.command("logs")
@click.argument("run_ref", metavar="RUN")
@click.argument("step", required=False)
@stream_option
@attempt_option
@errors
def runs_logs(run_ref: str, step: str | None, stream: str, attempt: int | None) -> None:
    """Captured stdout/stderr of RUN's tasks (or of STEP's)."""
    print_run_logs(run_ref, step, stream, attempt)


from pipetrail.cli.retention import runs_delete  # noqa: E402 - registered last, like a plugin

runs_group.add_command(runs_delete)
