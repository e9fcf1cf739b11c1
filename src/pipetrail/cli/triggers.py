"""``pipetrail triggers``: create, inspect, pause, fire, apply and backfill triggers."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from pipetrail.cli.common import (
    EXIT_OK,
    NothingRecorded,
    count,
    errors,
    pairs,
    workspace_or_nothing,
)
from pipetrail.errors import NotFoundError

_CREATE_HINT = "pipetrail triggers create NAME FILE --cron '0 2 * * *'"


@click.group("triggers")
def triggers_group() -> None:
    """Run pipelines on a schedule, after other pipelines, or when called over REST.

    A running scheduler (`pipetrail scheduler`, or `pipetrail ui`) fires them.
    """


def _utc(at: datetime | None) -> str | None:
    return at.astimezone(UTC).isoformat() if at is not None else None


def _shown(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if at is not None else "-"


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def _workspace(name: str | None = None) -> Any:
    """The store of recorded triggers; none yet is an unknown trigger (or an empty listing)."""
    try:
        return workspace_or_nothing()
    except NothingRecorded:
        if name is None:
            return None
        raise NotFoundError(
            f"no trigger named {name!r}: there are no triggers yet; create one with: "
            + _CREATE_HINT
        ) from None


def _service(workspace: Any) -> Any:
    from pipetrail.scheduling.service import TriggerService

    return TriggerService(workspace.store)


def _last_run_json(run: Any) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "id": run.id,
        "pathspec": run.pathspec,
        "status": run.status.value,
        "created_at": _utc(run.created_at),
        "scheduled_at": _utc(run.cause.scheduled_at) if run.cause is not None else None,
    }


def trigger_json(overview: Any) -> dict[str, Any]:
    """A trigger as ``triggers list --json`` prints it (``show`` adds ticks, alerts, upcoming)."""
    from pipetrail.scheduling.spec import to_fields

    record = overview.record
    d = record.definition
    return {
        "name": record.name,
        "kind": d.kind,
        "pipeline": d.pipeline_name,
        "pipeline_file": d.pipeline_file,
        "schedule": overview.schedule,
        "paused": record.paused,
        "next_at": _utc(overview.next_at),
        "last_run": _last_run_json(overview.last_run),
        "sla_missed": overview.sla_missed,
        "created_at": _utc(record.created_at),
        "updated_at": _utc(record.updated_at),
        "definition": to_fields(d),
    }


def trigger_detail_json(overview: Any) -> dict[str, Any]:
    from pipetrail.schedules import SentAlert, Tick

    return {
        **trigger_json(overview),
        "upcoming": [_utc(at) for at in overview.upcoming],
        "ticks": [Tick.of(t, overview).to_dict() for t in overview.ticks],
        "alerts": [SentAlert.of(a).to_dict() for a in overview.alerts],
    }


# -- create ------------------------------------------------------------------------------------


@triggers_group.command("create")
@click.argument("name")
@click.argument("target", metavar="FILE[:PIPELINE]")
@click.option("--cron", default=None, metavar="EXPR", help="Five cron fields: '0 2 * * *'.")
@click.option("--timezone", default=None, metavar="TZ", help="The cron's time zone (default UTC).")
@click.option("--every", default=None, metavar="DURATION", help="An interval: 90s, 10m, 2h, 1d.")
@click.option("--start", default=None, metavar="ISO", help="With --every: the first tick.")
@click.option("--end", default=None, metavar="ISO", help="With --every: no ticks after this.")
@click.option("--once-at", default=None, metavar="ISO", help="Run exactly once, at this time.")
@click.option("--always-on", is_flag=True, help="A new run as soon as the previous one ends.")
@click.option("--after", default=None, metavar="PIPELINE", help="Run when PIPELINE's run ends.")
@click.option(
    "--on",
    "after_on",
    type=click.Choice(["completed", "failed", "any"]),
    default=None,
    help="With --after: which endings count (default completed).",
)
@click.option("--api", is_flag=True, help="Run only when called over REST (or `triggers run`).")
@click.option(
    "-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="A parameter (repeatable)."
)
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="A runtime variable.")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="A user tag for its runs.")
@click.option("--sla", default=None, metavar="DURATION", help="Due this long after its tick.")
@click.option("--timeout", default=None, metavar="DURATION", help="Run timeout: 90s, 10m, 2h.")
@click.option(
    "--on-timeout",
    type=click.Choice(["failed", "cancelled", "warning"]),
    default=None,
    help="What a run timeout does.",
)
@click.option("--max-concurrent", type=count(low=1), default=None, help="Most of its runs at once.")
@click.option(
    "--overlap",
    type=click.Choice(["wait", "skip"]),
    default=None,
    help="A tick at --max-concurrent: wait for a slot (default) or skip.",
)
@click.option(
    "--catchup",
    type=click.Choice(["latest", "all", "none"]),
    default=None,
    help="Ticks missed while no scheduler ran: the latest (default), all, or none.",
)
@click.option("--paused", is_flag=True, help="Create it paused (resume it to start).")
@click.option("--json", "as_json", is_flag=True, help="Print the new trigger as JSON.")
@errors
def triggers_create(
    name: str,
    target: str,
    cron: str | None,
    timezone: str | None,
    every: str | None,
    start: str | None,
    end: str | None,
    once_at: str | None,
    always_on: bool,
    after: str | None,
    after_on: str | None,
    api: bool,
    params: tuple[str, ...],
    variables: tuple[str, ...],
    tags: tuple[str, ...],
    sla: str | None,
    timeout: str | None,
    on_timeout: str | None,
    max_concurrent: int | None,
    overlap: str | None,
    catchup: str | None,
    paused: bool,
    as_json: bool,
) -> None:
    """Create trigger NAME running the pipeline in FILE; give exactly one of --cron, --every,
    --once-at, --always-on, --after and --api.

    \b
    pipetrail triggers create nightly flow.py --cron '0 2 * * *' --timezone Europe/Paris
    pipetrail triggers create hourly flow.py:etl --every 1h -p lr=0.1 --sla 30m
    pipetrail triggers create report report.py --after etl --on completed
    """
    from pipetrail.schedules import checked_definition

    fields: dict[str, Any] = {
        "name": name,
        "pipeline": target,
        "cron": cron,
        "every": every,
        "once_at": once_at,
        "always_on": always_on or None,
        "after": after,
        "on": after_on,
        "api": api or None,
        "timezone": timezone,
        "start": start,
        "end": end,
        "params": pairs(params, "-p/--param") or None,
        "variables": pairs(variables, "--var") or None,
        "tags": list(tags) or None,
        "sla": sla,
        "timeout": timeout,
        "on_timeout": on_timeout,
        "max_concurrent": max_concurrent,
        "overlap": overlap,
        "catchup": catchup,
    }
    # Everything is checked before the store is opened: bad input writes nothing.
    definition = checked_definition(
        {k: v for k, v in fields.items() if v is not None}, base_dir=Path.cwd(), from_text=True
    )
    from pipetrail.workspace import open_workspace

    workspace = open_workspace()
    service = _service(workspace)
    record = service.create(definition)
    if paused:
        record = service.pause(record.name)
    overview = service.overview(record)
    if as_json:
        _echo_json(trigger_json(overview))
        return
    state = "paused" if record.paused else f"next run {_shown(overview.next_at)}"
    if not record.paused and overview.next_at is None:
        state = "active"
    click.echo(f"trigger {record.name!r} created: {overview.schedule}; {state}")
    if not record.paused and not service.scheduler_running():
        click.echo(
            "no scheduler is running: start one with `pipetrail scheduler` (or `pipetrail ui`)"
        )


# -- list, show, upcoming ----------------------------------------------------------------------


@triggers_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def triggers_list(as_json: bool) -> None:
    """Every trigger: kind, schedule, next run, last run and its status, SLA misses, paused."""
    workspace = _workspace()
    overviews = []
    if workspace is not None:
        service = _service(workspace)
        overviews = [service.overview(r) for r in service.all()]
    if as_json:
        _echo_json([trigger_json(o) for o in overviews])
        return
    from rich.table import Table

    from pipetrail.cli.render import STATUS_STYLES, console

    out = console()
    if not overviews:
        out.print(f"No triggers yet. Create one with: {_CREATE_HINT}")
        return
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "KIND", "SCHEDULE", "NEXT RUN", "LAST RUN", "STATUS", "SLA MISSED"):
        table.add_column(column)
    table.add_column("PAUSED")
    for o in overviews:
        last = o.last_run
        status = last.status.value if last is not None else "-"
        table.add_row(
            o.record.name,
            o.record.definition.kind,
            o.schedule,
            _shown(o.next_at),
            last.pathspec if last is not None else "-",
            f"[{STATUS_STYLES.get(status, '')}]{status}[/]" if last is not None else "-",
            str(o.sla_missed) if o.sla_missed else "-",
            "paused" if o.record.paused else "-",
        )
    out.print(table)


@triggers_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def triggers_show(name: str, as_json: bool) -> None:
    """Trigger NAME: its definition, state, next fire times, recent ticks and alerts sent."""
    service = _service(_workspace(name))
    overview = service.overview(service.get(name), detail=True)
    if as_json:
        _echo_json(trigger_detail_json(overview))
        return
    _print_detail(overview)


def _print_detail(overview: Any) -> None:
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    from pipetrail.cli.render import STATUS_STYLES, console
    from pipetrail.schedules import SentAlert, Tick
    from pipetrail.scheduling.spec import to_fields

    out = console()
    record = overview.record
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold")
    header.add_column()
    header.add_row("schedule", overview.schedule)
    header.add_row("state", "paused" if record.paused else "active")
    header.add_row("next run", _shown(overview.next_at))
    last = overview.last_run
    if last is not None:
        header.add_row("last run", f"{last.pathspec} {last.status.value}")
    header.add_row("SLA missed", str(overview.sla_missed))
    for key, value in to_fields(record.definition).items():
        if key != "name":
            text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
            header.add_row(key, text)
    header.add_row("created", _shown(record.created_at))
    out.print(Panel(header, title=f"[bold]trigger {record.name}[/]", expand=False))
    if overview.upcoming:
        out.print("[bold]upcoming[/]: " + ", ".join(_shown(at) for at in overview.upcoming))
    ticks = [Tick.of(t, overview) for t in overview.ticks]
    if ticks:
        table = Table(title="ticks", box=None, header_style="bold", title_justify="left")
        for column in ("SCHEDULED", "DECISION", "RUN", "STATUS", "NOTE"):
            table.add_column(column)
        for tick in ticks:
            note = "; ".join(x for x in (tick.skip_reason, tick.note) if x)
            status = tick.status or "-"
            table.add_row(
                _shown(tick.scheduled_at),
                tick.decision,
                tick.run or "-",
                Text(status, style=STATUS_STYLES.get(status, "")),
                Text(note),
            )
        out.print(table)
    else:
        out.print("no ticks yet")
    alerts = [SentAlert.of(a) for a in overview.alerts]
    if alerts:
        table = Table(title="alerts", box=None, header_style="bold", title_justify="left")
        for column in ("RAISED", "EVENT", "NOTIFIER", "RUN", "STATE", "ATTEMPTS", "WHY NOT"):
            table.add_column(column)
        for alert in alerts:
            table.add_row(
                _shown(alert.created_at),
                alert.event,
                alert.notifier,
                alert.run or "-",
                alert.state,
                str(alert.attempts),
                alert.last_error or "",
            )
        out.print(table)


@triggers_group.command("upcoming")
@click.option("--limit", type=count(low=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def triggers_upcoming(limit: int, as_json: bool) -> None:
    """The next fire times of all active triggers, soonest first."""
    workspace = _workspace()
    upcoming = [] if workspace is None else _service(workspace).upcoming(limit)
    rows = [
        {
            "at": _utc(u.at),
            "trigger": u.trigger.name,
            "kind": u.trigger.definition.kind,
            "pipeline": u.trigger.definition.pipeline_name,
        }
        for u in upcoming
    ]
    if as_json:
        _echo_json(rows)
        return
    from rich.table import Table

    from pipetrail.cli.render import console

    if not rows:
        console().print("nothing upcoming: no active cron, every or once-at triggers")
        return
    table = Table(box=None, header_style="bold")
    for column in ("AT", "TRIGGER", "KIND", "PIPELINE"):
        table.add_column(column)
    for u in upcoming:
        d = u.trigger.definition
        table.add_row(_shown(u.at), u.trigger.name, d.kind, d.pipeline_name or "-")
    console().print(table)


# -- pause, resume, delete ---------------------------------------------------------------------


@triggers_group.command("pause")
@click.argument("name")
@errors
def triggers_pause(name: str) -> None:
    """Pause trigger NAME: it fires nothing until resumed (its runs go on)."""
    _service(_workspace(name)).pause(name)
    click.echo(f"trigger {name!r} paused")


@triggers_group.command("resume")
@click.argument("name")
@errors
def triggers_resume(name: str) -> None:
    """Resume trigger NAME; the ticks it slept through are not caught up."""
    service = _service(_workspace(name))
    record = service.resume(name)
    nxt = service.next_at(record)
    click.echo(f"trigger {name!r} resumed" + (f"; next run {_shown(nxt)}" if nxt else ""))


@triggers_group.command("delete")
@click.argument("name")
@errors
def triggers_delete(name: str) -> None:
    """Delete trigger NAME and its ticks (the runs it started stay recorded)."""
    _service(_workspace(name)).delete(name)
    click.echo(f"trigger {name!r} deleted")


# -- run, apply, backfill ----------------------------------------------------------------------


@triggers_group.command("run")
@click.argument("name")
@click.option(
    "-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="Change a parameter."
)
@click.option(
    "--var", "variables", multiple=True, metavar="NAME=VALUE", help="Change a runtime variable."
)
@click.option("--executor", type=click.Choice(["process", "inline"]), default=None)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the finished run as JSON; no live display."
)
@click.option("--quiet", "-q", is_flag=True, help="No live display; print only the outcome.")
@errors
def triggers_run(
    name: str,
    params: tuple[str, ...],
    variables: tuple[str, ...],
    executor: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Fire trigger NAME once, now, and run it here with the live display (as `pipetrail run`)."""
    from pipetrail.cli.run import execute
    from pipetrail.runtime.loader import load_pipeline_file
    from pipetrail.scheduling.fire import fire_now

    overrides = pairs(params, "-p/--param")
    runtime_vars = pairs(variables, "--var")
    workspace = _workspace(name)
    record = _service(workspace).get(name)
    d = record.definition
    typed: dict[str, Any] = {}
    if overrides:
        # Command-line text takes the parameters' declared types before anything is claimed.
        pipeline = load_pipeline_file(Path(d.pipeline_file), d.pipeline_name)
        resolved = pipeline.resolve_params(overrides, from_text=True)
        typed = {k: resolved[k] for k in overrides}
    run, request = fire_now(
        workspace.store,
        workspace.engine(executor=executor),
        record,
        params=typed,
        variables=runtime_vars,
    )
    sys.exit(execute(workspace, request, executor, as_json=as_json, quiet=quiet, prepared=run))


