"""The audit report's facts about one run: its code, environment, parameters, and per step the
attempts, inputs, outputs and metrics, as plain JSON-able dictionaries."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pipetrail.client.reader import Reader
from pipetrail.core.model import ArtifactLink, MetricPoint, RunRecord, TaskRecord
from pipetrail.errors import PipetrailError

__all__ = ["anchor_of_run", "anchor_of_step", "iso", "run_section"]

#: Packages named in a run's environment summary when present (the full list is an appendix).
NOTABLE_PACKAGES = (
    "pipetrail",
    "numpy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "scipy",
    "torch",
    "tensorflow",
    "jax",
    "xgboost",
    "lightgbm",
    "transformers",
)


def iso(value: datetime | None) -> str | None:
    """A timestamp as ISO 8601 text, None as None."""
    return value.isoformat() if value is not None else None


def anchor_of_run(run_id: int) -> str:
    """The HTML anchor of a run's section."""
    return f"run-{run_id}"


def anchor_of_step(run_id: int, step: str) -> str:
    """The HTML anchor of one step's section within its run."""
    return f"run-{run_id}-step-{step}"


def run_section(
    reader: Reader,
    record: RunRecord,
    *,
    role: str,
    task_paths: Mapping[int, str],
    producers: Mapping[str, list[str]],
) -> dict[str, Any]:
    """Everything the record holds about one run, for the report.

    Args:
        reader: the stores.
        record: the run.
        role: ``"subject"`` (the audited run) or ``"upstream"``.
        task_paths: task id → task pathspec for every task of the audit (producers of inputs).
        producers: content hash → pathspecs of the tasks in other runs that produced it, for
            inputs read from outside the run (an upstream run's output file).
    """
    store = reader.store
    tasks = store.tasks(record.id)
    links = store.links(record.id)
    history = store.metric_history(record.id)
    by_task: dict[int, list[tuple[int, MetricPoint]]] = {}
    for task_id, point in history:
        by_task.setdefault(task_id, []).append((task_id, point))
    snapshot, files = _snapshot(reader, record)
    steps = []
    for spec in record.dag.get("steps", []):
        name = spec["name"]
        mine = sorted((t for t in tasks if t.step == name), key=lambda t: (t.task_index, t.id))
        steps.append(
            _step_section(
                record,
                spec,
                mine,
                links,
                [p for t in mine for p in by_task.get(t.id, [])],
                files,
                task_paths,
                producers,
            )
        )
    return {
        "anchor": anchor_of_run(record.id),
        "id": record.id,
        "pathspec": record.pathspec,
        "pipeline": record.pipeline,
        "pipeline_version": record.version,
        "role": role,
        "status": record.status.value,
        "error": record.error,
        "created_at": iso(record.created_at),
        "started_at": iso(record.started_at),
        "finished_at": iso(record.finished_at),
        "duration_s": record.duration_s,
        "user": record.user,
        "host": record.host,
        "trigger": _trigger(record),
        "origin": _origin(reader, record),
        "params": dict(record.params),
        "param_types": dict(record.param_types),
        "variables": dict(record.variables),
        "tags": {"user": sorted(record.user_tags), "system": sorted(record.system_tags)},
        "code": {
            "git": _git(record.git),
            "snapshot": record.code_key,
            "snapshot_error": snapshot,
            "pipeline_file": record.dag.get("file"),
            "files": [{"name": n, "lines": len(t.splitlines())} for n, t in files.items()],
        },
        "environment": _environment(reader, record),
        "metrics": dict(sorted(store.latest_metrics(record.id).items())),
        "actions": _actions(reader, record, tasks),
        "steps": steps,
    }


GIT_KEYS = ("commit", "branch", "dirty", "diff_hash", "remote_url", "repo_root")


