"""The run loop: record a run, drive its tasks in dependency order, record every state change."""

from __future__ import annotations

import getpass
import os
import pickle
import platform
import socket
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipetrail.core.model import ArtifactRecord, PipelineSpec, RunRecord
from pipetrail.core.params import to_json_value
from pipetrail.core.status import RunStatus, TaskStatus
from pipetrail.dsl import Pipeline
from pipetrail.provenance.code import capture_git, code_archive
from pipetrail.provenance.environment import capture_environment
from pipetrail.runtime.executors.base import Executor
from pipetrail.runtime.task import InputRef, TaskPayload, TaskServices
from pipetrail.storage.metadata.base import NewRun, TaskOutcome

__all__ = ["Engine", "RunObserver", "RunRequest"]

HEARTBEAT_SECONDS = 10.0


class RunObserver(Protocol):
    """Told about a run as it goes (the CLI's live display is one)."""

    def run_started(self, run: RunRecord, spec: PipelineSpec) -> None: ...
    def task_changed(
        self, step: str, attempt: int, status: TaskStatus, duration_s: float | None = None
    ) -> None: ...
    def run_finished(self, run: RunRecord) -> None: ...


class _Silent:
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
    max_parallel: int | None = None


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
        user = _user()
        host = socket.gethostname()
        env = capture_environment()
        git = capture_git(Path(spec.file).parent) if spec.file else None
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
            )
        )
        return run

    def _store_code(self, spec: PipelineSpec) -> str | None:
        files: dict[str, Path] = {}
        for step in spec.steps:
            if step.file and Path(step.file).is_file():
                files.setdefault(Path(step.file).name, Path(step.file))
        if spec.file and Path(spec.file).is_file():
            files.setdefault(Path(spec.file).name, Path(spec.file))
        if not files:
            return None
        return self.services.cas.put_bytes(code_archive(files, None)).key

    def execute(self, run: RunRecord, request: RunRequest) -> RunRecord:
        """Drive a prepared run to a terminal status."""
        loop = _RunLoop(self, run, request)
        return loop.drive()


