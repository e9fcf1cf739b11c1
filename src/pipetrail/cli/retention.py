"""``pipetrail runs delete`` and ``pipetrail gc``: delete recorded runs, then collect what no
remaining run or model version references."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from pipetrail.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    asked_runs,
    count,
    errors,
    workspace_or_nothing,
)
from pipetrail.errors import UsageError

__all__ = ["gc_command", "runs_delete"]

_ENDED = ["completed", "failed", "cancelled"]


def _workspace(asked: str | None) -> Any:
    """The configured store, closed when the command ends."""
    workspace = workspace_or_nothing(asked)
    click.get_current_context().call_on_close(workspace.close)
    return workspace


def _actor(workspace: Any, action: str) -> str:
    """The acting user; once the store has tokens, PIPETRAIL_TOKEN must be an admin's (deleting
    records is an admin action, on the CLI as over REST)."""
    from pipetrail.governance.identity import authorize

    return authorize(workspace.store, os.environ.get("PIPETRAIL_TOKEN"), "admin", action=action)


@click.command("delete")
@click.argument("run_refs", metavar="[RUN]...", nargs=-1)
@click.option(
    "--older-than",
    default=None,
    metavar="AGE",
    help="Select runs created more than AGE ago (90d, 12h, 2w) instead of naming them.",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(_ENDED),
    help="With --older-than: only runs that ended so (repeatable; default: any ended run).",
)
@click.option("--pipeline", default=None, help="With --older-than: only this pipeline's runs.")
@click.option(
    "--keep-last",
    type=count(low=0),
    default=0,
    help="With --older-than: never the newest N runs of each pipeline it selects from.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@click.option("--yes", "-y", is_flag=True, help="Delete the runs --older-than selects unasked.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome per run as JSON.")
@errors
def runs_delete(
    run_refs: tuple[str, ...],
    older_than: str | None,
    statuses: tuple[str, ...],
    pipeline: str | None,
    keep_last: int,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete runs with everything recorded under them (their artifacts go at the next gc).

    Each run is deleted on its own, or refused with the reason: a run that has not ended, one
    a registered model version comes from, one tagged 'keep'. Exits 1 if any was refused.
    """
    from datetime import UTC, datetime

    from pipetrail.governance.retention import delete_runs, select_runs

    rule = _rule(run_refs, older_than, statuses, pipeline, keep_last)
    workspace = _workspace(None if rule is not None else asked_runs(run_refs))
    actor = _actor(workspace, "deleting runs")
    if rule is None:
        ids = [_run_id(workspace, ref) for ref in run_refs]
        message = None
    else:
        ids = select_runs(workspace.store, rule, datetime.now(UTC))
        message = f"runs delete: {rule.describe()}"
        if not ids:
            click.echo(f"no runs match ({rule.describe()}); nothing to delete")
            sys.exit(EXIT_OK)
        if not (dry_run or yes):
            if not sys.stdin.isatty():
                raise UsageError(
                    f"runs delete: {len(ids)} runs match ({rule.describe()}); add --yes to "
                    "delete them, or --dry-run to list them"
                )
            click.confirm(f"Delete {len(ids)} runs ({rule.describe()})?", abort=True)
    report = delete_runs(workspace.store, ids, actor=actor, dry_run=dry_run, message=message)
    if as_json:
        click.echo(json.dumps(_report_json(report), indent=2))
    else:
        _print_report(report)
    sys.exit(EXIT_FAILED if report.refused else EXIT_OK)


def _rule(
    refs: tuple[str, ...],
    older_than: str | None,
    statuses: tuple[str, ...],
    pipeline: str | None,
    keep_last: int,
) -> Any:
    from pipetrail.core.status import RunStatus
    from pipetrail.dsl import parse_duration
    from pipetrail.errors import DefinitionError
    from pipetrail.governance.retention import RetentionRule

    filters = statuses or pipeline or keep_last
    if refs and (older_than or filters):
        raise UsageError("runs delete: give RUN ids or --older-than AGE with its filters, not both")
    if refs:
        return None
    if older_than is None:
        if filters:
            raise UsageError(
                "runs delete: --status, --pipeline and --keep-last go with --older-than"
            )
        raise UsageError(
            "runs delete: name a RUN, or select runs with --older-than AGE "
            "[--status failed] [--pipeline NAME]"
        )
    try:
        seconds = parse_duration(older_than, what="--older-than")
    except DefinitionError as exc:
        raise UsageError(str(exc)) from None
    if not seconds or seconds <= 0:
        raise UsageError(f"--older-than must be a positive duration, got {older_than!r}")
    return RetentionRule(seconds, pipeline, tuple(RunStatus(s) for s in statuses), keep_last)


