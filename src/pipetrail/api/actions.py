"""Actions behind the POST routes: trigger, retry and cancel runs, define and fire triggers;
runs execute in the background.

A trigger or retry records the run synchronously (``Engine.prepare``), so its id is known at
once, then drives it in a thread of its own with a Workspace of its own (its own store
connections and executor). Stopping the server asks its unfinished runs to cancel.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pipetrail.api.project import ProjectDir
from pipetrail.core.ids import validate_user_tags
from pipetrail.core.model import RunRecord
from pipetrail.core.status import RUN_TERMINAL, RunStatus
from pipetrail.errors import InvalidTransitionError, NotFoundError, PipetrailError, UsageError
from pipetrail.runtime.control import cancel_run, describe_plan, retry_request
from pipetrail.runtime.engine import RunRequest
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.scheduling.fire import fire_now
from pipetrail.scheduling.service import TriggerService
from pipetrail.scheduling.spec import KIND_FIELDS, check_pipeline, definition_from, to_fields
from pipetrail.storage.metadata.base import RunQuery, TriggerDefinition, TriggerRecord
from pipetrail.workspace import Workspace

if TYPE_CHECKING:
    from pipetrail.config import Settings

__all__ = [
    "BATCH_LIMIT",
    "BatchOutcome",
    "RunLauncher",
    "TriggerExistsError",
    "cancel_many",
    "cancel_one",
    "create_trigger",
    "each",
    "fire_trigger",
    "retry_one",
    "select_runs",
    "trigger",
    "update_trigger",
]

log = logging.getLogger("pipetrail.api")

#: Most runs one batch action may select.
BATCH_LIMIT = 1000


class RunLauncher:
    """Executes prepared runs in background threads, each with its own Workspace.

    Args:
        settings: the settings every background Workspace is opened from.
        project: the folder whose pipeline files it may load (triggers and retries).
    """

    def __init__(self, settings: Settings, project: ProjectDir) -> None:
        self.settings = settings
        self.project = project
        self._lock = threading.Lock()
        self._threads: dict[int, threading.Thread] = {}

    def start(self, run: RunRecord, request: RunRequest, executor: str | None) -> None:
        """Drive the prepared ``run`` to its end in a new thread."""
        thread = threading.Thread(
            target=self._drive,
            args=(run, request, executor),
            name=f"pipetrail-run-{run.id}",
            daemon=True,
        )
        with self._lock:
            self._threads = {k: t for k, t in self._threads.items() if t.is_alive()}
            self._threads[run.id] = thread
        thread.start()

    def _drive(self, run: RunRecord, request: RunRequest, executor: str | None) -> None:
        workspace: Workspace | None = None
        try:
            workspace = Workspace(self.settings)
            workspace.engine(executor=executor).execute(run, request)
        except BaseException as exc:
            log.exception("run %s stopped with an error in the server", run.pathspec)
            self._fail(workspace, run, exc)
        finally:
            if workspace is not None:
                workspace.close()

    def _fail(self, workspace: Workspace | None, run: RunRecord, exc: BaseException) -> None:
        """Leave no run open when its thread could not start or drive it."""
        try:
            ws = workspace or Workspace(self.settings)
            current = ws.store.get_run(run.id)
            if current.status not in RUN_TERMINAL:
                ws.store.set_run_status(
                    run.id, RunStatus.FAILED, error=f"server error: {type(exc).__name__}: {exc}"
                )
            if workspace is None:
                ws.close()
        except Exception:
            log.exception("could not mark run %s failed", run.pathspec)

    def running(self) -> list[int]:
        """Ids of runs this server is driving now."""
        with self._lock:
            return [k for k, t in self._threads.items() if t.is_alive()]

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until every run started here has ended; False if some still run after the wait."""
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout_s)
        return not any(t.is_alive() for t in threads)

    def shutdown(self, workspace: Workspace, wait_s: float = 10.0) -> None:
        """Ask every run still driven here to cancel, and wait for them to end."""
        for run_id in self.running():
            try:
                workspace.store.request_cancel(run_id, "the server that ran it stopped")
            except PipetrailError:
                continue
        self.wait(wait_s)


