"""Rich rendering of runs for the terminal, and the JSON shapes ``--json`` prints."""

from __future__ import annotations

import functools
import sys
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from pipetrail.client import Artifact, Run
from pipetrail.core.cost import RunCost, user_metrics_first

__all__ = [
    "STATUS_STYLES",
    "console",
    "format_bytes",
    "format_duration",
    "print_logs",
    "print_plan",
    "print_reproduction",
    "print_cost",
    "print_run",
    "print_run_list",
    "print_run_outcome",
    "run_summary_json",
    "run_to_json",
]

STATUS_STYLES = {
    "initial": "dim",
    "queued": "cyan",
    "running": "bold yellow",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "magenta",
    "upstream_failed": "red",
    "condition_failed": "dim",
}


@functools.cache
def console() -> Console:
    # Piped output (CI logs, files) gets wide lines instead of 80-column wrapping.
    wide = None if sys.stdout.isatty() else 200
    return Console(highlight=False, width=wide)


def _status(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def format_bytes(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def _time(at: datetime | None) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def print_run_list(runs: list[Run]) -> None:
    out = console()
    if not runs:
        out.print("No runs match. Start one with: pipetrail run FILE")
        return
    table = Table(box=None, header_style="bold")
    for column in ("RUN", "STATUS", "CREATED", "DURATION", "TRIGGER", "USER", "TAGS"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            run.pathspec,
            _status(run.status),
            _time(run.created_at),
            format_duration(run.duration),
            str(run.trigger),
            run.user,
            ", ".join(sorted(run.user_tags)),
        )
    out.print(table)


def print_run(run: Run) -> None:
    """Everything recorded about a run, readable in one screen or a few."""
    out = console()
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold")
    header.add_column()
    header.add_row("run", run.pathspec)
    header.add_row("status", _status(run.status))
    header.add_row("pipeline", f"{run.pipeline_name} (version {run.version})")
    header.add_row("created", _time(run.created_at))
    header.add_row("started", _time(run.started_at))
    header.add_row("finished", _time(run.finished_at))
    header.add_row("duration", format_duration(run.duration))
    header.add_row("by", f"{run.user}@{run.host} via {run.trigger}")
    cause = run.trigger
    if cause.name is not None:
        line = f"{cause.name} ({cause.kind}), tick {_time(cause.scheduled_at)}"
        if cause.upstream:
            line += f", after {cause.upstream}"
        header.add_row("trigger", line)
    sla = run.sla
    if sla is not None:
        state = {"missed": "red", "met": "green"}.get(sla["state"], "yellow")
        header.add_row("SLA", Text(f"{sla['state']}, due {sla['due_at']}", style=state))
    if run.origin_pathspec:
        header.add_row("origin", run.origin_pathspec)
    if run.error:
        header.add_row("error", Text(run.error, style="red"))
    git = run.git
    if git:
        dirty = (
            " (dirty, diff " + str(git.get("diff_hash", ""))[:12] + ")" if git.get("dirty") else ""
        )
        header.add_row("git", f"{str(git.get('commit', ''))[:12]} on {git.get('branch')}{dirty}")
    env = run.environment
    if env:
        gpus = env.get("gpus") or []
        gpu = f", {len(gpus)} GPU(s)" if gpus else ""
        header.add_row(
            "environment",
            f"Python {env.get('python_version')} on {env.get('platform')}, "
            f"{len(env.get('packages', []))} packages{gpu}",
        )
    code = run.code
    if code is not None:
        header.add_row(
            "code",
            ", ".join(sorted(code))
            + f" (snapshot {run.record.code_key[:12] if run.record.code_key else ''})",
        )
    header.add_row("user tags", ", ".join(sorted(run.user_tags)) or "-")
    header.add_row("system tags", ", ".join(sorted(run.system_tags)))
    out.print(Panel(header, title=f"[bold]{run.pathspec}[/]", expand=False))

    if run.params:
        params = Table(title="parameters", box=None, header_style="bold", title_justify="left")
        for column in ("NAME", "TYPE", "VALUE"):
            params.add_column(column)
        types = run.param_types
        for name, value in run.params.items():
            params.add_row(name, types.get(name, ""), repr(value))
        out.print(params)
    if run.variables:
        variables = Table(title="variables", box=None, header_style="bold", title_justify="left")
        variables.add_column("KEY")
        variables.add_column("VALUE")
        for key, value in run.variables.items():
            variables.add_row(key, value)
        out.print(variables)

    steps = Table(title="steps", box=None, header_style="bold", title_justify="left")
    for column in ("STEP", "ATTEMPT", "STATUS", "DURATION", "CPU", "PEAK MEM", "RAN ON", "NOTE"):
        steps.add_column(column)
    for step in run:
        for task in step.tasks:
            note = str(task.exception or "")
            if task.record.failed_upstream:
                note = f"upstream {task.record.failed_upstream!r} failed"
            cpu = task.record.cpu_time_s
            steps.add_row(
                step.name,
                str(task.attempt),
                _status(task.status),
                format_duration(task.duration),
                "-" if cpu is None else f"{cpu:.2f} s",
                format_bytes(task.record.peak_memory_bytes),
                _ran_on(task.record.host, task.record.worker),
                Text(note, style="red") if note else "",
            )
    out.print(steps)
    print_cost(run.cost)

    metrics = run.metrics
    if metrics:
        table = Table(title="metrics (latest)", box=None, header_style="bold", title_justify="left")
        table.add_column("NAME")
        table.add_column("VALUE", justify="right")
        # The user's metrics first; the system samples (CPU %, memory, GPU) after them.
        for name, value in user_metrics_first(metrics).items():
            if name.startswith("system/"):
                shown = format_bytes(int(value)) if name.endswith("_bytes") else f"{value:.1f}"
                table.add_row(Text(name, style="dim"), shown)
            else:
                table.add_row(name, f"{value:.6g}")
        out.print(table)

    rows = [
        (step.name, direction, artifact)
        for step in run
        for task in step.tasks
        for direction, artifacts in (("out", task.outputs), ("in", task.inputs))
        for artifact in artifacts.all()
    ]
    if rows:
        table = Table(
            title="artifacts and inputs", box=None, header_style="bold", title_justify="left"
        )
        for column in ("STEP", "DIR", "NAME", "KIND", "TYPE", "SIZE", "HASH"):
            table.add_column(column)
        for step_name, direction, artifact in rows:
            table.add_row(
                step_name,
                direction,
                artifact.name,
                artifact.kind,
                artifact.type,
                format_bytes(artifact.size),
                artifact.hash[:12],
            )
        out.print(table)
    acted = [e for e in run.events if e.actor]
    if acted:
        table = Table(title="actions", box=None, header_style="bold", title_justify="left")
        for column in ("WHEN", "WHO", "EVENT", "NOTE"):
            table.add_column(column)
        for e in acted:
            table.add_row(_time(e.at), e.actor, e.kind, e.message or "")
        out.print(table)
    failed = [s for s in run if s.task is not None and s.task.status == "failed"]
    for step in failed:
        last = step.task
        if last is not None and last.traceback:
            out.print(
                Panel(
                    Text(last.traceback.rstrip()), title=f"[red]{step.name} failed[/]", expand=False
                )
            )


def _ran_on(host: str | None, worker: str | None) -> str:
    """Where a task ran: its host, and the executor's worker when there is one (Dask)."""
    if worker:
        return f"{host} ({worker})" if host else worker
    return host or "-"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def print_cost(cost: RunCost) -> None:
    """The run's cost section: each step's wall time, CPU, peak memory and GPU seconds."""
    if not cost.steps:
        return
    out = console()
    gpu = cost.gpu_time_s is not None
    measure = "GPU" if cost.costliest_by == "gpu_time_s" else "CPU"
    table = Table(
        title=f"cost (share of {measure} seconds)",
        box=None,
        header_style="bold",
        title_justify="left",
    )
    columns = ["STEP", "WALL", "TASK TIME", "CPU", "PEAK MEM"]
    columns += ["GPU", "GPU MEM"] if gpu else []
    columns += ["SHARE", ""]
    for column in columns:
        table.add_column(column, justify="left" if column in ("STEP", "") else "right")
    for step in cost.steps:
        marks = [
            mark
            for mark, on in (
                ("slowest", step.step == cost.slowest_step),
                ("costliest", step.step == cost.costliest_step),
            )
            if on
        ]
        if step.reused:
            marks.append(f"{step.reused} reused")
        row: list[str | Text] = [
            step.step,
            format_duration(step.wall_time_s),
            format_duration(step.task_time_s),
            _seconds(step.cpu_time_s),
            format_bytes(step.peak_memory_bytes),
        ]
        if gpu:
            row += [_seconds(step.gpu_time_s), format_bytes(step.gpu_peak_memory_bytes)]
        row += [f"{step.share:.0%}", Text(", ".join(marks), style="yellow")]
        table.add_row(*row)
    total: list[str | Text] = [
        Text("total", style="bold"),
        format_duration(cost.wall_time_s),
        format_duration(cost.task_time_s),
        _seconds(cost.cpu_time_s),
        format_bytes(cost.peak_memory_bytes),
    ]
    if gpu:
        total += [_seconds(cost.gpu_time_s), format_bytes(cost.gpu_peak_memory_bytes)]
    total += ["100%" if any(s.share for s in cost.steps) else "-", ""]
    table.add_row(*total)
    out.print(table)


def print_run_outcome(run: Run) -> None:
    """The end of ``pipetrail run``: the outcome, what failed and why, and where to look next."""
    out = console()
    style = "green" if run.successful else "red"
    out.print(
        f"[bold]{run.pathspec}[/] [{style}]{run.status}[/] in {format_duration(run.duration)}"
    )
    for step in run:
        task = step.task
        if task is None or task.status != "failed":
            continue
        out.print(f"[red]step {step.name!r} failed[/] (attempt {task.attempt}): {task.exception}")
        if task.traceback:
            lines = task.traceback.rstrip().splitlines()
            shown = lines[-12:]
            if len(lines) > len(shown):
                shown = ["  …", *shown]
            out.print(Text("\n".join(shown), style="dim"))
        out.print(f"  full logs: pipetrail logs {run.pathspec} {step.name}")
    skipped = [s.name for s in run if s.status == "upstream_failed"]
    if skipped:
        out.print(f"not run because an upstream step failed: {', '.join(skipped)}")
    out.print(f"details:   pipetrail runs show {run.pathspec}")
    out.print(f"logs:      pipetrail logs {run.pathspec} [STEP]")


def print_plan(origin: str, plan: list[Any]) -> None:
    """The plan of ``runs retry --dry-run``: each step reused or re-run, and why."""
    out = console()
    table = Table(title=f"retry of {origin}", title_justify="left", box=None, header_style="bold")
    for column in ("STEP", "ACTION", "WHY"):
        table.add_column(column)
    for step in plan:
        style = "green" if step.action == "reuse" else "yellow"
        table.add_row(step.step, Text(step.action, style=style), step.reason)
    out.print(table)


def print_reproduction(report: dict[str, Any]) -> None:
    """The report of ``runs reproduce``: each output identical or not, and environment changes."""
    out = console()
    verdict = "deterministic" if report["deterministic"] else "not deterministic"
    out.print(
        f"[bold]{report['reproduction']}[/] reproduces {report['origin']}: "
        f"{report['status']}, {verdict}"
    )
    table = Table(box=None, header_style="bold")
    for column in ("STEP", "TASK", "OUTPUT", "RESULT", "ORIGIN", "NOW"):
        table.add_column(column)
    styles = {"identical": "green", "differs": "yellow", "missing": "red", "new": "cyan"}
    for row in report["outputs"]:
        table.add_row(
            row["step"],
            str(row["task"]),
            row["output"],
            Text(row["result"], style=styles.get(row["result"], "")),
            (row["origin_hash"] or "-")[:12],
            (row["new_hash"] or "-")[:12],
        )
    out.print(table)
    env = report["environment"]
    if env["same"]:
        out.print("environment: identical to the recorded one")
        return
    out.print("[yellow]environment differs from the recorded one[/]")
    packages = env.get("packages", {})
    for kind in ("added", "removed", "changed"):
        for item in packages.get(kind, []):
            out.print(f"  {kind}: {' '.join(map(str, item))}")


def print_logs(run: Run, step_name: str | None, stream: str, attempt: int | None) -> None:
    out = console()
    printed = False
    for step in run:
        if step_name is not None and step.name != step_name:
            continue
        for task in step.tasks:
            if attempt is not None and task.attempt != attempt:
                continue
            for name in ("stdout", "stderr"):
                if stream not in ("all", name):
                    continue
                text = getattr(task, name)
                if not text:
                    continue
                out.print(f"[bold]── {task.pathspec} attempt {task.attempt} {name} ──[/]")
                out.out(text.rstrip("\n"), highlight=False)
                printed = True
    if not printed:
        where = f" step {step_name!r} of" if step_name else ""
        still = [s.name for s in run if s.status in ("running", "queued")]
        if still and (step_name is None or step_name in still):
            out.print(
                f"no captured output yet for{where} {run.pathspec}: {', '.join(still)} still "
                f"running; follow it with: pipetrail logs {run.pathspec} --follow"
            )
        else:
            out.print(f"no captured output for{where} {run.pathspec}")


def _artifact_json(artifact: Artifact, direction: str) -> dict[str, Any]:
    producer = artifact.task
    return {
        "name": artifact.name,
        "direction": direction,
        "kind": artifact.kind,
        "hash": artifact.hash,
        "size": artifact.size,
        "serializer": artifact.serializer,
        "content_type": artifact.content_type,
        "type": artifact.type,
        "source_uri": artifact.source_uri,
        "producer_task_id": None if producer is None else producer.id,
    }


def run_summary_json(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "pathspec": run.pathspec,
        "pipeline": run.pipeline_name,
        "status": run.status,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_s": run.duration,
        "user": run.user,
        "trigger": run.trigger.to_dict(),
        "sla": run.sla,
        "user_tags": sorted(run.user_tags),
    }


def run_to_json(run: Run) -> dict[str, Any]:
    """Everything recorded about a run, as one JSON document."""
    steps = []
    for step in run:
        tasks = []
        for task in step.tasks:
            record = task.record
            tasks.append(
                {
                    "id": task.id,
                    "pathspec": task.pathspec,
                    "attempt": task.attempt,
                    "status": task.status,
                    "started_at": record.started_at.isoformat() if record.started_at else None,
                    "finished_at": record.finished_at.isoformat() if record.finished_at else None,
                    "duration_s": task.duration,
                    "resources": task.resources,
                    "exception": None if task.exception is None else str(task.exception),
                    "traceback": task.traceback,
                    "failed_upstream": record.failed_upstream,
                    "inputs": [_artifact_json(a, "input") for a in task.inputs.all()],
                    "outputs": [_artifact_json(a, "output") for a in task.outputs.all()],
                }
            )
        steps.append(
            {
                "name": step.name,
                "status": step.status,
                "started_at": step.started_at.isoformat() if step.started_at else None,
                "finished_at": step.finished_at.isoformat() if step.finished_at else None,
                "tasks": tasks,
            }
        )
    return {
        **run_summary_json(run),
        "version": run.version,
        "host": run.host,
        "origin_pathspec": run.origin_pathspec,
        "error": run.error,
        "params": run.params,
        "param_types": run.param_types,
        "variables": run.variables,
        "system_tags": sorted(run.system_tags),
        "git": run.git,
        "code_snapshot": run.record.code_key,
        "code_files": sorted(run.code or {}),
        "environment_hash": run.record.environment_hash,
        "environment": run.environment,
        "dag": run.dag,
        "metrics": user_metrics_first(run.metrics),
        "cost": run.cost.to_dict(),
        "steps": steps,
        "events": [
            {
                "task_id": e.task_id,
                "kind": e.kind,
                "status": e.status,
                "previous": e.previous,
                "at": e.at.isoformat(),
                "message": e.message,
                "actor": e.actor,
            }
            for e in run.events
        ],
    }
