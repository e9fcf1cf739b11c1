"""The per-task spool: what a step logs goes to local disk first, then to the store in batches.

Each task attempt has a folder under the spool root holding four append-only files:

- ``points``: metric points, one 32-byte slot each in a memory-mapped file. A point is in the
  kernel's page cache once ``log_metric`` returns, so it survives the death of the process
  (SIGKILL, out of memory) with no system call per point.
- ``records``: the metric names the points refer to by number, and events (artifacts logged,
  tags set), framed records in a memory-mapped file.
- ``stdout`` and ``stderr``: the task's captured output, written as it is printed.

While the task runs, its process drains the spool into the store (``MetricBuffer`` with a
``LogTail``): the points come back out of the map, so nothing is held in Python for them in
between. Whoever ends a task that did not end by itself (a killed worker, a cancel, a lost
runner) drains what is left with :func:`salvage`. The store keeps how far each file was drained
(the task's ``spool_offset`` into ``points``, the end of its stored log chunks), so a drain that
is repeated after a crash adds nothing twice.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import mmap
import os
import shutil
import struct
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipetrail.core.model import ArtifactRecord
from pipetrail.storage.metadata.base import (
    LogChunk,
    MetadataStore,
    MetricRow,
    NewLink,
    SpoolBatch,
)
from pipetrail.storage.metadata.points import MetricColumns

__all__ = [
    "LogTail",
    "SpoolContents",
    "TaskSpool",
    "default_spool_root",
    "discard_spool",
    "link_event",
    "read_records",
    "salvage",
    "spool_folder",
    "tag_event",
]

STREAMS = ("stdout", "stderr")

# A record is a 4-byte length, then that many bytes: a kind byte and its payload. The length is
# written last, so a reader never sees a record that was only partly written.
_LENGTH = struct.Struct("<I")
_METRIC = struct.Struct("<BIdqd")  # kind, name id, value, step, timestamp
_NAME = struct.Struct("<BI")  # kind, name id; the UTF-8 name follows
_METRIC_STEP, _METRIC_NO_STEP, _NAME_DEF, _EVENT = 1, 2, 3, 4
# Points in ``records`` as earlier versions wrote them (a spool left by one is still read).
_LEGACY_POINT = struct.Struct("<IBIdqdB")  # length, kind, name id, value, step, timestamp, commit
_LEGACY_BODY = _LEGACY_POINT.size - _LENGTH.size
_POINT_STEP, _POINT_NO_STEP = 5, 6
_COMMIT = 0xA5
#: A point in ``points``: value, timestamp, step, name id, flags, two pad bytes, commit byte.
#: Packed in field order into a zero-filled file, so a point cut short by the death of the
#: process lacks its commit byte and is left out. Native byte order: a spool is read where it
#: was written, and the drain reads the columns back with ``memoryview.cast``.
POINT = struct.Struct("=ddqIBxxB")
_SLOT_SHIFT = 5  # slot number -> byte offset (32-byte slots, never across a page)
_NO_STEP = 1  # flags: the point has no step
# 64 KiB (2,048 points) to start, doubled as it fills: a bigger first allocation costs more
# than a step that logs a handful of points takes to run.
_INITIAL_SIZE = 1 << 16
#: Most bytes of one stream put into one log chunk.
_CHUNK_BYTES = 1 << 20


def spool_folder(root: Path, run_id: int, task_id: int) -> Path:
    """The spool folder of one task attempt."""
    return root / f"{run_id}-{task_id}"


class _Mapped:
    """One growing file mapped into memory (a bytearray when the spool is kept in memory)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.map: mmap.mmap | bytearray = bytearray()
        self.size = 0
        self._fd = -1

    def grow(self, end: int) -> None:
        """Make the file at least ``end`` bytes long (doubling it, 64 KiB to start)."""
        size = max(_INITIAL_SIZE, self.size * 2, end)
        if self.path is None:
            assert isinstance(self.map, bytearray)
            self.map.extend(bytes(size - self.size))
        elif self._fd < 0:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                # Allocated up front (not a sparse file): a full disk fails here, with an error,
                # instead of killing the process with SIGBUS on a later write into the mapping.
                os.posix_fallocate(fd, 0, size)
                self.map = mmap.mmap(fd, size)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        else:
            assert isinstance(self.map, mmap.mmap)
            os.posix_fallocate(self._fd, self.size, size - self.size)
            self.map.resize(size)
        self.size = size

    def forget(self, end: int) -> None:
        """Let the kernel drop this process's pages below ``end`` (they stay in the file)."""
        if isinstance(self.map, mmap.mmap) and end >= mmap.PAGESIZE:
            with contextlib.suppress(OSError, ValueError):
                self.map.madvise(mmap.MADV_DONTNEED, 0, end - end % mmap.PAGESIZE)

    def close(self) -> None:
        if isinstance(self.map, mmap.mmap):
            self.map.close()
            os.close(self._fd)
            self._fd = -1


