"""What a step sees while it runs: ``current`` and the ``log_*`` functions, backed by a StepContext."""

from __future__ import annotations

import contextlib
import math
import mimetypes
import numbers
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipetrail.core.ids import validate_user_tags
from pipetrail.core.model import ArtifactRecord
from pipetrail.errors import LeaseLostError, UsageError
from pipetrail.runtime.spool import LogTail, TaskSpool, link_event, tag_event
from pipetrail.storage.metadata.base import MetricRow, NewLink, SpoolBatch

__all__ = [
    "BACKLOG",
    "ArtifactRef",
    "Current",
    "MetricBuffer",
    "StepContext",
    "activate",
    "content_type_of",
    "current",
    "log_artifact",
    "log_input",
    "log_metric",
    "log_metrics",
    "set_tag",
]


@dataclass(frozen=True)
class ArtifactRef:
    """What ``log_artifact`` and ``log_input`` return: the name and content hash recorded."""

    name: str
    key: str
    size: int


class MetricBuffer:
    """A task's recorder: metric points and events to its spool, then to the store in batches.

    A point goes into the task's spool (on local disk, so it survives the process) and nowhere
    else: the process's drain thread reads the points back out of the spool and writes them,
    with the log output the task printed meanwhile (``logs``), every ``interval`` seconds or at
    once when ``batch`` points are waiting. The task flushes at its end, so a step that raises
    still has every point it logged in the store. Before ``BACKLOG`` batches wait the logging
    thread writes itself, so a step cannot outrun the store without bound.

    Args:
        write: stores one batch (the metadata store's ``record_spool``).
        run_id: the task's run.
        task_id: the task.
        spool: the task's spool file; None keeps points in memory only (tests).
        logs: reads the task's captured output as it grows.
    """

    def __init__(
        self,
        write: Callable[[SpoolBatch], None],
        *,
        run_id: int = 0,
        task_id: int = 0,
        spool: TaskSpool | None = None,
        logs: LogTail | None = None,
        interval: float = 0.5,
        batch: int = 10_000,
    ) -> None:
        self._write = write
        self._run_id = run_id
        self._task_id = task_id
        self._spooled = spool is not None
        self._spool = spool if spool is not None else TaskSpool(Path(), in_memory=True)
        self._logs = logs
        self.interval = interval
        self._batch = batch
        self._flush_lock = threading.Lock()
        self._closed = False
        #: Slots of the spool stored so far, and the spool offset that was stored with them.
        self._stored = 0
        self._stored_offset = 0
        self._spool.due = batch - 1
        self._spool.on_due = self._pressure
        #: Append one checked point / one checked call's points: the spool's own methods, so a
        #: point costs no frame of this class.
        self.point = self._spool.point
        self.points = self._spool.points
        #: The names of the last ``log_metrics`` call and their numbers in the spool: a loop
        #: logging the same dict at every step checks and numbers its names once.
        self.keyset: tuple[tuple[Any, ...], list[int]] = ((), [])
        #: Set once the run was taken from this process: nothing more is written.
        self.fenced = False
        _drainer.register(self)

    @property
    def pending(self) -> int:
        """Points logged and not yet stored."""
        return self._spool.slots() - self._stored

    def name_ids(self, names: tuple[str, ...]) -> list[int]:
        """The spool numbers of checked names (numbered the first time), cached as ``keyset``."""
        ids = [self._spool.name_id(name) for name in names]
        self.keyset = (names, ids)  # one assignment: another thread sees old or new, whole
        return ids

    def add(self, row: MetricRow) -> None:
        """Append one point given as a row (its run and task are this buffer's)."""
        self.point(row.name, row.value, row.step, row.timestamp)

    def extend(self, rows: Sequence[MetricRow]) -> None:
        for row in rows:
            self.point(row.name, row.value, row.step, row.timestamp)

    def event(self, doc: dict[str, Any]) -> None:
        """Spool an event (an artifact logged, a tag set) so it survives the process."""
        if self._spooled:
            self._spool.event(doc)

    def _pressure(self, slot: int) -> None:
        # Called by a logging thread once per ``batch`` points: writing itself past BACKLOG
        # batches waiting, it never lets more wait.
        self._spool.due = slot + self._batch
        if slot + 1 - self._stored > BACKLOG * self._batch:
            self.flush()
        else:
            _drainer.wake()

    def flush(self, *, final: bool = False) -> None:
        """Write everything waiting now (points in the order logged, and new output).

        If a write fails its points stay in the spool and its output is given back, for the
        next flush.
        """
        with self._flush_lock:
            while not self.fenced:
                batch, end = self._next(_MOST_PER_WRITE, final=final)
                if batch is None:
                    return
                try:
                    self._write(batch)
                except LeaseLostError:
                    self.fenced = True
                    raise
                except BaseException:
                    if self._logs is not None:
                        self._logs.restore(batch.logs)
                    raise
                self._stored = end
                self._stored_offset = batch.offset or 0
                self._spool.forget(end)
                if len(batch.metrics) < _MOST_PER_WRITE:
                    return

    def _next(self, most: int, *, final: bool) -> tuple[SpoolBatch | None, int]:
        """The next batch to store (at most ``most`` points, the output so far) and the slot
        after its last point; None when there is nothing new."""
        points, end = self._spool.take(self._stored, most)
        points.run_id, points.task_id = self._run_id, self._task_id
        offset = end << 5 if self._spooled else None
        logs = self._logs.take(final=final) if self._logs is not None else []
        if not len(points) and not logs and offset in (None, self._stored_offset):
            return None, end
        return SpoolBatch(self._run_id, self._task_id, points, offset, logs), end

    def close(self, *, hand_over: bool = False) -> SpoolBatch | None:
        """Write what is left (the output too, to its last byte); raise what a write raised.

        With ``hand_over``, what is left is returned instead of written when it is small (at
        most :data:`HAND_OVER_POINTS` points and :data:`HAND_OVER_BYTES` bytes of output), for
        the caller to store with the task's end; None when it wrote it, or nothing was left.
        """
        self._closed = True
        _drainer.unregister(self)
        if hand_over and not self.fenced:
            with self._flush_lock:
                last = self._last_batch()
            if last is not None:
                return last
        self.flush(final=True)
        return None

    def _last_batch(self) -> SpoolBatch | None:
        """What is left to store, if small enough to hand over (else None: it is flushed)."""
        batch, end = self._next(HAND_OVER_POINTS + 1, final=True)
        if batch is None:
            return None
        too_big = len(batch.metrics) > HAND_OVER_POINTS or end < self._spool.slots()
        if too_big or sum(chunk.size for chunk in batch.logs) > HAND_OVER_BYTES:
            if self._logs is not None:
                self._logs.restore(batch.logs)
            return None
        return batch

    def detach(self) -> None:
        """Stop draining without writing (the task was interrupted: its spool is salvaged)."""
        self._closed = True
        _drainer.unregister(self)
        with self._flush_lock:  # a drain under way finishes first
            pass

    def _drain(self) -> None:
        if self._closed or self.fenced:
            return
        # A failed write keeps its points in the spool; the final flush (close) tries again
        # and raises to the task if the store is still away.
        with contextlib.suppress(Exception):
            self.flush()


