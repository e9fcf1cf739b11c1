"""One task attempt, wherever it runs: load inputs, call the step, store outputs, measure, capture."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import socket
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pipetrail.core.model import ArtifactRecord
from pipetrail.core.status import TaskStatus
from pipetrail.dsl import Pipeline
from pipetrail.errors import PipelineLoadError, SerializationError
from pipetrail.provenance.code import code_archive
from pipetrail.provenance.resources import ResourceMeter
from pipetrail.runtime.context import MetricBuffer, StepContext, activate, content_type_of
from pipetrail.storage.artifacts.cas import ContentAddressedStore
from pipetrail.storage.artifacts.serializers import (
    SerializerRegistry,
    dump_to_store,
    load_from_store,
)
from pipetrail.storage.metadata.base import MetadataStore, NewLink, TaskOutcome

__all__ = ["InputRef", "TaskPayload", "TaskServices", "execute_task"]

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


@dataclass
class TaskServices:
    """The stores a task writes to, built once per process."""

    store: MetadataStore
    cas: ContentAddressedStore
    registry: SerializerRegistry


def execute_task(payload: TaskPayload, services: TaskServices, pipeline: Pipeline) -> TaskOutcome:
    """Run one attempt of one step and return how it ended; never raises for user errors.

    The task is marked ``running`` (committed) before user code starts. Metrics go to the store
    as they are flushed; outputs and logged files to the artifact store. The caller records the
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
    services.store.set_task_status(
        payload.task_id, TaskStatus.RUNNING, host=socket.gethostname(), pid=os.getpid()
    )
    buffer = MetricBuffer(services.store.add_metrics)
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
    capture = _FdCapture() if payload.capture_fds else _StreamCapture()
    meter = ResourceMeter()
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
    try:
        buffer.close()
    except Exception as exc:
        error = error or exc
    if error is None:
        try:
            links.extend(_store_outputs(services, step.name, step.outputs, result))
        except Exception as exc:  # a full disk must not lose what the task recorded
            error = exc
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
        exception_type=exc_type,
        exception_message=exc_message,
        traceback=tb,
        stdout=capture.stdout,
        stderr=capture.stderr,
        links=tuple(links),
        tags=tuple(context.tags),
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

    Output also goes on to the terminal, so ``print`` debugging and ``breakpoint()`` work.
    """

    def __init__(self) -> None:
        self._out = io.StringIO()
        self._err = io.StringIO()
        self.stdout = ""
        self.stderr = ""

    def __enter__(self) -> _StreamCapture:
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = _Tee(self._out, self._saved[0])
        sys.stderr = _Tee(self._err, self._saved[1])
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout, sys.stderr = self._saved
        self.stdout = self._out.getvalue()
        self.stderr = self._err.getvalue()


class _Tee(io.TextIOBase):
    """A text stream that writes to a buffer and passes everything on."""

    def __init__(self, buffer: io.StringIO, passthrough: TextIO) -> None:
        self._buffer = buffer
        self._passthrough = passthrough

    def write(self, text: str) -> int:
        self._buffer.write(text)
        return self._passthrough.write(text)

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
    """Captures file descriptors 1 and 2, so output of C code and subprocesses is kept too."""

    def __init__(self) -> None:
        self.stdout = ""
        self.stderr = ""

    def __enter__(self) -> _FdCapture:
        self._files = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
        self._streams: list[TextIO] = [sys.stdout, sys.stderr]
        for stream in self._streams:
            with contextlib.suppress(Exception):
                stream.flush()
        self._saved = [os.dup(1), os.dup(2)]
        os.dup2(self._files[0].fileno(), 1)
        os.dup2(self._files[1].fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        for stream in self._streams:
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)
        texts = []
        for handle in self._files:
            handle.seek(0)
            texts.append(handle.read().decode("utf-8", errors="replace"))
            handle.close()
        self.stdout, self.stderr = texts
