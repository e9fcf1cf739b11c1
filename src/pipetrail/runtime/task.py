"""One task attempt, wherever it runs: load inputs, call the step, store outputs, measure, capture."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
import pickle
import socket
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pipetrail.core.model import ArtifactRecord
from pipetrail.core.status import TaskStatus
from pipetrail.dsl import Pipeline, Step
from pipetrail.errors import PipelineLoadError, SerializationError
from pipetrail.provenance.code import code_archive
from pipetrail.provenance.resources import ResourceMeter
from pipetrail.runtime.context import MetricBuffer, StepContext, activate, content_type_of
from pipetrail.runtime.spool import LogTail, TaskSpool
from pipetrail.runtime.starts import StartMarker
from pipetrail.storage.artifacts.cas import ContentAddressedStore
from pipetrail.storage.artifacts.serializers import (
    SerializerRegistry,
    dump_to_store,
    load_from_store,
)
from pipetrail.storage.metadata.base import MetadataStore, MetricRow, NewLink, TaskOutcome

__all__ = ["InputRef", "TaskPayload", "TaskServices", "execute_task"]

#: This host's name, recorded on every task it runs (asked once per process).
_HOST = socket.gethostname()

_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)


@dataclass(frozen=True)
class InputRef:
    """Upstream artifacts an argument consumes, passed by hash (never by value).

    Attributes:
        arg: the step's argument.
        name: the upstream step or output name.
        items: (artifact, producing task id) pairs; one, or one per task of a foreach producer.
        gather: pass the list of all items (a foreach producer) instead of the single item.
        pick: with a foreach over this input, the element this task gets.
    """

    arg: str
    name: str
    items: tuple[tuple[ArtifactRecord, int], ...]
    gather: bool = False
    pick: int | None = None


@dataclass(frozen=True)
class TaskPayload:
    """Everything a worker needs to run one task attempt; small and picklable.

    ``params`` holds the run's parameter values pickled, so that values of classes defined in
    the pipeline file are unpickled only after the worker has imported that file.
    """

    pipeline: str
    pipeline_file: str | None
    version: str
    step: str
    run_id: int
    task_id: int
    task_index: int
    attempt: int
    params: bytes
    variables: dict[str, str]
    inputs: tuple[InputRef, ...] = ()
    capture_fds: bool = False
    #: A foreach over a list parameter: this parameter's element ``task_index`` is passed.
    foreach_param: str | None = None
    #: The runner's lease on the run: the task's writes are fenced by it.
    lease: int | None = None
    #: Write ``running`` only if the step is still running after a moment (runtime.starts);
    #: its end then records its whole route. For tasks run in the runner's own process.
    defer_start: bool = False
    #: Hand the last drain of the spool over with the outcome (``TaskOutcome.final``) instead
    #: of storing it: the runner stores it with the task's end. For executors sharing the
    #: runner's spool folder.
    hand_over: bool = False


@dataclass
class TaskServices:
    """The stores a task writes to, built once per process.

    Attributes:
        spool_root: the local folder of task spools (metrics, events and output on their
            way to the store; see runtime.spool).
    """

    store: MetadataStore
    cas: ContentAddressedStore
    registry: SerializerRegistry
    spool_root: Path
    #: The executor's worker these services run in, recorded on each task (a Dask worker's
    #: address); None where the host and pid say it all.
    worker: str | None = None
    #: Seconds between the task's system metrics samples (``system/...``); 0 turns them off.
    system_metrics_s: float = 5.0
    _starts: StartMarker | None = field(default=None, init=False, repr=False, compare=False)

    def starts(self) -> StartMarker:
        """The process's marker of deferred starts over this store (made on first use)."""
        if self._starts is None:
            self._starts = StartMarker(self.store)
        return self._starts