#: Most points in one write (one transaction): bounds what a drain holds in memory at once.
_MOST_PER_WRITE = 50_000
#: Batches waiting (in the spool's pages, 32 bytes a point) before the logging thread writes
#: itself. A write takes a few statements whatever its size, but each hands the GIL back and
#: forth with a busy logging thread (up to the switch interval, 5 ms, every time), so a drain
#: takes tens of milliseconds of wall time while costing a few of CPU: a backlog of a few
#: batches would stop the logging thread to wait for it.
BACKLOG = 16
#: The most a task's last drain holds to be handed over with its outcome (it may cross a
#: process boundary); more is written by the task itself.
HAND_OVER_POINTS = 5_000
HAND_OVER_BYTES = 256 * 1024


class _Drainer:
    """One thread per process that drains every open task's buffer on its timer."""

    def __init__(self) -> None:
        self._buffers: dict[MetricBuffer, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def register(self, buffer: MetricBuffer) -> None:
        with self._lock:
            self._buffers[buffer] = time.monotonic() + buffer.interval
            if self._thread is None or self._pid != os.getpid():
                # Started once per process (again in a child that was forked with it).
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._loop, name="pipetrail-drain", daemon=True
                )
                self._thread.start()

    def unregister(self, buffer: MetricBuffer) -> None:
        with self._lock:
            self._buffers.pop(buffer, None)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while True:
            with self._lock:
                due = min(self._buffers.values(), default=time.monotonic() + 0.5)
            woken = self._wake.wait(max(0.0, due - time.monotonic()))
            self._wake.clear()
            now = time.monotonic()
            with self._lock:
                ready = [b for b, at in self._buffers.items() if woken or at <= now]
                for b in ready:
                    self._buffers[b] = now + b.interval
            for buffer in ready:
                buffer._drain()