@triggers_group.command("apply")
@click.argument("file", metavar="FILE.yaml", type=click.Path(path_type=Path))
@click.option("--prune", is_flag=True, help="Delete the triggers that are not in the file.")
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@errors
def triggers_apply(file: Path, prune: bool, dry_run: bool, as_json: bool) -> None:
    """Make the store's triggers match FILE.yaml (triggers as code); applying twice changes nothing.

    \b
    triggers:
      - name: nightly
        pipeline: flow.py:train      # relative to the YAML file's folder
        cron: "0 2 * * *"
        timezone: Europe/Paris
        params: {lr: 0.1}
        sla: 30m
    """
    from pipetrail.schedules import load_trigger_file
    from pipetrail.workspace import open_workspace

    definitions = load_trigger_file(file)  # every trigger checked before the store is opened
    report = _service(open_workspace()).apply(definitions, prune=prune, dry_run=dry_run)
    if as_json:
        _echo_json(
            {
                "file": str(file),
                "dry_run": dry_run,
                "created": report.created,
                "updated": report.updated,
                "unchanged": report.unchanged,
                "missing": report.missing,
                "deleted": report.deleted,
            }
        )
        return
    would = "would be " if dry_run else ""
    lines = [
        (f"{would}created", report.created),
        (f"{would}updated", report.updated),
        ("unchanged", report.unchanged),
        ("deleted", report.deleted),
    ]
    for label, names in lines:
        if names:
            click.echo(f"{label}: {', '.join(names)}")
    kept = [n for n in report.missing if n not in report.deleted]
    if kept:
        fate = "would be deleted" if prune and dry_run else "kept; --prune deletes them"
        click.echo(f"not in {file} ({fate}): {', '.join(kept)}")
    if not (report.changed or report.unchanged or kept):
        click.echo(f"{file} declares no triggers and the store has none: nothing to do")