def execute_task(payload: TaskPayload, services: TaskServices, pipeline: Pipeline) -> TaskOutcome:
    """Run one attempt of one step and return how it ended; never raises for user errors.

    The task is marked ``running`` (committed) before user code starts, or, with
    ``payload.defer_start``, once it has run for a moment (see runtime.starts). Metrics go to
    the store as they are flushed; outputs and logged files to the artifact store. The caller records the
    returned outcome.
    """
    if pipeline.version != payload.version:
        raise PipelineLoadError(
            f"{payload.pipeline_file} changed while run {payload.run_id} was running "
            f"(version {payload.version} when it started, {pipeline.version} now); the task "
            "would run code other than the code recorded, so it is not run"
        )
    step = pipeline.steps[payload.step]
    run_params: dict[str, Any] = pickle.loads(payload.params)
    if payload.lease is not None:
        services.store.hold(payload.run_id, payload.lease)
    start = (_HOST, os.getpid(), services.worker)
    if payload.defer_start:
        services.starts().begin(payload.task_id, datetime.now(UTC), *start)
    else:
        services.store.set_task_status(
            payload.task_id, TaskStatus.RUNNING, host=start[0], pid=start[1], worker=start[2]
        )
    try:
        spool = TaskSpool.open(services.spool_root, payload.run_id, payload.task_id)
        buffer = MetricBuffer(
            services.store.record_spool,
            run_id=payload.run_id,
            task_id=payload.task_id,
            spool=spool,
            logs=LogTail(spool.folder),
        )
        try:
            outcome = _execute(payload, services, pipeline, step, run_params, spool, buffer)
        except BaseException:
            # Interrupted (a cancel in this process): the spool stays for salvage() to drain.
            buffer.detach()
            spool.close()
            raise
    finally:
        written = payload.defer_start and services.starts().settle(payload.task_id)
    if not payload.defer_start or written:
        return dataclasses.replace(outcome, recorded=TaskStatus.RUNNING)
    return dataclasses.replace(outcome, recorded=TaskStatus.INITIAL, start=start)


def _execute(
    payload: TaskPayload,
    services: TaskServices,
    pipeline: Pipeline,
    step: Step,
    run_params: dict[str, Any],
    spool: TaskSpool,
    buffer: MetricBuffer,
) -> TaskOutcome:
    context = StepContext(
        pipeline=payload.pipeline,
        run_id=payload.run_id,
        step=payload.step,
        task_id=payload.task_id,
        task_index=payload.task_index,
        attempt=payload.attempt,
        params=run_params,
        variables=payload.variables,
        metrics=buffer,
        store_value=lambda value: _store_value(services, value),
        store_file=lambda path: _store_path(services, path),
        digest_path=lambda path: _digest_path(services, path),
    )
    links: list[NewLink] = [
        NewLink("input", i.name, "upstream", record, producer_task_id=producer)
        for i in payload.inputs
        for record, producer in i.items
    ]
    error: BaseException | None = None
    result: Any = None
    capture = _FdCapture(spool) if payload.capture_fds else _StreamCapture(spool)
    meter = ResourceMeter(
        system_metrics_s=services.system_metrics_s,
        on_sample=functools.partial(_record_sample, buffer, payload.run_id, payload.task_id),
    )
    with capture, meter:
        try:
            kwargs = {i.arg: _load_input(services, i) for i in payload.inputs}
            kwargs.update({name: run_params[name] for name in pipeline.spec.step(step.name).params})
            if payload.foreach_param is not None:
                kwargs[payload.foreach_param] = kwargs[payload.foreach_param][payload.task_index]
            with activate(context):
                result = step.func(**kwargs)
        except (Exception, SystemExit) as exc:
            # sys.exit() in a step ends the step, not the run.
            error = exc
    usage = meter.usage
    if error is None:
        try:
            links.extend(_store_outputs(services, step.name, step.outputs, result))
        except Exception as exc:  # a full disk must not lose what the task recorded
            error = exc
    spool_kept = False
    final = None
    try:
        final = buffer.close(hand_over=payload.hand_over)
    except Exception as exc:  # kept in the spool: the runner salvages it
        error = error or exc
        spool_kept = True
        spool.close()
    else:
        if final is None:
            spool.remove()
        else:
            spool.close()  # deleted once its last drain is stored, with the task's end
    links.extend(context.links)
    status = TaskStatus.COMPLETED if error is None else TaskStatus.FAILED
    exc_type = exc_message = tb = None
    if error is not None:
        exc_type = type(error).__qualname__
        if type(error).__module__ not in ("builtins", "__main__"):
            exc_type = f"{type(error).__module__}.{exc_type}"
        exc_message = str(error)
        # A value that cannot be stored is pipetrail's finding, not a frame of user code.
        tb = None if isinstance(error, SerializationError) else _user_traceback(error)
    return TaskOutcome(
        retryable=error is not None and isinstance(error, step.retry_on),
        allowed_failure=error is not None and step.allow_failure,
        status=status,
        started_at=usage.started_at,
        finished_at=usage.finished_at,
        cpu_time_s=usage.cpu_time_s,
        peak_memory_bytes=usage.peak_rss_bytes,
        gpu_peak_memory_bytes=usage.gpu_peak_memory_bytes,
        gpu_time_s=usage.gpu_time_s,
        exception_type=exc_type,
        exception_message=exc_message,
        traceback=tb,
        links=tuple(links),
        tags=tuple(context.tags),
        spool_kept=spool_kept,
        final=final,
    )