def _git(git: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not git:
        return None
    return {key: git.get(key) for key in GIT_KEYS}


def _trigger(record: RunRecord) -> dict[str, Any]:
    cause = record.cause
    return {
        "kind": record.trigger,
        "name": cause.trigger if cause else None,
        "scheduled_at": iso(cause.scheduled_at) if cause else None,
        "upstream": cause.upstream_pathspec if cause else None,
    }


def _actions(reader: Reader, record: RunRecord, tasks: list[TaskRecord]) -> list[dict[str, Any]]:
    """What people did to the run (cancel, tags) and what happened besides status changes
    (timeouts, reuses, notes), from its append-only event history."""
    where = {t.id: f"{t.step}/{t.task_index} attempt {t.attempt}" for t in tasks}
    return [
        {
            "at": iso(event.at),
            "actor": event.actor,
            "kind": event.kind,
            "status": event.status,
            "task": where.get(event.task_id) if event.task_id is not None else None,
            "message": event.message,
        }
        for event in reader.store.events(record.id)
        if event.actor is not None or event.kind != "status"
    ]


def _origin(reader: Reader, record: RunRecord) -> str | None:
    if record.origin_run_id is None:
        return None
    try:
        return reader.store.get_run(record.origin_run_id).pathspec
    except PipetrailError:  # the origin was deleted: its id is what the record still says
        return str(record.origin_run_id)


def _snapshot(reader: Reader, record: RunRecord) -> tuple[str | None, dict[str, str]]:
    """The code snapshot's files, or why they could not be read."""
    if record.code_key is None:
        return None, {}
    from pipetrail.provenance.code import read_archive

    try:
        return None, read_archive(reader.cas.get_bytes(record.code_key))
    except PipetrailError as exc:
        return f"the code snapshot {record.code_key} could not be read: {exc}", {}


def _environment(reader: Reader, record: RunRecord) -> dict[str, Any] | None:
    if record.environment_hash is None:
        return None
    try:
        env = reader.store.get_environment(record.environment_hash)
    except PipetrailError:
        return {"hash": record.environment_hash, "missing": True}
    packages: dict[str, str] = dict(sorted(env.get("packages", {}).items()))
    return {
        "hash": record.environment_hash,
        "missing": False,
        "python_version": env.get("python_version"),
        "python_implementation": env.get("python_implementation"),
        "platform": env.get("platform"),
        "machine": env.get("machine"),
        "cpu_count": env.get("cpu_count"),
        "total_memory_bytes": env.get("total_memory_bytes"),
        "cuda_version": env.get("cuda_version"),
        "gpus": list(env.get("gpus", [])),
        "package_count": len(packages),
        "notable_packages": {n: packages[n] for n in NOTABLE_PACKAGES if n in packages},
        "packages": packages,
    }


def _step_section(
    record: RunRecord,
    spec: Mapping[str, Any],
    tasks: list[TaskRecord],
    links: list[ArtifactLink],
    points: list[tuple[int, MetricPoint]],
    files: Mapping[str, str],
    task_paths: Mapping[int, str],
    producers: Mapping[str, list[str]],
) -> dict[str, Any]:
    name = spec["name"]
    latest: dict[int, TaskRecord] = {}
    for task in tasks:
        latest[task.task_index] = task
    used = {t.id: t.task_index for t in latest.values()}
    inputs, outputs = [], []
    for link in links:
        if link.task_id not in used:
            continue
        row = _artifact_row(link, used[link.task_id])
        if link.direction == "input":
            if link.producer_task_id is not None:
                row["producers"] = [
                    task_paths.get(link.producer_task_id, str(link.producer_task_id))
                ]
            else:
                row["producers"] = list(producers.get(link.artifact.key, []))
            inputs.append(row)
        else:
            outputs.append(row)
    source: str = spec.get("source", "")
    params = {p: record.params[p] for p in spec.get("params", ()) if p in record.params}
    return {
        "anchor": anchor_of_step(record.id, name),
        "name": name,
        "pathspec": f"{record.pathspec}/{name}",
        "status": latest[max(latest)].status.value if latest else "initial",
        "code": {
            "source_hash": spec.get("source_hash"),
            "source": source,
            "module": spec.get("module"),
            "file": spec.get("file"),
            "line": spec.get("line"),
            "in_snapshot": _in_snapshot(source, spec, files) if files else None,
        },
        "params": params,
        "retries_allowed": int(spec.get("retries", 0)),
        "attempts": [_attempt(record, t, task_paths) for t in tasks],
        "inputs": inputs,
        "outputs": outputs,
        "metrics": _metrics(points),
    }


def _artifact_row(link: ArtifactLink, task_index: int) -> dict[str, Any]:
    artifact = link.artifact
    return {
        "name": link.name,
        "task": task_index,
        "hash": artifact.key,
        "kind": link.kind,
        "size": artifact.size,
        "type": artifact.type_name,
        "serializer": artifact.serializer,
        "content_type": artifact.content_type,
        "source_uri": link.source_uri,
    }


def _attempt(record: RunRecord, task: TaskRecord, task_paths: Mapping[int, str]) -> dict[str, Any]:
    error = None
    if task.exception_type is not None:
        error = {
            "type": task.exception_type,
            "message": task.exception_message or "",
            "traceback": task.traceback,
        }
    reused = task.reused_from_task_id
    return {
        "task_id": task.id,
        "pathspec": f"{record.pathspec}/{task.step}/{task.task_index}",
        "task": task.task_index,
        "attempt": task.attempt,
        "status": task.status.value,
        "started_at": iso(task.started_at),
        "finished_at": iso(task.finished_at),
        "duration_s": task.duration_s,
        "host": task.host,
        "error": error,
        "failed_upstream": task.failed_upstream,
        "allowed_failure": task.allowed_failure,
        "reused_from": task_paths.get(reused, str(reused)) if reused is not None else None,
        "note": task.note,
    }


def _metrics(points: list[tuple[int, MetricPoint]]) -> list[dict[str, Any]]:
    series: dict[str, list[MetricPoint]] = {}
    for _, point in points:
        series.setdefault(point.name, []).append(point)
    rows = []
    for name in sorted(series):
        values = series[name]
        last = max(values, key=lambda p: (p.timestamp, p.step if p.step is not None else -1))
        numbers = [p.value for p in values]
        rows.append(
            {
                "name": name,
                "latest": last.value,
                "min": min(numbers),
                "max": max(numbers),
                "points": len(values),
            }
        )
    return rows


def _in_snapshot(source: str, spec: Mapping[str, Any], files: Mapping[str, str]) -> bool:
    """Whether the step's recorded source is what the stored snapshot holds at its place."""
    wanted = source.strip()
    if not wanted:
        return False
    file, line = spec.get("file") or "", spec.get("line")
    for name, text in files.items():
        if isinstance(line, int) and line > 0 and (file == name or file.endswith("/" + name)):
            lines = text.splitlines()[line - 1 : line - 1 + len(source.splitlines())]
            if textwrap.dedent("\n".join(lines)).strip() == wanted:
                return True
    return any(wanted in text for text in files.values())