def _run_id(workspace: Any, ref: str) -> int:
    from pipetrail.core.ids import parse_pathspec

    spec = parse_pathspec(ref)
    if spec.step is not None:
        raise UsageError(f"runs delete: {ref!r} names a step; give a run (id or PIPELINE/ID)")
    record = workspace.store.get_run(spec.run_id)
    if spec.pipeline is not None and spec.pipeline != record.pipeline:
        raise UsageError(
            f"run {spec.run_id} belongs to pipeline {record.pipeline!r}, not {spec.pipeline!r}"
        )
    return int(spec.run_id)


def _report_json(report: Any) -> dict[str, Any]:
    return {
        "dry_run": report.dry_run,
        "deleted": [
            {
                "id": o.facts.run_id,
                "pathspec": o.facts.pathspec,
                "status": o.facts.status,
                "cleared": o.cleared,
            }
            for o in report.deleted
        ],
        "refused": [
            {"id": o.facts.run_id, "pathspec": o.facts.pathspec, "reason": o.refused}
            for o in report.refused
        ],
    }


def _print_report(report: Any) -> None:
    verb = "would delete" if report.dry_run else "deleted"
    for outcome in report.outcomes:
        facts = outcome.facts
        if outcome.refused is not None:
            click.echo(f"refused {facts.pathspec}: {outcome.refused}")
            continue
        line = f"{verb} {facts.pathspec} ({facts.status})"
        if outcome.cleared:
            pointers = "; ".join(
                f"{name} of {', '.join(map(str, ids))}" for name, ids in outcome.cleared.items()
            )
            line += f"; {'would clear' if report.dry_run else 'cleared'} {pointers}"
        click.echo(line)
    done = len(report.deleted)
    summary = f"{done} run{'s' * (done != 1)} {'would be deleted' if report.dry_run else 'deleted'}"
    if report.refused:
        summary += f", {len(report.refused)} refused"
    if done and not report.dry_run:
        summary += "; their unreferenced artifacts are removed by: pipetrail gc"
    click.echo(summary)


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option(
    "--grace",
    default="1h",
    show_default=True,
    metavar="AGE",
    help="Keep unreferenced content younger than AGE: it may be a write whose link is not in yet.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@errors
def gc_command(dry_run: bool, grace: str, as_json: bool) -> None:
    """Remove artifacts, code snapshots and rows that no remaining run or model version uses.

    Works on the local folder and on object stores alike and reports the bytes freed.
    """
    from pipetrail.cli.render import format_bytes
    from pipetrail.dsl import parse_duration
    from pipetrail.errors import DefinitionError
    from pipetrail.governance.gc import collect_garbage

    try:
        grace_s = parse_duration(grace, what="--grace", zero_ok=True) or 0.0
    except DefinitionError as exc:
        raise UsageError(str(exc)) from None
    if grace_s < 0:
        raise UsageError(f"--grace must not be negative, got {grace!r}")
    workspace = _workspace(None)
    report = collect_garbage(
        workspace.store,
        workspace.cas,
        actor=_actor(workspace, "collecting garbage"),
        grace_s=grace_s,
        dry_run=dry_run,
    )
    if as_json:
        click.echo(json.dumps({**report.as_dict(), "keys": list(report.keys)}, indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{verb} {report.objects} unreferenced object{'s' * (report.objects != 1)} "
        f"({format_bytes(report.bytes)}) from {workspace.cas.url}"
    )
    if report.temporaries:
        click.echo(
            f"{verb} {report.temporaries} leftover temporary files "
            f"({format_bytes(report.temporary_bytes)})"
        )
    rows = report.rows
    click.echo(
        f"{verb} rows: {rows.artifacts} artifacts, {rows.environments} environments, "
        f"{rows.pipeline_versions} pipeline versions"
    )
    click.echo(
        f"kept {report.referenced} referenced objects and {report.young} unreferenced ones "
        f"younger than {grace} ({format_bytes(report.young_bytes)})"
    )