def _record_sample(
    buffer: MetricBuffer, run_id: int, task_id: int, at: float, values: Mapping[str, float]
) -> None:
    """A system sample, as metric points of the task: spooled and drained like its own."""
    buffer.extend(
        [MetricRow(run_id, task_id, name, value, None, at) for name, value in values.items()]
    )


def _load_input(services: TaskServices, ref: InputRef) -> Any:
    values = [
        load_from_store(services.cas, record.key, record.serializer, services.registry)
        for record, _ in ref.items
    ]
    if ref.gather:
        return values
    value: Any = values[0] if values else None
    if ref.pick is not None:
        return value[ref.pick]
    return value


def _store_outputs(
    services: TaskServices, step: str, names: tuple[str, ...], result: Any
) -> list[NewLink]:
    if not names:
        return [NewLink("output", step, "output", _store_named(services, step, step, result))]
    if isinstance(result, dict):
        missing = [n for n in names if n not in result]
        if missing or len(result) != len(names):
            raise SerializationError(
                f"step {step!r} declares outputs {list(names)} but returned a dict with keys "
                f"{sorted(map(str, result))}"
            )
        values = [result[n] for n in names]
    elif isinstance(result, (tuple, list)) and len(result) == len(names):
        values = list(result)
    else:
        size = len(result) if isinstance(result, (tuple, list)) else "not a tuple"
        raise SerializationError(
            f"step {step!r} declares {len(names)} outputs {list(names)} but returned "
            f"{type(result).__name__} ({size}); return a tuple of {len(names)} values or a dict"
        )
    return [
        NewLink("output", name, "output", _store_named(services, step, name, value))
        for name, value in zip(names, values, strict=True)
    ]


def _store_named(services: TaskServices, step: str, name: str, value: Any) -> ArtifactRecord:
    try:
        return _store_value(services, value)
    except SerializationError as exc:
        raise SerializationError(
            f"step {step!r}: output {name!r} of type {type(value).__name__!r} cannot be stored: {exc}"
        ) from exc


def _store_value(services: TaskServices, value: Any) -> ArtifactRecord:
    stored = dump_to_store(services.cas, value, services.registry)
    return ArtifactRecord(
        stored.key, stored.size, stored.serializer, stored.content_type, stored.type_name
    )


def _store_path(services: TaskServices, path: Path) -> ArtifactRecord:

    if path.is_dir():
        files = {str(p.relative_to(path)): p for p in sorted(path.rglob("*")) if p.is_file()}
        archive = code_archive(files, path)
        put = services.cas.put_bytes(archive)
        return ArtifactRecord(put.key, put.size, "archive", "application/gzip", "directory")
    put = services.cas.put_file(path)
    return ArtifactRecord(put.key, put.size, "file", content_type_of(path), "file")


