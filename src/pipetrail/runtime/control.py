"""Acting on recorded runs: retry (resume) a run as a new one, and cancel runs from anywhere."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipetrail.core.model import PipelineSpec, RunRecord
from pipetrail.core.params import to_json_value
from pipetrail.core.status import RUN_TERMINAL
from pipetrail.errors import PipelineLoadError, UsageError
from pipetrail.provenance.environment import current_user
from pipetrail.runtime.engine import RunRequest
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.runtime.planner import StepPlan, plan_retry
from pipetrail.storage.metadata.base import MetadataStore

__all__ = [
    "cancel_run",
    "describe_plan",
    "reproduce_request",
    "reproduction_report",
    "retry_request",
]


def retry_request(
    store: MetadataStore,
    origin: RunRecord,
    *,
    overrides: Mapping[str, str] | None = None,
    from_step: str | None = None,
    max_parallel: int | None = None,
) -> tuple[RunRequest, list[StepPlan]]:
    """The request for a new run that retries ``origin``, and the plan of what it reuses.

    The pipeline is loaded from the file the origin ran from, as it is now: steps whose code
    changed re-run. Parameters are the origin's unless overridden (``-p`` text).

    Raises:
        UsageError: the origin is still running, its file is gone, ``from_step`` is unknown, or
            an override is not a parameter or not of its type.
    """
    if origin.status not in RUN_TERMINAL:
        raise UsageError(
            f"run {origin.pathspec} is still {origin.status.value}; wait for it to end or cancel "
            f"it first: pipetrail runs cancel {origin.pathspec}"
        )
    file = origin.dag.get("file")
    if not file or not Path(file).is_file():
        raise PipelineLoadError(
            f"cannot retry {origin.pathspec}: its pipeline file {file!r} is not there any more"
        )
    pipeline = load_pipeline_file(Path(file), origin.pipeline)
    if from_step is not None and from_step not in pipeline.steps:
        raise UsageError(
            f"--from {from_step!r}: pipeline {origin.pipeline!r} has no such step; steps: "
            f"{', '.join(pipeline.steps)}"
        )
    known = {p.name for p in pipeline.spec.params}
    kept = {k: v for k, v in origin.params.items() if k in known}
    values = pipeline.resolve_params(kept)
    if overrides:
        given = pipeline.resolve_params(dict(overrides), from_text=True)
        values.update({name: given[name] for name in overrides})
    plan = plan_retry(
        PipelineSpec.from_dict(origin.dag),
        store.tasks(origin.id),
        pipeline.spec,
        pipeline.dag,
        origin_params=origin.params,
        params={k: to_json_value(v) for k, v in values.items()},
        from_step=from_step,
    )
    request = RunRequest(
        pipeline=pipeline,
        params=values,
        variables=dict(origin.variables),
        tags=origin.user_tags,
        trigger="retry",
        origin_run_id=origin.id,
        origin_pathspec=origin.pathspec,
        max_parallel=max_parallel,
        timeout_s=origin.timeout_s if origin.timeout_s != pipeline.spec.timeout_s else None,
        reuse={p.step: dict(p.reuse) for p in plan if p.reuse},
        reuse_steps=frozenset(p.step for p in plan if p.action == "reuse"),
    )
    return request, plan


def cancel_run(
    store: MetadataStore,
    run: RunRecord,
    *,
    reason: str | None = None,
    wait_s: float = 15.0,
    actor: str | None = None,
) -> RunRecord:
    """Ask ``run``'s runner to cancel it and wait until it has; force it if the runner is silent.

    ``actor`` is who cancels (a token's user; the local user when None), recorded with the
    cancel request.

    A cancel always ends in a terminal status: a run still waiting for a slot, or whose runner
    does not act within ``wait_s``, is cancelled here directly.

    Raises:
        UsageError: the run has already ended.
    """
    if run.status in RUN_TERMINAL:
        raise UsageError(
            f"run {run.pathspec} has already ended ({run.status.value}); nothing to cancel"
        )
    user = actor or current_user()
    who = reason or f"cancelled by {user}@{socket.gethostname()}"
    store.request_cancel(run.id, who, actor=user)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        current = store.get_run(run.id)
        if current.status in RUN_TERMINAL:
            return current
        time.sleep(0.2)
    return _force_cancel(store, run.id, f"{who} (the runner did not answer within {wait_s:g} s)")


def _force_cancel(store: MetadataStore, run_id: int, reason: str) -> RunRecord:
    # Taken over in the store (its lease moves on): a runner on another host that was only
    # slow stops at its next write instead of writing into the run cancelled here.
    return store.force_cancel(run_id, reason)


def describe_plan(plan: list[StepPlan]) -> list[dict[str, Any]]:
    """The plan as rows a person or a script reads."""
    return [
        {"step": p.step, "action": p.action, "reason": p.reason, "reused_tasks": len(p.reuse)}
        for p in plan
    ]


def reproduce_request(
    store: MetadataStore,
    code_bytes: Callable[[str], bytes],
    origin: RunRecord,
    *,
    workdir: Path,
    use_working_tree: bool = False,
) -> RunRequest:
    """A new run of ``origin`` with its recorded parameters and variables, from its stored code.

    The code snapshot is unpacked under ``workdir`` and the pipeline is loaded from there, so
    the run executes the code exactly as recorded (``use_working_tree`` takes the file as it is
    now instead).

    Raises:
        UsageError: the run is still going, or it has no code snapshot to run from.
    """
    from pipetrail.provenance.code import read_archive

    if origin.status not in RUN_TERMINAL:
        raise UsageError(
            f"run {origin.pathspec} is still {origin.status.value}; wait for it to end"
        )
    recorded = origin.dag.get("file") or ""
    if use_working_tree:
        file = Path(recorded)
        if not file.is_file():
            raise PipelineLoadError(f"the pipeline file {recorded!r} is not there any more")
    else:
        if origin.code_key is None:
            raise UsageError(
                f"run {origin.pathspec} has no stored code snapshot; use --use-working-tree"
            )
        files = read_archive(code_bytes(origin.code_key))
        folder = workdir / f"reproduce-{origin.id}"
        for name, text in files.items():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        matches = [k for k in files if recorded == k or recorded.endswith("/" + k)]
        if not matches:
            raise UsageError(f"the code snapshot of {origin.pathspec} lacks {recorded!r}")
        file = folder / max(matches, key=len)
    pipeline = load_pipeline_file(file, origin.pipeline)
    known = {p.name for p in pipeline.spec.params}
    params = pipeline.resolve_params({k: v for k, v in origin.params.items() if k in known})
    return RunRequest(
        pipeline=pipeline,
        params=params,
        variables=dict(origin.variables),
        tags=origin.user_tags,
        trigger="reproduce",
        origin_run_id=origin.id,
        origin_pathspec=origin.pathspec,
    )


def reproduction_report(store: MetadataStore, origin: RunRecord, new: RunRecord) -> dict[str, Any]:
    """Step by step, whether each output's content hash matches the origin's, and env changes."""
    from pipetrail.provenance.environment import diff_packages

    def outputs(run: RunRecord) -> dict[tuple[str, int, str], str]:
        tasks = {t.id: t for t in store.tasks(run.id)}
        latest: dict[tuple[str, int], int] = {}
        for task in tasks.values():
            latest[(task.step, task.task_index)] = task.id
        keep = set(latest.values())
        return {
            (tasks[link.task_id].step, tasks[link.task_id].task_index, link.name): link.artifact.key
            for link in store.links(run.id)
            if link.direction == "output" and link.task_id in keep
        }

    before, after = outputs(origin), outputs(new)
    order = {s["name"]: i for i, s in enumerate(new.dag.get("steps", []))}
    rows = []
    for key in sorted(set(before) | set(after), key=lambda k: (order.get(k[0], 1 << 30), k)):
        step, index, name = key
        if key not in after:
            verdict = "missing"
        elif key not in before:
            verdict = "new"
        else:
            verdict = "identical" if before[key] == after[key] else "differs"
        rows.append(
            {
                "step": step,
                "task": index,
                "output": name,
                "result": verdict,
                "origin_hash": before.get(key),
                "new_hash": after.get(key),
            }
        )
    env: dict[str, Any] = {"same": origin.environment_hash == new.environment_hash}
    if not env["same"] and origin.environment_hash and new.environment_hash:
        old = store.get_environment(origin.environment_hash)
        now = store.get_environment(new.environment_hash)
        env["packages"] = diff_packages(
            old.get("packages", {}).items(), now.get("packages", {}).items()
        ).to_dict()
        env["python"] = [old.get("python_version"), now.get("python_version")]
        env["platform"] = [old.get("platform"), now.get("platform")]
    return {
        "origin": origin.pathspec,
        "reproduction": new.pathspec,
        "status": new.status.value,
        "deterministic": bool(rows) and all(r["result"] == "identical" for r in rows),
        "outputs": rows,
        "environment": env,
    }
