"""Content-addressed artifact store over an fsspec filesystem: digest, dedupe, atomic writes, verify."""

from __future__ import annotations

import contextlib
import io
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

import fsspec
from fsspec.implementations.local import LocalFileSystem

from pipetrail.core.hashing import DIGEST_ALGORITHM, canonical_json, digest_bytes, new_hasher
from pipetrail.errors import ArtifactError, ConfigError, IntegrityError, NotFoundError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["CHUNK_SIZE", "ContentAddressedStore", "PutResult", "digest_file", "digest_tree"]

#: Bytes moved per read when copying or hashing a file.
CHUNK_SIZE = 8 * 1024 * 1024

# Writes smaller than this are coalesced so pickle's many small frames cost one hash update and
# one write per chunk; larger writes go straight through without a copy.
_DIRECT_WRITE = 1024 * 1024

_KEY = re.compile(r"[0-9a-f]{64}")
_TMP_DIR = "tmp"


@dataclass(frozen=True)
class PutResult:
    """Outcome of storing content.

    Attributes:
        key: Hex digest of the content; the address it is stored under.
        size: Number of bytes of content.
        existed: True when the content was already stored, so no bytes were added.
    """

    key: str
    size: int
    existed: bool


class _HashingWriter(io.RawIOBase):
    """Write-only file object that hashes and counts every byte on its way to ``target``."""

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
        view = memoryview(data)
        if not view.c_contiguous:
            view = memoryview(view.tobytes())
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
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


