"""Content digests on the way into the artifact store: of buffers, files, folders, and a writer."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pipetrail.core.hashing import DIGEST_ALGORITHM, canonical_json, digest_bytes, new_hasher
from pipetrail.errors import ArtifactError, NotFoundError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = [
    "CHUNK_SIZE",
    "HashingWriter",
    "byte_view",
    "digest_buffers",
    "digest_file",
    "digest_tree",
]

#: Bytes moved per read when copying or hashing a file.
CHUNK_SIZE = 8 * 1024 * 1024

# Writes smaller than this are coalesced so pickle's many small frames cost one hash update and
# one write per chunk; larger writes go straight through without a copy.
_DIRECT_WRITE = 1024 * 1024


def byte_view(data: ReadableBuffer) -> memoryview:
    """``data`` as a flat view of unsigned bytes, copied only when it is not contiguous."""
    view = memoryview(data)
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def digest_buffers(views: Sequence[memoryview]) -> tuple[str, int]:
    """Hex digest and size of the concatenation of ``views``, without joining them.

    The hasher releases the GIL and spreads a large buffer over several threads, so hashing one
    big view uses every core.
    """
    hasher = new_hasher()
    for view in views:
        hasher.update(view)
    return str(hasher.hexdigest()), sum(view.nbytes for view in views)


class HashingWriter(io.RawIOBase):
    """Write-only file object that hashes and counts every byte on its way to ``target``.

    Args:
        target: Where the bytes go.
        name: How ``target`` is named in errors.
    """

    def __init__(self, target: IO[bytes], name: str) -> None:
        super().__init__()
        self._target = target
        self._name = name
        self._hasher = new_hasher()
        self._pending = bytearray()
        self.size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def write(self, data: ReadableBuffer, /) -> int:
        if self.closed:
            raise ValueError("write to closed file")
        view = byte_view(data)
        count = view.nbytes
        if count >= _DIRECT_WRITE:
            self._drain()
            self._emit(view)
        else:
            self._pending += view
            if len(self._pending) >= CHUNK_SIZE:
                self._drain()
        self.size += count
        return count

    def flush(self) -> None:
        if not self.closed:
            self._drain()

    def close(self) -> None:
        if not self.closed:
            self._drain()
        super().close()

    def abandon(self) -> None:
        """Close without writing buffered bytes (the content is being thrown away)."""
        self._pending = bytearray()
        super().close()

    def hexdigest(self) -> str:
        """Hex digest of every byte written so far."""
        return str(self._hasher.hexdigest())

    def _drain(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, bytearray()
            self._emit(pending)

    def _emit(self, data: memoryview | bytearray) -> None:
        self._hasher.update(data)
        try:
            self._target.write(data)
        except OSError as exc:
            raise ArtifactError(
                f"could not write temporary artifact file {self._name!r}: {exc}"
            ) from exc


def digest_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """Hex digest and size of a local file, streamed in chunks.

    Raises:
        NotFoundError: There is no file at ``path``.
        ArtifactError: The file could not be read.
    """
    source = os.fspath(path)
    hasher = new_hasher()
    size = 0
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    try:
        with open(source, "rb") as fileobj:
            while count := fileobj.readinto(buffer):
                hasher.update(view[:count])
                size += count
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise NotFoundError(f"no file at {source!r} to digest") from exc
    except OSError as exc:
        raise ArtifactError(f"could not read {source!r} to digest it: {exc}") from exc
    return str(hasher.hexdigest()), size


def digest_tree(path: str | os.PathLike[str]) -> tuple[str, int]:
    """Deterministic content digest and total size of a local folder, storing nothing.

    The digest covers every file's path relative to ``path`` (with ``/`` separators) and its
    content digest, so it changes when a file is added, removed, renamed or edited, and not when
    timestamps or permissions change. Empty folders do not count, and symbolic links to folders
    are not followed.

    Raises:
        NotFoundError: ``path`` is not a folder.
        ArtifactError: A file or folder could not be read.
    """
    root = Path(path)
    if not root.is_dir():
        raise NotFoundError(f"no folder at {str(root)!r} to digest")

    def fail(exc: OSError) -> None:
        raise ArtifactError(f"could not list {exc.filename!r} under {str(root)!r}: {exc}") from exc

    files: list[dict[str, Any]] = []
    for folder, _, names in os.walk(root, onerror=fail):
        for name in names:
            file_path = Path(folder, name)
            digest, size = digest_file(file_path)
            files.append(
                {"path": file_path.relative_to(root).as_posix(), "digest": digest, "size": size}
            )
    files.sort(key=lambda entry: str(entry["path"]))
    manifest = {"algorithm": DIGEST_ALGORITHM, "files": files}
    return digest_bytes(canonical_json(manifest)), sum(int(entry["size"]) for entry in files)