@triggers_group.command("backfill")
@click.argument("name")
@click.option("--start", required=True, metavar="ISO", help="The first tick to fill.")
@click.option("--end", required=True, metavar="ISO", help="The last tick to fill.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def triggers_backfill(name: str, start: str, end: str, as_json: bool) -> None:
    """Queue one run for every tick of NAME between --start and --end that has none.

    A running scheduler starts them, oldest first.
    """
    from pipetrail.scheduling.spec import parse_time

    start_at, end_at = parse_time(start, "--start"), parse_time(end, "--end")
    service = _service(_workspace(name))
    queued = service.backfill(name, start_at, end_at)
    running = service.scheduler_running()
    if as_json:
        _echo_json(
            {"trigger": name, "queued": [_utc(t) for t in queued], "scheduler_running": running}
        )
        sys.exit(EXIT_OK)
    if queued:
        click.echo(f"queued {len(queued)} run(s) of {name!r}: {', '.join(map(_shown, queued))}")
    else:
        click.echo(
            f"nothing to queue: every tick of {name!r} in that window has a run or a decision"
        )
    if running:
        click.echo("a scheduler is running: it starts them, oldest first")
    elif queued:
        click.echo(
            "no scheduler is running: start one with `pipetrail scheduler` (or `pipetrail ui`) "
            "to run them"
        )