class ContentAddressedStore:
    """Bytes stored under the hex digest of their content, on any fsspec filesystem.

    Content lives at ``<root>/<key[:2]>/<key[2:]>``. Writes stream to a uniquely named temporary
    file under ``<root>/tmp/`` and are renamed into place only once complete, so a final key never
    holds partial content; storing content that is already present adds no bytes.

    Args:
        url: A local folder (``"/data/artifacts"``) or an fsspec URL (``"memory://x"``,
            ``"s3://bucket/prefix"``). Nothing is created until the first write.
        fsync: Flush each new file to disk before renaming it, so content survives a power loss,
            at the cost of write speed. Local folders only.
        storage_options: Extra keyword arguments for the fsspec filesystem.

    Raises:
        ConfigError: The URL's protocol is unknown or its fsspec backend is not installed.
    """

    def __init__(
        self, url: str, *, fsync: bool = False, storage_options: Mapping[str, Any] | None = None
    ) -> None:
        try:
            fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        except (ValueError, ImportError) as exc:
            raise ConfigError(f"cannot open artifact store {url!r}: {exc}") from exc
        self._url = url
        self._fs: fsspec.AbstractFileSystem = fs
        self._root: str = root.rstrip("/")
        self._local = isinstance(fs, LocalFileSystem)
        self._fsync = fsync

    @staticmethod
    def digest_file(path: str | os.PathLike[str]) -> tuple[str, int]:
        """Hex digest and size of a local file, storing nothing; see :func:`digest_file`."""
        return digest_file(path)

    @staticmethod
    def digest_tree(path: str | os.PathLike[str]) -> tuple[str, int]:
        """Deterministic digest and total size of a local folder; see :func:`digest_tree`."""
        return digest_tree(path)

    @property
    def url(self) -> str:
        """The URL the store was opened with."""
        return self._url

    def __repr__(self) -> str:
        return f"ContentAddressedStore({self._url!r})"

    def path_of(self, key: str) -> str:
        """Where ``key`` is (or would be) stored: a local path, or a full fsspec URL elsewhere.

        Raises:
            NotFoundError: ``key`` is not a well-formed key.
        """
        path = self._path(key)
        return path if self._local else str(self._fs.unstrip_protocol(path))

    def exists(self, key: str) -> bool:
        """Whether content is stored under ``key``; False for a malformed key."""
        if not _is_key(key):
            return False
        path = self._path(key)
        try:
            return os.path.isfile(path) if self._local else bool(self._fs.isfile(path))
        except OSError as exc:
            raise ArtifactError(f"could not check artifact {key!r} at {path!r}: {exc}") from exc

    def size(self, key: str) -> int:
        """Number of bytes stored under ``key``.

        Raises:
            NotFoundError: Nothing is stored under ``key``, or it is malformed.
        """
        path = self._path(key)
        try:
            return os.path.getsize(path) if self._local else int(self._fs.size(path))
        except FileNotFoundError as exc:
            raise self._not_found(key) from exc
        except OSError as exc:
            raise ArtifactError(
                f"could not read size of artifact {key!r} at {path!r}: {exc}"
            ) from exc

    def open(self, key: str) -> BinaryIO:
        """Open the content stored under ``key`` for reading; the caller closes it.

        Raises:
            NotFoundError: Nothing is stored under ``key``, or it is malformed.
        """
        path = self._path(key)
        try:
            if self._local:
                return open(path, "rb")
            return cast(BinaryIO, self._fs.open(path, "rb"))
        except FileNotFoundError as exc:
            raise self._not_found(key) from exc
        except OSError as exc:
            raise ArtifactError(f"could not open artifact {key!r} at {path!r}: {exc}") from exc

    def get_bytes(self, key: str, verify: bool = False) -> bytes:
        """The content stored under ``key``.

        Args:
            key: The content's key.
            verify: Re-hash the bytes and check them against ``key``.

        Raises:
            NotFoundError: Nothing is stored under ``key``, or it is malformed.
            IntegrityError: ``verify`` is set and the stored bytes do not hash to ``key``.
        """
        path = self._path(key)
        try:
            if self._local:
                with open(path, "rb") as fileobj:
                    data = fileobj.read()
            else:
                data = bytes(self._fs.cat_file(path))
        except FileNotFoundError as exc:
            raise self._not_found(key) from exc
        except OSError as exc:
            raise ArtifactError(f"could not read artifact {key!r} at {path!r}: {exc}") from exc
        if verify:
            actual = digest_bytes(data)
            if actual != key:
                raise IntegrityError(
                    f"artifact {key!r} in {self._url!r} is corrupt: its {len(data)} bytes hash to "
                    f"{actual!r}; delete {self.path_of(key)!r} and re-run the step that wrote it"
                )
        return data

    def put_bytes(self, data: bytes | bytearray | memoryview) -> PutResult:
        """Store ``data`` and return its key."""
        view = memoryview(data)

        def write(fileobj: BinaryIO) -> None:
            fileobj.write(view)

        return self.put_stream(write)

    def put_file(self, path: str | os.PathLike[str]) -> PutResult:
        """Store the content of the local file at ``path``, streaming it in chunks.

        Raises:
            NotFoundError: There is no file at ``path``.
        """
        source = os.fspath(path)
        try:
            fileobj = open(source, "rb")  # noqa: SIM115 - closed by the with below
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFoundError(f"no file at {source!r} to store as an artifact") from exc
        except OSError as exc:
            raise ArtifactError(
                f"could not open {source!r} to store as an artifact: {exc}"
            ) from exc
        with fileobj:
            return self.put_stream(lambda out: _copy(fileobj, source, out))

    def put_stream(self, write: Callable[[BinaryIO], None]) -> PutResult:
        """Store whatever ``write`` writes to the file object it is given.

        The bytes are hashed as they stream to a temporary file, which is then renamed to its key,
        or deleted if that key is already stored. If ``write`` raises, the temporary file is
        removed and the exception propagates unchanged.

        Args:
            write: Called once with a write-only binary file object.

        Raises:
            ArtifactError: The filesystem failed.
        """
        tmp = f"{self._root}/{_TMP_DIR}/{uuid.uuid4().hex}"
        target = self._open_temp(tmp)
        writer = _HashingWriter(target, tmp)
        try:
            write(cast(BinaryIO, writer))
            writer.close()
            self._close_temp(target, tmp)
        except BaseException:
            writer.abandon()
            _close_quietly(target)
            self._discard(tmp)
            raise
        key = writer.hexdigest()
        try:
            existed = self._commit(tmp, key, writer.size)
        except OSError as exc:
            self._discard(tmp)
            raise ArtifactError(
                f"could not move {tmp!r} to artifact {key!r} at {self._path(key)!r}: {exc}"
            ) from exc
        return PutResult(key=key, size=writer.size, existed=existed)

    def _path(self, key: str) -> str:
        if not _is_key(key):
            raise NotFoundError(
                f"no artifact with key {key!r}: keys are 64 lowercase hexadecimal characters"
            )
        return f"{self._root}/{key[:2]}/{key[2:]}"

    def _not_found(self, key: str) -> NotFoundError:
        return NotFoundError(f"no artifact with key {key!r} in {self._url!r}")

    def _open_temp(self, tmp: str) -> IO[bytes]:
        parent = tmp.rsplit("/", 1)[0]
        try:
            if self._local:
                os.makedirs(parent, exist_ok=True)
                return open(tmp, "xb")
            self._fs.makedirs(parent, exist_ok=True)
            return cast(IO[bytes], self._fs.open(tmp, "wb"))
        except OSError as exc:
            raise ArtifactError(f"could not create temporary artifact file {tmp!r}: {exc}") from exc

    def _close_temp(self, target: IO[bytes], tmp: str) -> None:
        try:
            if self._fsync and self._local:
                target.flush()
                os.fsync(target.fileno())
            target.close()
        except OSError as exc:
            raise ArtifactError(f"could not write temporary artifact file {tmp!r}: {exc}") from exc

    def _commit(self, tmp: str, key: str, size: int) -> bool:
        """Move ``tmp`` to ``key``'s path unless already there intact; True when it was."""
        final = self._path(key)
        parent = final.rsplit("/", 1)[0]
        if not self._local:
            if self._fs.isfile(final) and self._fs.size(final) == size:
                self._fs.rm_file(tmp)
                return True
            self._fs.makedirs(parent, exist_ok=True)
            self._fs.mv(tmp, final)
            return False
        os.makedirs(parent, exist_ok=True)
        try:
            # A hard link fails if the key exists, so of racing writers exactly one adds the file.
            os.link(tmp, final)
            existed = False
        except FileExistsError:
            existed = os.path.getsize(final) == size
            if not existed:
                os.replace(tmp, final)  # heal a truncated file left by a crash before fsync
                return False
        except OSError:
            # No hard links on this filesystem: a rename is just as atomic.
            if not (os.path.isfile(final) and os.path.getsize(final) == size):
                os.replace(tmp, final)
                return False
            existed = True
        os.unlink(tmp)
        return existed

    def _discard(self, tmp: str) -> None:
        # Best effort: this runs while another error propagates, which must not be masked.
        with contextlib.suppress(OSError):
            if self._local:
                os.unlink(tmp)
            else:
                self._fs.rm_file(tmp)


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


def _copy(source: io.BufferedReader, name: str, out: BinaryIO) -> None:
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    while True:
        try:
            count = source.readinto(buffer)
        except OSError as exc:
            raise ArtifactError(f"could not read {name!r} to store it: {exc}") from exc
        if not count:
            return
        out.write(view[:count])


def _close_quietly(fileobj: IO[bytes]) -> None:
    with contextlib.suppress(OSError):
        fileobj.close()


def _is_key(key: object) -> bool:
    return isinstance(key, str) and _KEY.fullmatch(key) is not None