def trigger(
    workspace: Workspace,
    launcher: RunLauncher,
    name: str,
    *,
    parameters: Mapping[str, Any],
    variables: Mapping[str, str],
    tags: Sequence[str],
    executor: str | None,
    file: str | None,
    max_parallel: int | None,
    actor: str | None = None,
) -> RunRecord:
    """Record a new run of pipeline ``name``, started by ``actor``, and start it in the
    background.

    The pipeline is loaded from ``file``, or else from the file of its latest recorded run;
    either must be under the launcher's project directory.

    Raises:
        ForbiddenFileError: the file is not a ``.py`` file under the project directory.
        NotFoundError: no ``file`` and no recorded run of ``name``.
        PipelineLoadError: the file is missing, does not import, or lacks the pipeline.
        ParameterError: an unknown parameter or a value of the wrong type.
        UsageError: a bad tag.
    """
    if file is None:
        latest = workspace.store.list_runs(RunQuery(pipeline=name, limit=1))
        if not latest:
            raise NotFoundError(
                f"no recorded run of pipeline {name!r} to find its file; pass 'file' "
                "(the path of the pipeline file on the server)"
            )
        path = launcher.project.pipeline_file(
            str(latest[0].dag.get("file") or ""),
            purpose=f"the pipeline file of {latest[0].pathspec}, the latest run of {name!r},",
        )
    else:
        path = launcher.project.pipeline_file(file, purpose="file")
    pipeline = load_pipeline_file(path, name)
    request = RunRequest(
        pipeline=pipeline,
        params=pipeline.resolve_params(dict(parameters)),
        variables=dict(variables),
        tags=validate_user_tags(tags),
        trigger="api",
        max_parallel=max_parallel,
        user=actor,
    )
    run = workspace.engine(executor=executor).prepare(request)
    launcher.start(run, request, executor)
    return run


class TriggerExistsError(InvalidTransitionError):
    """A trigger of that name exists already (the API answers 409)."""


def _trigger_definition(
    launcher: RunLauncher, fields: Mapping[str, Any], where: str
) -> TriggerDefinition:
    """``fields`` read as a trigger whose pipeline file is under the project directory, with
    its pipeline loaded and its parameters checked."""
    target = fields.get("pipeline")
    if isinstance(target, str) and target.strip():
        file_text, sep, pipeline_name = target.partition(":")
        path = launcher.project.pipeline_file(file_text, purpose=f"{where}: pipeline file")
        fields = {**fields, "pipeline": f"{path}{sep}{pipeline_name}"}
    definition = definition_from(fields, base_dir=launcher.project.root, where=where)
    return check_pipeline(definition)


def create_trigger(
    workspace: Workspace, launcher: RunLauncher, fields: Mapping[str, Any]
) -> TriggerRecord:
    """Store a new trigger read from ``fields`` (the ``scheduling.spec`` vocabulary).

    Raises:
        ForbiddenFileError: the pipeline file is not a ``.py`` file under the project directory.
        UsageError: a bad field (one line naming it); the name exists (``TriggerExistsError``).
        PipelineLoadError, ParameterError: the pipeline does not load, or a bad parameter.
    """
    definition = _trigger_definition(launcher, fields, "trigger")
    service = TriggerService(workspace.store)
    if _exists(service, definition.name):
        raise TriggerExistsError(_taken(definition.name))
    try:
        return service.create(definition)
    except UsageError:
        if _exists(service, definition.name):
            # Created by another request between the look and the write.
            raise TriggerExistsError(_taken(definition.name)) from None
        raise


def _exists(service: TriggerService, name: str) -> bool:
    try:
        service.get(name)
    except NotFoundError:
        return False
    return True


def _taken(name: str) -> str:
    return (
        f"a trigger named {name!r} exists already; change it with PATCH /api/triggers/{{name}}, "
        "or pick another name"
    )