class TaskSpool:
    """The spool of one task attempt: its points and records files (and its output's paths).

    Safe for several threads logging at once (a step's own threads, the system sampler): a
    point takes its slot from an atomic counter and is one ``struct.pack_into``; only a new
    name, an event and growing the file take a lock.

    Args:
        folder: the task's spool folder.
        in_memory: keep the files in memory (a buffer without a spool, in tests).
    """

    def __init__(self, folder: Path, *, in_memory: bool = False) -> None:
        # Nothing touches the disk until the task logs something: most steps print nothing
        # and log no metric, and for them a spool would be a folder made and removed.
        self.folder = folder
        self.stdout_path = folder / "stdout"
        self.stderr_path = folder / "stderr"
        self._in_memory = in_memory
        self._made = False
        self._points = _Mapped(None if in_memory else folder / "points")
        self._records = _Mapped(None if in_memory else folder / "records")
        # The points file, read on every point: kept as plain attributes, not via _points.
        self._map = self._points.map
        self._size = 0
        self._slots = itertools.count()
        self._record_pos = 0
        #: name -> its number in the points; and the names by number (0 is no name).
        self.names: dict[str, int] = {}
        self._id_names: list[str] = [""]
        self._lock = threading.Lock()
        self._closed = False
        #: Called with a point's slot once a point reaches slot ``due`` (the drain's batch).
        self.due = 1 << 62
        self.on_due: Any = None

    def ensure_folder(self) -> Path:
        """The spool folder, made if it is not there yet (before a stream is written into it)."""
        if not self._made and not self._in_memory:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._made = True
        return self.folder

    @classmethod
    def open(cls, root: Path, run_id: int, task_id: int) -> TaskSpool:
        return cls(spool_folder(root, run_id, task_id))

    @property
    def position(self) -> int:
        """Bytes of the points file taken by points so far (the end of the last one)."""
        return self.slots() << _SLOT_SHIFT

    def slots(self) -> int:
        """How many point slots were handed out (the last may still be being written)."""
        return int(self._slots.__reduce__()[1][0])

    def point(self, name: str, value: float, step: int | None, timestamp: float) -> None:
        """Append one checked point: a slot from the counter, one ``pack_into`` into it."""
        name_id = self.names.get(name)
        if name_id is None:
            name_id = self._define(name)
        slot = next(self._slots)
        pos = slot << _SLOT_SHIFT
        if pos >= self._size:
            self._grow(pos)
        if step is None:
            _pack(self._map, pos, value, timestamp, 0, name_id, _NO_STEP, _COMMIT)
        else:
            _pack(self._map, pos, value, timestamp, step, name_id, 0, _COMMIT)
        if slot >= self.due:
            self.on_due(slot)

    def points(
        self, ids: Sequence[int], values: Sequence[float], step: int | None, timestamp: float
    ) -> None:
        """Append the checked points of one ``log_metrics`` call (names already numbered by
        :meth:`name_id`), in consecutive slots."""
        count = len(ids)
        if not count:
            return
        # islice over the counter runs in C without releasing the GIL: the slots are
        # consecutive even with other threads logging.
        first = next(itertools.islice(self._slots, count - 1, None)) - count + 1
        pos = first << _SLOT_SHIFT
        end = pos + (count << _SLOT_SHIFT)
        if end > self._size:
            self._grow(end - POINT.size)
        target = self._map
        flags, stored_step = (_NO_STEP, 0) if step is None else (0, step)
        for name_id, value in zip(ids, values, strict=True):
            _pack(target, pos, value, timestamp, stored_step, name_id, flags, _COMMIT)
            pos += POINT.size
        if first + count > self.due:
            self.on_due(first + count - 1)

    def name_id(self, name: str) -> int:
        """The number points of ``name`` carry (defined in the records file the first time)."""
        name_id = self.names.get(name)
        return self._define(name) if name_id is None else name_id

    def metric(self, row: MetricRow) -> None:
        """Append one metric point (a row as the store takes it; its run and task are this
        spool's)."""
        self.point(row.name, row.value, row.step, row.timestamp)

    def metrics(self, rows: Sequence[MetricRow]) -> None:
        for row in rows:
            self.point(row.name, row.value, row.step, row.timestamp)

    def take(self, start: int, limit: int) -> tuple[MetricColumns, int]:
        """The points from slot ``start`` on (at most ``limit``) and the slot after the last.

        Stops at the first slot not yet committed (another thread is still writing it): what
        follows it comes with the next take, so the points come out in slot order, each once.
        """
        end = min(self.slots(), start + limit)
        columns = MetricColumns(0, 0)
        if end <= start:
            return columns, start
        data = self._map[start << _SLOT_SHIFT : end << _SLOT_SHIFT]
        commits = data[POINT.size - 1 :: POINT.size]
        whole = len(commits) - len(commits.lstrip(bytes([_COMMIT])))
        if len(data) != whole << _SLOT_SHIFT:
            data = data[: whole << _SLOT_SHIFT]
        _columns(data, self._id_names, columns)
        return columns, start + whole

    def forget(self, slot: int) -> None:
        """Points before ``slot`` are in the store: their pages may leave this process's memory."""
        self._points.forget(slot << _SLOT_SHIFT)

    def event(self, doc: dict[str, Any]) -> None:
        """Append one event (an artifact logged, a tag set) as JSON."""
        with self._lock:
            self._append(bytes([_EVENT]) + json.dumps(doc, separators=(",", ":")).encode())

    def _define(self, name: str) -> int:
        with self._lock:
            name_id = self.names.get(name)
            if name_id is None:
                name_id = len(self._id_names)
                self._append(_NAME.pack(_NAME_DEF, name_id) + name.encode())
                self._id_names.append(name)
                self.names[name] = name_id  # last: the number is used once it is here
        return name_id

    def _append(self, payload: bytes) -> None:
        # Under self._lock.
        need = 4 + len(payload)
        records = self._records
        if self._record_pos + need > records.size:
            self.ensure_folder()
            records.grow(self._record_pos + need)
        start = self._record_pos + 4
        records.map[start : start + len(payload)] = payload
        _LENGTH.pack_into(records.map, self._record_pos, len(payload))
        self._record_pos += need

    def _grow(self, pos: int) -> None:
        """Room for a point at byte ``pos``; other threads keep writing below the old end."""
        with self._lock:
            if pos < self._points.size:
                return
            self.ensure_folder()
            self._points.grow(pos + POINT.size)
            self._map = self._points.map
            self._size = self._points.size

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._points.close()
            self._records.close()

    def remove(self) -> None:
        """Close and delete the folder: everything in it is in the store."""
        self.close()
        if self._made:
            shutil.rmtree(self.folder, ignore_errors=True)


