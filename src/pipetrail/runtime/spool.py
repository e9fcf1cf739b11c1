"""The per-task spool: what a step logs goes to local disk first, then to the store in batches.

Each task attempt has a folder under the spool root holding three append-only files:

- ``records``: metric points and events (artifacts logged, tags set), framed records in a
  memory-mapped file. A point is in the kernel's page cache once ``log_metric`` returns, so it
  survives the death of the process (SIGKILL, out of memory) with no system call per point.
- ``stdout`` and ``stderr``: the task's captured output, written as it is printed.

While the task runs, its process drains the spool into the store (``MetricBuffer`` with a
``LogTail``); whoever ends a task that did not end by itself (a killed worker, a cancel, a lost
runner) drains what is left with :func:`salvage`. The store keeps how far each file was drained
(the task's ``spool_offset``, the end of its stored log chunks), so a drain that is repeated
after a crash adds nothing twice.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import shutil
import struct
import tempfile
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

__all__ = [
    "LogTail",
    "SpoolContents",
    "TaskSpool",
    "default_spool_root",
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
# A metric point is one struct packed into the map, length first and a commit byte last: the
# fields are written in order into a zero-filled file, so a point cut short by the death of the
# process lacks its commit byte and the reader stops there, as at a missing length.
_POINT = struct.Struct("<IBIdqdB")  # length, kind, name id, value, step, timestamp, commit
_POINT_BODY = _POINT.size - _LENGTH.size
_POINT_STEP, _POINT_NO_STEP = 5, 6
_COMMIT = 0xA5
# 64 KiB (about 2,000 points) to start, doubled as it fills: a bigger first allocation costs
# more than a step that logs a handful of points takes to run.
_INITIAL_SIZE = 1 << 16
#: Most bytes of one stream put into one log chunk.
_CHUNK_BYTES = 1 << 20


def spool_folder(root: Path, run_id: int, task_id: int) -> Path:
    """The spool folder of one task attempt."""
    return root / f"{run_id}-{task_id}"


class TaskSpool:
    """The record file of one task attempt (and the paths of its output files).

    Not thread-safe: its owner (the task's MetricBuffer) serializes writes.
    """

    def __init__(self, folder: Path) -> None:
        # Nothing touches the disk until the task logs something: most steps print nothing
        # and log no metric, and for them a spool would be a folder made and removed.
        self.folder = folder
        self.stdout_path = folder / "stdout"
        self.stderr_path = folder / "stderr"
        self._fd = -1
        self._map: mmap.mmap | bytearray = bytearray()  # mapped by the first _grow
        self._made = False
        self._size = 0
        self._pos = 0
        self._names: dict[str, int] = {}
        self._closed = False

    def ensure_folder(self) -> Path:
        """The spool folder, made if it is not there yet (before a stream is written into it)."""
        if not self._made:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._made = True
        return self.folder

    def _map_records(self, size: int) -> None:
        self.ensure_folder()
        fd = os.open(self.folder / "records", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # Allocated up front (not a sparse file): a full disk fails here, with an error,
            # instead of killing the process with SIGBUS on a later write into the mapping.
            os.posix_fallocate(fd, 0, size)
            self._map = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._size = size

    @classmethod
    def open(cls, root: Path, run_id: int, task_id: int) -> TaskSpool:
        return cls(spool_folder(root, run_id, task_id))

    @property
    def position(self) -> int:
        """Bytes of records written so far."""
        return self._pos

    def metric(self, row: MetricRow) -> None:
        """Append one metric point: one ``struct.pack_into`` into the map."""
        _, _, name, value, step, timestamp = row
        name_id = self._names.get(name)
        if name_id is None:
            name_id = self._define(name)
        pos = self._pos
        end = pos + _POINT.size
        if end > self._size:
            self._grow(_POINT.size)
        kind = _POINT_NO_STEP if step is None else _POINT_STEP
        _POINT.pack_into(
            self._map, pos, _POINT_BODY, kind, name_id, value, step or 0, timestamp, _COMMIT
        )
        self._pos = end

    def metrics(self, rows: list[MetricRow]) -> None:
        """Append the points of one ``log_metrics`` call, room made once for all of them."""
        names = self._names
        for row in rows:
            if row[2] not in names:
                self._define(row[2])
        pos = self._pos
        if pos + _POINT.size * len(rows) > self._size:
            self._grow(_POINT.size * len(rows))
        pack, target = _POINT.pack_into, self._map
        for _, _, name, value, step, timestamp in rows:
            kind = _POINT_NO_STEP if step is None else _POINT_STEP
            pack(target, pos, _POINT_BODY, kind, names[name], value, step or 0, timestamp, _COMMIT)
            pos += _POINT.size
        self._pos = pos

    def event(self, doc: dict[str, Any]) -> None:
        """Append one event (an artifact logged, a tag set) as JSON."""
        self._append(bytes([_EVENT]) + json.dumps(doc, separators=(",", ":")).encode())

    def _define(self, name: str) -> int:
        name_id = len(self._names) + 1
        self._append(_NAME.pack(_NAME_DEF, name_id) + name.encode())
        self._names[name] = name_id
        return name_id

    def _append(self, payload: bytes) -> None:
        need = 4 + len(payload)
        if self._pos + need > self._size:
            self._grow(need)
        start = self._pos + 4
        self._map[start : start + len(payload)] = payload
        _LENGTH.pack_into(self._map, self._pos, len(payload))
        self._pos += need

    def _grow(self, need: int) -> None:
        if not isinstance(self._map, mmap.mmap):
            self._map_records(max(_INITIAL_SIZE, need))
            return
        size = max(self._size * 2, self._pos + need)
        os.posix_fallocate(self._fd, self._size, size - self._size)
        self._map.resize(size)
        self._size = size

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if isinstance(self._map, mmap.mmap):
            self._map.close()
            os.close(self._fd)

    def remove(self) -> None:
        """Close and delete the folder: everything in it is in the store."""
        self.close()
        if self._made:
            shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class SpoolContents:
    """What a task's record file holds: points past an offset, every event, where it ends."""

    metrics: list[MetricRow] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    end: int = 0


def read_records(path: Path, run_id: int, task_id: int, offset: int = 0) -> SpoolContents:
    """Read a record file: metric points from byte ``offset`` on, events from the start."""
    contents = SpoolContents()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return contents
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
        if kind in (_POINT_STEP, _POINT_NO_STEP):
            if length != _POINT_BODY or data[body + length - 1] != _COMMIT:
                break  # the point the process was writing when it died
            if pos >= offset:
                _, _, name_id, value, step, ts, _ = _POINT.unpack_from(data, pos)
                name = names.get(name_id, f"metric_{name_id}")
                contents.metrics.append(
                    MetricRow(
                        run_id, task_id, name, value, step if kind == _POINT_STEP else None, ts
                    )
                )
        elif kind in (_METRIC_STEP, _METRIC_NO_STEP):
            if pos >= offset:
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

    def restore(self, chunks: list[LogChunk]) -> None:
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
