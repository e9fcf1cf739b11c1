"""The run loop: record a run, drive its tasks in dependency order, record every state change."""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from pipetrail.core.model import PipelineSpec, RunCause, RunRecord
from pipetrail.core.params import to_json_value
from pipetrail.core.status import TaskStatus
from pipetrail.dsl import Pipeline
from pipetrail.provenance.code import code_archive
from pipetrail.provenance.environment import capture_environment, current_user
from pipetrail.provenance.git_state import current_git
from pipetrail.runtime.executors.base import Executor
from pipetrail.runtime.task import TaskServices
from pipetrail.storage.metadata.base import NewRun

__all__ = ["Engine", "RunObserver", "RunRequest"]

HEARTBEAT_SECONDS = 10.0


#: Code archives stored by this process: (store, (file, its status)...) -> archive key.
_STORED_CODE: dict[tuple[object, ...], str] = {}


def _code_files(names: tuple[str | None, ...]) -> list[Path]:
    """The distinct files a pipeline's code comes from, resolved (symlinks followed), sorted.

    Absolute names are resolved once per process: resolving walks every folder of the path.
    """
    known = _RESOLVED.get(names)
    if known is None:
        paths = {Path(f).resolve() for f in names if f}
        known = sorted(p for p in paths if p.is_file())
        if all(f is None or os.path.isabs(f) for f in names):
            _RESOLVED[names] = known
    return known


#: Pipeline code files by the names their specs give (see _code_files).
_RESOLVED: dict[tuple[str | None, ...], list[Path]] = {}


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ctime_ns, st.st_size


class RunObserver(Protocol):
    """Told about a run as it goes (the CLI's live display is one)."""

    def run_waiting(self, run: RunRecord, limit: int) -> None: ...
    def run_started(self, run: RunRecord, spec: PipelineSpec) -> None: ...
    def task_changed(
        self, step: str, attempt: int, status: TaskStatus, duration_s: float | None = None
    ) -> None: ...
    def run_finished(self, run: RunRecord) -> None: ...


class _Silent:
    def run_waiting(self, run: RunRecord, limit: int) -> None:
        return None

    def run_started(self, run: RunRecord, spec: PipelineSpec) -> None:
        return None

    def task_changed(
        self, step: str, attempt: int, status: TaskStatus, duration_s: float | None = None
    ) -> None:
        return None

    def run_finished(self, run: RunRecord) -> None:
        return None


@dataclass(frozen=True)
class RunRequest:
    """What to run: a validated pipeline with resolved parameters."""

    pipeline: Pipeline
    params: dict[str, Any]
    variables: dict[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    trigger: str = "cli"
    origin_run_id: int | None = None
    origin_pathspec: str | None = None
    max_parallel: int | None = None
    #: Run timeout in seconds and its policy; the pipeline's own when None.
    timeout_s: float | None = None
    on_timeout: str | None = None
    #: For a retry: step → (task index → origin task id) whose outputs are reused.
    reuse: dict[str, dict[int, int]] = field(default_factory=dict)
    #: The steps reused whole (the others in ``reuse`` re-run all but those tasks).
    reuse_steps: frozenset[str] = frozenset()
    #: A trigger's run: its cause (``trigger`` is then the trigger's kind), the claimed tick
    #: it is bound to (the trigger's id), the trigger's SLA and ``max_concurrent``.
    cause: RunCause | None = None
    tick_trigger_id: int | None = None
    sla_s: float | None = None
    trigger_limit: int | None = None
    #: Who starts the run (a token's user over REST); the local user when None.
    user: str | None = None


class Engine:
    """Drives runs on one executor, recording everything through the metadata store.

    Args:
        services: the metadata store, artifact store and serializers.
        executor_factory: builds the executor for a pipeline (called once per run).
        observer: told about status changes as they are committed.
    """

    def __init__(
        self,
        services: TaskServices,
        executor_factory: Callable[[Pipeline], Executor],
        observer: RunObserver | None = None,
    ) -> None:
        self.services = services
        self._executor_factory = executor_factory
        self.observer: RunObserver = observer or _Silent()

    def run(self, request: RunRequest) -> RunRecord:
        """Record and execute a run; returns it as it ended."""
        run = self.prepare(request)
        return self.execute(run, request)

    def prepare(self, request: RunRequest) -> RunRecord:
        """Capture provenance and record the run (``initial``) with one task row per step."""
        spec = request.pipeline.spec
        store = self.services.store
        user = request.user or current_user()
        host = socket.gethostname()
        env = capture_environment()
        git = current_git(Path(spec.file).parent) if spec.file else None
        code_key = self._store_code(spec)
        system_tags: tuple[str, ...] = (
            f"user:{user}",
            f"runtime:python{platform.python_version()}",
            f"pipeline_version:{spec.version}",
            f"host:{host}",
            f"trigger:{request.trigger}",
        )
        if git is not None and git.commit:
            system_tags += (f"git_commit:{git.commit[:12]}",)
        params = {name: to_json_value(value) for name, value in request.params.items()}
        declared = {p.name: p.type for p in spec.params}
        param_types = {
            name: declared.get(name, "any")
            if declared.get(name, "any") != "any"
            else type(value).__name__
            for name, value in request.params.items()
        }
        run = store.create_run(
            NewRun(
                spec=spec,
                params=params,
                param_types=param_types,
                variables=dict(request.variables),
                user=user,
                host=host,
                trigger=request.trigger,
                user_tags=request.tags,
                system_tags=system_tags,
                git=git.to_dict() if git is not None else None,
                code_key=code_key,
                environment=(env.content_hash, env.to_dict()),
                origin_run_id=request.origin_run_id,
                runner_pid=os.getpid(),
                timeout_s=request.timeout_s or spec.timeout_s,
                cause=request.cause,
                tick_trigger_id=request.tick_trigger_id,
                sla_due_at=(
                    request.cause.scheduled_at + timedelta(seconds=request.sla_s)
                    if request.cause is not None and request.sla_s is not None
                    else None
                ),
            )
        )
        # This runner holds the run: once it is taken (reaped as lost), its writes are refused.
        store.hold(run.id, run.lease)
        return run

    def _store_code(self, spec: PipelineSpec) -> str | None:
        """Store the pipeline file and every file a step comes from, as one archive.

        An archive of files unchanged since this process last stored it (same size and change
        times) is not built again, as long as the store still has it.
        """
        names = (spec.file, *(s.file for s in spec.steps))
        files = _code_files(names)
        cas = self.services.cas
        seen = (cas.url, *((str(p), _stat_key(p)) for p in files))
        if any(stat is None for _, stat in seen[1:]):  # a file went away since it was resolved
            _RESOLVED.pop(names, None)
            files = _code_files(names)
            seen = (cas.url, *((str(p), _stat_key(p)) for p in files))
        if not files:
            return None
        key = _STORED_CODE.get(seen)
        if key is not None and cas.exists(key):
            return key
        root = Path(os.path.commonpath([str(p.parent) for p in files]))
        archive = code_archive({str(p.relative_to(root)): p for p in files}, None)
        key = cas.put_bytes(archive).key
        # Kept only if no file changed while it was read: else the next run reads them again.
        if seen == (cas.url, *((str(p), _stat_key(p)) for p in files)):
            _STORED_CODE[seen] = key
        return key

    def execute(self, run: RunRecord, request: RunRequest) -> RunRecord:
        """Drive a prepared run to a terminal status."""
        from pipetrail.runtime.loop import RunLoop

        return RunLoop(self, run, request).drive()

    def executor_for(self, pipeline: Pipeline) -> Executor:
        return self._executor_factory(pipeline)