def _digest_path(services: TaskServices, path: Path) -> tuple[str, int]:
    if path.is_dir():
        return services.cas.digest_tree(path)
    return services.cas.digest_file(path)


def _user_traceback(error: BaseException) -> str:
    """The traceback without pipetrail's own frames, so it starts at the user's code."""
    exc = traceback.TracebackException.from_exception(error)
    stack = exc.stack
    kept = [f for f in stack if not f.filename.startswith(_PACKAGE_DIR)]
    exc.stack = traceback.StackSummary.from_list(kept or list(stack))
    return "".join(exc.format())


class _StreamCapture:
    """Captures ``sys.stdout``/``sys.stderr`` writes (in-process executor), still showing them.

    Each write goes to the task's spool at once (so it is kept if the process dies, and read
    into the store while the task runs) and on to the terminal, so ``print`` debugging and
    ``breakpoint()`` work.
    """

    def __init__(self, spool: TaskSpool) -> None:
        self._spool = spool

    def __enter__(self) -> _StreamCapture:
        self._saved = (sys.stdout, sys.stderr)
        self._tees = (
            _Tee(self._spool, self._spool.stdout_path, self._saved[0]),
            _Tee(self._spool, self._spool.stderr_path, self._saved[1]),
        )
        sys.stdout, sys.stderr = self._tees
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout, sys.stderr = self._saved
        for tee in self._tees:
            tee.close_file()


def _open_log(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


class _Tee(io.TextIOBase):
    """A text stream that writes to a spool file (unbuffered) and passes everything on.

    The file is opened on the first write, so a step that prints nothing makes no file.
    """

    def __init__(self, spool: TaskSpool, path: Path, passthrough: TextIO) -> None:
        self._spool = spool
        self._path = path
        self._fd = -1
        self._passthrough = passthrough

    def write(self, text: str) -> int:
        data = text.encode("utf-8", errors="replace")
        if data and self._fd < 0:
            self._spool.ensure_folder()
            self._fd = _open_log(self._path)
        while data:
            data = data[os.write(self._fd, data) :]
        return self._passthrough.write(text)

    def close_file(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def flush(self) -> None:
        self._passthrough.flush()

    def isatty(self) -> bool:
        return self._passthrough.isatty()

    def fileno(self) -> int:
        return self._passthrough.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._passthrough, "encoding", "utf-8") or "utf-8"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._passthrough, name)


class _FdCapture:
    """Points file descriptors 1 and 2 at the task's spool, so output of C code is kept too.

    Python's own ``sys.stdout`` is line-buffered meanwhile: a printed line reaches the spool
    (and survives the worker) when it is printed, not when a buffer fills.
    """

    def __init__(self, spool: TaskSpool) -> None:
        self._spool = spool

    def __enter__(self) -> _FdCapture:
        self._streams: list[TextIO] = [sys.stdout, sys.stderr]
        for stream in self._streams:
            with contextlib.suppress(Exception):
                stream.flush()
        self._buffering = [getattr(s, "line_buffering", False) for s in self._streams]
        for stream in self._streams:
            with contextlib.suppress(Exception):
                stream.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
        self._spool.ensure_folder()
        files = [_open_log(self._spool.stdout_path), _open_log(self._spool.stderr_path)]
        self._saved = [os.dup(1), os.dup(2)]
        os.dup2(files[0], 1)
        os.dup2(files[1], 2)
        for fd in files:
            os.close(fd)
        return self

    def __exit__(self, *exc: object) -> None:
        for stream in self._streams:
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)
        for stream, buffering in zip(self._streams, self._buffering, strict=True):
            with contextlib.suppress(Exception):
                stream.reconfigure(line_buffering=buffering)  # type: ignore[attr-defined]