def update_trigger(
    workspace: Workspace, launcher: RunLauncher, name: str, changes: Mapping[str, Any]
) -> TriggerRecord:
    """Change some fields of trigger ``name``: ``changes`` are merged onto its current fields.

    A change set to None removes the field (back to its default). A change that gives another
    kind (``every`` for a cron trigger) replaces the kind and drops the old kind's fields.

    Raises:
        NotFoundError: no such trigger.
        ForbiddenFileError: the (new or current) pipeline file is not under the project
            directory (a trigger defined from elsewhere is changed with the CLI).
        UsageError: a bad field, or ``name`` given and different.
        PipelineLoadError, ParameterError: the pipeline does not load, or a bad parameter.
    """
    service = TriggerService(workspace.store)
    current = service.get(name)
    given = changes.get("name")
    if given is not None and given != name:
        raise UsageError(
            f"trigger {name!r}: 'name' cannot change (got {given!r}); create a trigger of the "
            "new name and delete this one"
        )
    fields = to_fields(current.definition)
    new_kind = next((k for k in KIND_FIELDS if changes.get(k) not in (None, False)), None)
    if new_kind is not None:
        # Another kind replaces the current one with the fields that only went with it.
        for key in KIND_FIELDS:
            if key != new_kind:
                fields.pop(key, None)
        if new_kind != "after":
            fields.pop("on", None)
        if new_kind != "every":
            fields.pop("start", None)
            fields.pop("end", None)
    for key, value in changes.items():
        if key == "name":
            continue
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    fields["name"] = name
    definition = _trigger_definition(launcher, fields, "trigger")
    return service.update(definition)


def fire_trigger(
    workspace: Workspace,
    launcher: RunLauncher,
    name: str,
    *,
    params: Mapping[str, Any],
    variables: Mapping[str, str],
    executor: str | None,
    actor: str | None = None,
) -> RunRecord:
    """Fire trigger ``name`` once, now: record its run (bound to a tick of its own, started by
    ``actor``) and start it in the background. The run records its trigger as ``api`` for an api trigger, else
    ``manual``.

    Raises:
        NotFoundError: no such trigger.
        InvalidTransitionError: the trigger is paused.
        ForbiddenFileError: its pipeline file is not under the project directory.
        PipelineLoadError, ParameterError: the pipeline does not load, or a bad parameter
            (nothing is recorded).
    """
    record = TriggerService(workspace.store).get(name)
    if record.paused:
        raise InvalidTransitionError(
            f"trigger {name!r} is paused; resume it first (POST /api/triggers/{name}/resume)"
        )
    launcher.project.pipeline_file(
        record.definition.pipeline_file, purpose=f"cannot fire trigger {name!r}: its pipeline file"
    )
    run, request = fire_now(
        workspace.store,
        workspace.engine(executor=executor),
        record,
        params=params,
        variables=variables,
        user=actor,
    )
    launcher.start(run, request, executor)
    return run


def retry_one(
    workspace: Workspace,
    launcher: RunLauncher,
    run_id: int,
    *,
    from_step: str | None,
    parameters: Mapping[str, Any],
    executor: str | None,
    actor: str | None = None,
) -> tuple[RunRecord, list[dict[str, Any]]]:
    """Start a retry of run ``run_id`` in the background, by ``actor`` (the new run's user);
    returns the new run and its plan.

    Raises:
        NotFoundError: no such run.
        InvalidTransitionError: the run has not ended yet.
        ForbiddenFileError: the run's recorded pipeline file is not under the project directory
            (a run recorded from elsewhere is retried with the CLI, by whoever may run its code).
        UsageError: an unknown ``from_step``, a bad parameter, or the pipeline file is gone.
    """
    origin = workspace.store.get_run(run_id)
    if origin.status not in RUN_TERMINAL:
        raise InvalidTransitionError(
            f"run {origin.pathspec} is still {origin.status.value}; wait for it to end or "
            f"cancel it first (POST /api/pipeline_runs/{origin.id}/cancel)"
        )
    launcher.project.pipeline_file(
        str(origin.dag.get("file") or ""), purpose=f"cannot retry {origin.pathspec}: its file"
    )
    # Parameters arrive as JSON values; retry_request takes command-line text.
    overrides = {k: v if isinstance(v, str) else json.dumps(v) for k, v in parameters.items()}
    request, plan = retry_request(workspace.store, origin, overrides=overrides, from_step=from_step)
    request = dataclasses.replace(request, user=actor)
    run = workspace.engine(executor=executor).prepare(request)
    launcher.start(run, request, executor)
    return run, describe_plan(plan)


