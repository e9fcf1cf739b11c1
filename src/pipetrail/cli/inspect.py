"""``pipetrail logs`` and ``pipetrail lineage``: what a run printed and what its outputs came from."""

from __future__ import annotations

import json
import sys
import time

import click

from pipetrail.cli.common import (
    EXIT_INTERRUPTED,
    count,
    errors,
    run_and_step,
    workspace_or_nothing,
)
from pipetrail.errors import UsageError


@click.command("lineage")
@click.argument("target", metavar="RUN|ARTIFACT_HASH")
@click.option(
    "--direction",
    type=click.Choice(["up", "down"]),
    default="up",
    show_default=True,
    help="up: what made it (back to input files); down: everything that used it.",
)
@click.option("--depth", type=count(low=0), default=None, help="Most task hops.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["tree", "json", "dot", "mermaid"]),
    default="tree",
    show_default=True,
)
@errors
def lineage_command(target: str, direction: str, depth: int | None, fmt: str) -> None:
    """The graph of artifacts and the tasks that produced and consumed them, across runs.

    TARGET is a run ('iris/42') or an artifact content hash (8 characters or more).
    """
    from pipetrail.cli.render import console
    from pipetrail.client.lineage_graph import lineage

    workspace = workspace_or_nothing(f"run or artifact {target!r}")
    graph = lineage(target, direction=direction, depth=depth, reader=workspace.reader())
    if fmt == "json":
        click.echo(json.dumps(graph.to_dict(), indent=2, default=str))
    elif fmt == "dot":
        click.echo(graph.to_dot())
    elif fmt == "mermaid":
        click.echo(graph.to_mermaid())
    else:
        console().print(graph.render_tree())


def print_run_logs(run_ref: str, step: str | None, stream: str, attempt: int | None) -> None:
    from pipetrail.cli.render import print_logs

    run, in_ref = run_and_step(run_ref)
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


stream_option = click.option(
    "--stream",
    type=click.Choice(["all", "stdout", "stderr"]),
    default="all",
    show_default=True,
    help="Which captured stream to print.",
)
attempt_option = click.option(
    "--attempt", type=count(low=0), default=None, help="Only this attempt."
)


@click.command("logs")
@click.argument("run_ref", metavar="RUN")
@click.argument("step", required=False)
@stream_option
@attempt_option
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Keep printing output as it is written, until the run ends.",
)
@errors
def logs_command(
    run_ref: str, step: str | None, stream: str, attempt: int | None, follow: bool
) -> None:
    """Captured stdout/stderr of RUN's tasks (or of STEP's), also while they run."""
    if not follow:
        print_run_logs(run_ref, step, stream, attempt)
        return
    run, in_ref = run_and_step(run_ref)
    if in_ref is not None and step is not None and in_ref != step:
        raise UsageError(f"two steps given: {in_ref!r} in {run_ref!r} and {step!r}")
    step = step or in_ref
    if step is not None and step not in run:
        raise UsageError(
            f"run {run.pathspec} has no step {step!r}; steps: {', '.join(s.name for s in run)}"
        )
    try:
        follow_logs(run.id, step, stream, attempt)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


def follow_logs(
    run_id: int, step: str | None, stream: str, attempt: int | None, *, poll_s: float = 0.5
) -> None:
    """Print new output of the run's tasks as the store receives it, until the run has ended.

    Each task's output is read from where the last read ended (its streams' byte offsets),
    so nothing is printed twice, and a task that starts later (a retry, a foreach item) is
    picked up when it appears.
    """
    from pipetrail.core.status import RUN_TERMINAL

    store = workspace_or_nothing(f"run {run_id}").store
    seen: dict[int, dict[str, int]] = {}
    heading: tuple[int, str] | None = None
    while True:
        record = store.get_run(run_id)
        ended = record.status in RUN_TERMINAL
        for task in store.tasks(run_id):
            if step is not None and task.step != step:
                continue
            if attempt is not None and task.attempt != attempt:
                continue
            after = seen.setdefault(task.id, {})
            for chunk in store.log_chunks(task.id, after):
                after[chunk.stream] = chunk.offset + chunk.size
                if stream not in ("all", chunk.stream):
                    continue
                if heading != (task.id, chunk.stream):
                    heading = (task.id, chunk.stream)
                    # The same heading as without --follow.
                    where = (
                        f"{record.pathspec}/{task.step}/{task.task_index} attempt {task.attempt}"
                    )
                    click.secho(f"── {where} {chunk.stream} ──", bold=True)
                click.echo(chunk.text, nl=False)
        sys.stdout.flush()
        if ended:  # read once more after the end: what the last drain brought is printed
            return
        time.sleep(poll_s)