_drainer = _Drainer()


@dataclass
class StepContext:
    """The state of one running task; created by the runtime, read through ``current``."""

    pipeline: str
    run_id: int
    step: str
    task_id: int
    task_index: int
    attempt: int
    params: Mapping[str, Any]
    variables: Mapping[str, str]
    metrics: MetricBuffer
    store_value: Callable[[Any], ArtifactRecord]
    store_file: Callable[[Path], ArtifactRecord]
    digest_path: Callable[[Path], tuple[str, int]]
    links: list[NewLink] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    @property
    def pathspec(self) -> str:
        return f"{self.pipeline}/{self.run_id}/{self.step}/{self.task_index}"

    @property
    def run_pathspec(self) -> str:
        return f"{self.pipeline}/{self.run_id}"


_active: ContextVar[StepContext | None] = ContextVar("pipetrail_step", default=None)
# Threads a step starts do not inherit context variables; while exactly one task runs in this
# process (always, in a worker), they find it here.
_process_tasks: list[StepContext] = []


class activate:
    """Make ``context`` the one ``current`` and the ``log_*`` functions use, inside a ``with``."""

    def __init__(self, context: StepContext) -> None:
        self._context = context

    def __enter__(self) -> StepContext:
        self._token = _active.set(self._context)
        _process_tasks.append(self._context)
        return self._context

    def __exit__(self, *exc: object) -> None:
        _active.reset(self._token)
        _process_tasks.remove(self._context)


def _context(what: str) -> StepContext:
    context = _active.get()
    if context is None and len(_process_tasks) == 1:
        context = _process_tasks[0]
    if context is None:
        raise UsageError(
            f"pipetrail.{what} was called outside a running step; call it from inside a "
            "@pt.step function while the pipeline runs"
        )
    return context


class Current:
    """``pt.current``: the run id, pathspec, step, attempt, parameters and variables of this task."""

    @property
    def is_running(self) -> bool:
        """Whether code is running inside a pipetrail step."""
        return _active.get() is not None

    @property
    def pipeline_name(self) -> str:
        return _context("current.pipeline_name").pipeline

    @property
    def run_id(self) -> int:
        return _context("current.run_id").run_id

    @property
    def pathspec(self) -> str:
        """``pipeline/run/step/task`` of the running task."""
        return _context("current.pathspec").pathspec

    @property
    def run_pathspec(self) -> str:
        return _context("current.run_pathspec").run_pathspec

    @property
    def step_name(self) -> str:
        return _context("current.step_name").step

    @property
    def task_id(self) -> int:
        return _context("current.task_id").task_index

    @property
    def attempt(self) -> int:
        return _context("current.attempt").attempt

    @property
    def params(self) -> Mapping[str, Any]:
        """Every parameter of the run, resolved."""
        return _context("current.params").params

    @property
    def vars(self) -> Mapping[str, str]:
        """The run's runtime variables (``--var k=v``)."""
        return _context("current.vars").variables

    def __repr__(self) -> str:
        context = _active.get()
        return f"<current {context.pathspec}>" if context else "<current: not in a step>"


current = Current()


def log_metric(name: str, value: float, step: int | None = None) -> None:
    """Record one point of the metric series ``name`` (``step`` is an epoch/iteration number).

    Raises:
        UsageError: outside a step, for an empty name or a value that is not a real number.
    """
    context = _active.get() or _context("log_metric")
    if (
        type(value) is float
        and (step is None or (type(step) is int and -_STEP_LIMIT <= step < _STEP_LIMIT))
        and type(name) is str
        and 0 < len(name) <= 250
        and math.isfinite(value)
    ):
        # The common case, checked inline: this runs once per point logged.
        context.metrics.point(name, value, step, time.time())
    else:
        step = _step(name, step)
        context.metrics.point(_name(name), _value(name, value), step, time.time())