class _RunLoop:
    """The state of one run while it executes."""

    def __init__(self, engine: Engine, run: RunRecord, request: RunRequest) -> None:
        self.engine = engine
        self.store = engine.services.store
        self.run = run
        self.request = request
        self.pipeline = request.pipeline
        self.spec = request.pipeline.spec
        self.observer = engine.observer
        self.order = request.pipeline.dag.order
        self.status: dict[str, TaskStatus] = {s: TaskStatus.INITIAL for s in self.order}
        self.task_ids: dict[str, int] = {}
        self.attempts: dict[str, int] = {s: 0 for s in self.order}
        self.outputs: dict[str, dict[str, tuple[ArtifactRecord, int]]] = {}
        self.failures: list[tuple[str, str]] = []
        self._stop_heartbeat = threading.Event()
        self._params_blob = pickle.dumps(dict(request.params))

    def drive(self) -> RunRecord:
        keys = [(s, 0, 0) for s in self.order]
        created = self.store.create_tasks(self.run.id, keys)
        self.task_ids = {step: created[(step, 0, 0)] for step in self.order}
        self.run = self.store.set_run_status(self.run.id, RunStatus.RUNNING)
        self.observer.run_started(self.run, self.spec)
        heartbeat = threading.Thread(
            target=self._heartbeat, name="pipetrail-heartbeat", daemon=True
        )
        heartbeat.start()
        executor = self.engine._executor_factory(self.pipeline)
        try:
            self._loop(executor)
        except KeyboardInterrupt:
            executor.shutdown(cancel=True)
            self._cancel_rest("cancelled by the user (Ctrl-C)")
            return self._finish(RunStatus.CANCELLED, "cancelled by the user (Ctrl-C)")
        except BaseException as exc:
            executor.shutdown(cancel=True)
            reason = f"runner error: {type(exc).__name__}: {exc}"
            self._cancel_rest(reason)
            self._finish(RunStatus.FAILED, reason)
            raise
        finally:
            self._stop_heartbeat.set()
        executor.shutdown()
        if all(s is TaskStatus.COMPLETED for s in self.status.values()):
            return self._finish(RunStatus.COMPLETED, None)
        return self._finish(RunStatus.FAILED, self._summary())

    def _loop(self, executor: Executor) -> None:
        pending = list(self.order)
        running: dict[Future[TaskOutcome], str] = {}
        limit = self.request.max_parallel or executor.max_workers
        while pending or running:
            for step in list(pending):
                if len(running) >= limit:
                    break
                ups = self.pipeline.dag.upstream(step)
                if all(self.status[u] is TaskStatus.COMPLETED for u in ups):
                    pending.remove(step)
                    running[self._submit(executor, step)] = step
            if not running:
                break
            done, _ = wait(list(running), timeout=HEARTBEAT_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                step = running.pop(future)
                retry = self._record(step, future)
                if retry:
                    running[self._submit(executor, step)] = step
                elif self.status[step] is TaskStatus.FAILED:
                    for down in self.pipeline.dag.descendants(step):
                        if down in pending:
                            pending.remove(down)
                            self._set(down, TaskStatus.UPSTREAM_FAILED, failed_upstream=step)

    def _submit(self, executor: Executor, step: str) -> Future[TaskOutcome]:
        spec = self.spec.step(step)
        inputs = []
        for i in spec.inputs:
            record, producer = self.outputs[i.step][i.output or i.step]
            inputs.append(InputRef(i.arg, i.output or i.step, record, producer))
        payload = TaskPayload(
            pipeline=self.spec.name,
            pipeline_file=self.spec.file,
            step=step,
            run_id=self.run.id,
            task_id=self.task_ids[step],
            task_index=0,
            attempt=self.attempts[step],
            params=self._params_blob,
            variables=dict(self.request.variables),
            inputs=tuple(inputs),
        )
        self._set(step, TaskStatus.QUEUED)
        self.observer.task_changed(step, self.attempts[step], TaskStatus.RUNNING)
        return executor.submit(payload)

    def _record(self, step: str, future: Future[TaskOutcome]) -> bool:
        """Record a finished attempt; True when the step gets another attempt."""
        task_id = self.task_ids[step]
        try:
            outcome = future.result()
        except Exception as exc:
            # The worker itself failed (killed, out of memory, unpicklable payload).
            outcome = TaskOutcome(
                status=TaskStatus.FAILED,
                exception_type=type(exc).__name__,
                exception_message=f"the worker running this task failed: {exc}",
            )
        self.store.finish_task(task_id, outcome)
        self.status[step] = outcome.status
        duration = None
        if outcome.started_at is not None and outcome.finished_at is not None:
            duration = (outcome.finished_at - outcome.started_at).total_seconds()
        self.observer.task_changed(step, self.attempts[step], outcome.status, duration)
        if outcome.status is TaskStatus.COMPLETED:
            self.outputs[step] = {
                link.name: (link.artifact, task_id)
                for link in outcome.links
                if link.direction == "output" and link.kind == "output"
            }
            return False
        spec = self.spec.step(step)
        if self.attempts[step] < spec.retries:
            self.attempts[step] += 1
            key = (step, 0, self.attempts[step])
            self.task_ids[step] = self.store.create_tasks(self.run.id, [key])[key]
            self.status[step] = TaskStatus.INITIAL
            return True
        self.failures.append((step, f"{outcome.exception_type}: {outcome.exception_message}"))
        return False

    def _set(self, step: str, status: TaskStatus, *, failed_upstream: str | None = None) -> None:
        message = f"upstream step {failed_upstream!r} failed" if failed_upstream else None
        self.store.set_task_status(
            self.task_ids[step], status, failed_upstream=failed_upstream, message=message
        )
        self.status[step] = status
        self.observer.task_changed(step, self.attempts[step], status)

    def _cancel_rest(self, reason: str) -> None:
        for step, status in self.status.items():
            if status in (TaskStatus.INITIAL, TaskStatus.QUEUED, TaskStatus.RUNNING):
                current = self.store.get_task(self.task_ids[step]).status
                if current in (TaskStatus.INITIAL, TaskStatus.QUEUED, TaskStatus.RUNNING):
                    self.store.set_task_status(
                        self.task_ids[step], TaskStatus.CANCELLED, message=reason
                    )
                self.status[step] = TaskStatus.CANCELLED
                self.observer.task_changed(step, self.attempts[step], TaskStatus.CANCELLED)

    def _summary(self) -> str:
        return "; ".join(f"step {step!r} failed: {why}" for step, why in self.failures)

    def _finish(self, status: RunStatus, error: str | None) -> RunRecord:
        self.run = self.store.set_run_status(self.run.id, status, error=error)
        self.observer.run_finished(self.run)
        return self.run

    def _heartbeat(self) -> None:
        while not self._stop_heartbeat.wait(HEARTBEAT_SECONDS):
            try:
                self.store.heartbeat(self.run.id)
            except Exception:  # a missed beat is retried on the next tick
                continue


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return os.environ.get("USER") or "unknown"


def params_for_display(params: Mapping[str, Any]) -> str:
    """``lr=0.1, epochs=20``: parameters on one line, for messages."""
    return ", ".join(f"{k}={v!r}" for k, v in params.items())