_pack = POINT.pack_into


def _columns(data: bytes | bytearray, id_names: Sequence[str], into: MetricColumns) -> None:
    """Whole committed point slots as columns: strided views over the slots' bytes, no Python
    work per point (the store packs each series' columns straight from them)."""
    if not data:
        return
    view = memoryview(data)
    doubles = view.cast("d")
    into.values = doubles[0::4]
    into.times = doubles[1::4]
    into.steps = view.cast("q")[2::4]
    into.ids = view.cast("I")[6::8]
    into.names = list(id_names)  # a snapshot: other threads may define names meanwhile
    flags = bytes(data[28 :: POINT.size])
    into.missing = flags if flags.count(0) != len(flags) else None


@dataclass
class SpoolContents:
    """What a task's spool holds: points past an offset, every event, where the points end."""

    metrics: list[MetricRow] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    end: int = 0


def read_records(path: Path, run_id: int, task_id: int, offset: int = 0) -> SpoolContents:
    """Read a task's spool (``path`` is its records file; the points file is beside it): metric
    points from byte ``offset`` of the points on, events from the start.

    A point whose slot was never committed (its process died while writing it) is left out.
    """
    contents = SpoolContents()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    try:
        points: bytes | None = path.with_name("points").read_bytes()
    except FileNotFoundError:
        points = None
    names: dict[int, str] = {}
    pos = 0
    while pos + 4 <= len(data):
        (length,) = _LENGTH.unpack_from(data, pos)
        body = pos + 4
        if length == 0 or body + length > len(data):
            break
        kind = data[body]
        if kind == 0:
            break  # a length whose record was never written (the process died in between)
        if kind in (_POINT_STEP, _POINT_NO_STEP):  # an earlier version's point
            if length != _LEGACY_BODY or data[body + length - 1] != _COMMIT:
                break  # the point the process was writing when it died
            if points is None and pos >= offset:
                _, _, name_id, value, step, ts, _ = _LEGACY_POINT.unpack_from(data, pos)
                name = names.get(name_id, f"metric_{name_id}")
                contents.metrics.append(
                    MetricRow(
                        run_id, task_id, name, value, step if kind == _POINT_STEP else None, ts
                    )
                )
        elif kind in (_METRIC_STEP, _METRIC_NO_STEP):
            if points is None and pos >= offset:
                _, name_id, value, step, ts = _METRIC.unpack_from(data, body)
                name = names.get(name_id, f"metric_{name_id}")
                contents.metrics.append(
                    MetricRow(
                        run_id, task_id, name, value, step if kind == _METRIC_STEP else None, ts
                    )
                )
        elif kind == _NAME_DEF:
            _, name_id = _NAME.unpack_from(data, body)
            names[name_id] = data[body + _NAME.size : body + length].decode()
        elif kind == _EVENT:
            with contextlib.suppress(ValueError):
                contents.events.append(json.loads(data[body + 1 : body + length]))
        pos = body + length
    contents.end = pos
    if points is None:
        return contents
    first = -(-offset // POINT.size)
    slots = points[first * POINT.size :]
    commits = slots[POINT.size - 1 :: POINT.size]
    last = len(commits.rstrip(b"\0"))  # past the last slot written, all is zeros
    for value, ts, step, name_id, flags, commit in POINT.iter_unpack(slots[: last * POINT.size]):
        if commit != _COMMIT:
            continue  # a slot whose point was never written (its process died first)
        name = names.get(name_id, f"metric_{name_id}")
        contents.metrics.append(
            MetricRow(run_id, task_id, name, value, None if flags & _NO_STEP else step, ts)
        )
    contents.end = max(offset, (first + last) * POINT.size)
    return contents


class LogTail:
    """Reads what a task wrote to its spool's stdout/stderr files since the last read.

    Args:
        folder: the task's spool folder.
        ends: bytes of each stream already taken (from the store, when resuming a drain).
    """

    def __init__(self, folder: Path, ends: dict[str, int] | None = None) -> None:
        self._paths = {s: folder / s for s in STREAMS}
        self._offsets = {s: (ends or {}).get(s, 0) for s in STREAMS}

    def take(self, *, final: bool = False) -> list[LogChunk]:
        """Chunks of what is new; unless ``final``, a character cut in half waits for the rest."""
        chunks: list[LogChunk] = []
        for stream, path in self._paths.items():
            try:
                with open(path, "rb") as handle:
                    handle.seek(self._offsets[stream])
                    while data := handle.read(_CHUNK_BYTES):
                        if not final or len(data) == _CHUNK_BYTES:
                            # More may follow: never cut a character in two.
                            data = data[: len(data) - _incomplete_tail(data)]
                        if not data:
                            break
                        offset = self._offsets[stream]
                        text = data.decode("utf-8", errors="replace")
                        chunks.append(LogChunk(stream, offset, len(data), text))
                        self._offsets[stream] = offset + len(data)
                        handle.seek(self._offsets[stream])
            except FileNotFoundError:
                continue
        return chunks

    def restore(self, chunks: Sequence[LogChunk]) -> None:
        """Give back chunks that could not be stored: the next ``take`` returns them again."""
        for chunk in chunks:
            self._offsets[chunk.stream] = min(self._offsets[chunk.stream], chunk.offset)


def _incomplete_tail(data: bytes) -> int:
    """How many bytes at the end of ``data`` start a UTF-8 character that is not complete."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # the lead byte of the last character
            need = (
                2
                if byte >> 5 == 0b110
                else 3
                if byte >> 4 == 0b1110
                else 4
                if byte >> 3 == 0b11110
                else 1
            )
            return back if need > back else 0
    return 0


def link_event(link: NewLink) -> dict[str, Any]:
    """The spool event for an artifact a task logged or an input it recorded."""
    a = link.artifact
    return {
        "kind": "link",
        "direction": link.direction,
        "name": link.name,
        "link_kind": link.kind,
        "artifact": [a.key, a.size, a.serializer, a.content_type, a.type_name],
        "source_uri": link.source_uri,
    }


def tag_event(tag: str) -> dict[str, Any]:
    return {"kind": "tag", "tag": tag}


def salvage(
    store: MetadataStore, root: Path, run_id: int, task_id: int, *, events: bool = True
) -> bool:
    """Drain what is left in a task's spool into the store and delete it; whether there was one.

    Called for a task that did not end by itself (its process was killed or cancelled): its
    metric points past the stored offset and its output past the stored logs. With ``events``
    (the task never reported its outcome) the artifacts it logged and the tags it set too.
    """
    folder = spool_folder(root, run_id, task_id)
    if not folder.is_dir():
        return False
    task = store.get_task(task_id)
    contents = read_records(folder / "records", run_id, task_id, task.spool_offset)
    logs = LogTail(folder, store.log_ends(task_id)).take(final=True)
    links: list[NewLink] = []
    tags: list[str] = []
    for doc in contents.events if events else []:
        if doc.get("kind") == "link":
            links.append(
                NewLink(
                    doc["direction"],
                    doc["name"],
                    doc["link_kind"],
                    ArtifactRecord(*doc["artifact"]),
                    source_uri=doc.get("source_uri"),
                )
            )
        elif doc.get("kind") == "tag":
            tags.append(str(doc["tag"]))
    store.record_spool(
        SpoolBatch(run_id, task_id, contents.metrics, contents.end, logs, links, tags)
    )
    shutil.rmtree(folder, ignore_errors=True)
    return True


def discard_spool(root: Path, run_id: int, task_id: int) -> None:
    """Delete a task's spool folder, whose contents are all in the store."""
    shutil.rmtree(spool_folder(root, run_id, task_id), ignore_errors=True)


def default_spool_root(home: Path) -> Path:
    """``home/spool``, or a private temporary folder when ``home`` cannot be written."""
    root = home / "spool"
    try:
        root.mkdir(parents=True, exist_ok=True)
        return root
    except OSError:
        fallback = Path(tempfile.gettempdir()) / f"pipetrail-spool-{os.getuid()}"
        fallback.mkdir(parents=True, exist_ok=True, mode=0o700)
        return fallback