def cancel_one(
    workspace: Workspace,
    run_id: int,
    *,
    reason: str | None,
    wait_s: float,
    actor: str | None = None,
) -> RunRecord:
    """Cancel run ``run_id`` for ``actor`` and return it once ended (forced if its runner does
    not answer).

    Raises:
        NotFoundError: no such run.
        InvalidTransitionError: the run has already ended.
    """
    run = workspace.store.get_run(run_id)
    if run.status in RUN_TERMINAL:
        raise _ended(run)
    try:
        return cancel_run(workspace.store, run, reason=reason, wait_s=wait_s, actor=actor)
    except UsageError:
        # It ended between the look and the cancel.
        raise _ended(workspace.store.get_run(run_id)) from None


def _ended(run: RunRecord) -> InvalidTransitionError:
    return InvalidTransitionError(
        f"run {run.pathspec} has already ended ({run.status.value}); nothing to cancel"
    )


class BatchOutcome:
    """Per-run result of a batch action: the resulting run, or the error it met."""

    def __init__(
        self, run_id: int, run: RunRecord | None = None, error: PipetrailError | None = None
    ) -> None:
        self.run_id = run_id
        self.run = run
        self.error = error


def select_runs(
    workspace: Workspace,
    *,
    ids: Sequence[int] | None,
    pipeline: str | None,
    statuses: Sequence[RunStatus],
    tags: Sequence[str],
    default_statuses: Sequence[RunStatus],
) -> list[int]:
    """The run ids a batch acts on: ``ids`` as given, or those matching the filter.

    Raises:
        UsageError: the filter matches more than :data:`BATCH_LIMIT` runs.
    """
    if ids is not None:
        return list(dict.fromkeys(ids))
    found = workspace.store.list_runs(
        RunQuery(
            pipeline=pipeline,
            statuses=tuple(statuses or default_statuses),
            tags=tuple(tags),
            limit=BATCH_LIMIT + 1,
        )
    )
    if len(found) > BATCH_LIMIT:
        raise UsageError(
            f"the filter matches more than {BATCH_LIMIT} runs; narrow it (pipeline, status, tag)"
        )
    return [r.id for r in found]


def each(run_ids: Sequence[int], act: Callable[[int], RunRecord]) -> list[BatchOutcome]:
    """Apply ``act`` to every run id in turn, collecting outcomes instead of stopping."""
    outcomes = []
    for run_id in run_ids:
        try:
            outcomes.append(BatchOutcome(run_id, run=act(run_id)))
        except PipetrailError as exc:
            outcomes.append(BatchOutcome(run_id, error=exc))
    return outcomes


def cancel_many(
    workspace: Workspace,
    run_ids: Sequence[int],
    *,
    reason: str | None,
    wait_s: float,
    actor: str | None = None,
) -> list[BatchOutcome]:
    """Cancel runs concurrently (each waits for its own runner), in the order given."""
    if not run_ids:
        return []

    def one(run_id: int) -> BatchOutcome:
        try:
            return BatchOutcome(
                run_id,
                run=cancel_one(workspace, run_id, reason=reason, wait_s=wait_s, actor=actor),
            )
        except PipetrailError as exc:
            return BatchOutcome(run_id, error=exc)

    with ThreadPoolExecutor(max_workers=min(32, len(run_ids))) as pool:
        return list(pool.map(one, run_ids))