def log_metrics(values: Mapping[str, float], step: int | None = None) -> None:
    """Record one point of each metric in ``values`` at the same ``step`` and time.

    Every point is checked before any is kept: a bad one raises and none of the call's is.
    """
    context = _active.get() or _context("log_metrics")
    buffer = context.metrics
    names = tuple(values)
    numbers = list(values.values())
    if step is not None and (type(step) is not int or not -_STEP_LIMIT <= step < _STEP_LIMIT):
        step = _step(names[0] if names else "", step)
    # The common case in C: only floats, all finite (a sum of finite floats is finite or
    # overflows; an infinity or a NaN among them makes it infinite or NaN).
    if not (_FLOATS.issuperset(map(type, numbers)) and math.isfinite(sum(numbers))):
        numbers = [_value(name, value) for name, value in zip(names, numbers, strict=True)]
    known, ids = buffer.keyset
    if names != known:
        ids = buffer.name_ids(tuple(_name(name) for name in names))
    buffer.points(ids, numbers, step, time.time())


_STEP_LIMIT = 1 << 63
_FLOATS = frozenset([float])


def _name(name: Any) -> str:
    if type(name) is not str or not name or len(name) > 250:
        raise UsageError(
            f"metric name must be a non-empty string of at most 250 characters, got {name!r}"
        )
    return name


def _value(name: str, value: Any) -> float:
    # The common case (a float or int value) is checked by exact type: ABC checks such as
    # numbers.Real cost more than the rest.
    kind = type(value)
    try:
        number = float(value) if kind is float or kind is int else _number(name, value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise UsageError(f"metric {name!r}: value must be a finite number, got {value!r}")
    return number


def _step(name: str, step: Any) -> int | None:
    if step is None:
        return None
    if type(step) is not int:
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise UsageError(f"metric {name!r}: step must be an integer, got {step!r}")
        step = int(step)
    if not -_STEP_LIMIT <= step < _STEP_LIMIT:
        raise UsageError(f"metric {name!r}: step must fit in 64 bits, got {step!r}")
    return int(step)


def _number(name: str, value: Any) -> float:
    if isinstance(value, (str, bytes, bool)):
        raise UsageError(
            f"metric {name!r}: value must be a number, got {type(value).__name__} {value!r}"
        )
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UsageError(
            f"metric {name!r}: value must be a number, got {type(value).__name__} {value!r}"
        ) from None


def log_artifact(path_or_object: Any, name: str | None = None) -> ArtifactRef:
    """Store a file (given by path) or a Python value as an artifact of this task.

    Files keep their bytes and get a content type from their extension (a ``.png`` shows as an
    image); values are serialized by type. Identical content is stored once.
    """
    context = _context("log_artifact")
    if isinstance(path_or_object, (str, os.PathLike)):
        path = Path(path_or_object)
        if not path.exists():
            raise UsageError(f"log_artifact: no file or folder at {str(path)!r}")
        record = context.store_file(path)
        artifact_name = name or path.name
        source: str | None = str(path.resolve())
    else:
        record = context.store_value(path_or_object)
        artifact_name = name or f"{context.step}_artifact_{len(context.links)}"
        source = None
    _link(context, NewLink("output", artifact_name, "logged", record, source_uri=source))
    return ArtifactRef(artifact_name, record.key, record.size)


def log_input(path: str | os.PathLike[str], name: str | None = None) -> ArtifactRef:
    """Record an external file or folder this task reads, by content hash, as a lineage input."""
    context = _context("log_input")
    target = Path(path)
    if not target.exists():
        raise UsageError(f"log_input: no file or folder at {str(target)!r}")
    key, size = context.digest_path(target)
    kind = "directory" if target.is_dir() else "file"
    content_type = "inode/directory" if kind == "directory" else content_type_of(target)
    record = ArtifactRecord(key, size, "external", content_type, kind)
    resolved = str(target.resolve())
    _link(context, NewLink("input", name or target.name, "external", record, source_uri=resolved))
    return ArtifactRef(name or target.name, key, size)


def _link(context: StepContext, link: NewLink) -> None:
    context.links.append(link)
    context.metrics.event(link_event(link))


def set_tag(tag: str) -> None:
    """Add a user tag to the run."""
    context = _context("set_tag")
    for valid in validate_user_tags([tag]):
        context.tags.append(valid)
        context.metrics.event(tag_event(valid))


def content_type_of(path: Path) -> str:
    """The media type of a file from its extension (a ``.png`` is ``image/png``)."""
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"
