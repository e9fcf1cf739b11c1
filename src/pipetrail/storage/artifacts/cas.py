"""Content-addressed artifact store over an fsspec filesystem: digest, dedupe, atomic writes, verify."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

from pipetrail.core.hashing import new_hasher
from pipetrail.errors import (
    ArtifactError,
    ConfigError,
    IntegrityError,
    NotFoundError,
    PipetrailError,
)
from pipetrail.storage.artifacts.claims import RemoteClaims
from pipetrail.storage.artifacts.digests import (
    CHUNK_SIZE,
    HashingWriter,
    byte_view,
    digest_buffers,
    digest_file,
    digest_tree,
)
from pipetrail.storage.artifacts.folder import FolderWriter, write_views
from pipetrail.storage.artifacts.remote import (
    Spool,
    bucket_missing,
    modified_at,
    reason,
)

if TYPE_CHECKING:
    import fsspec
    from _typeshed import ReadableBuffer

__all__ = ["CHUNK_SIZE", "ContentAddressedStore", "PutResult", "digest_file", "digest_tree"]

# Content bound for a remote store waits in memory up to this size, then in a local temporary
# file, until its key is known; only then is it uploaded, straight to that key.
_SPOOL_IN_MEMORY = CHUNK_SIZE

# Reads of a verifying stream: small beside CHUNK_SIZE, the block a remote file fetches at once,
# so a read never makes it fetch two blocks and hold them both.
_VERIFY_READ = 1024 * 1024

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


class ContentAddressedStore:
    """Bytes stored under the hex digest of their content, on any fsspec filesystem.

    Content lives at ``<root>/<key[:2]>/<key[2:]>`` and a final key never holds partial content.
    In a local folder, writes stream to a uniquely named temporary file under ``<root>/tmp/`` that
    is linked into place once complete. Elsewhere (object stores), the bytes are hashed as they
    are spooled to memory or a local temporary file; content already stored is not uploaded
    again, and new content is uploaded straight to its key (an S3 PUT or multipart upload is
    visible only once complete), so there is no server-side copy and no temporary object. Two
    writers of the same content at once both end with that content under its key.

    Args:
        url: A local folder (``"/data/artifacts"``) or an fsspec URL (``"memory://x"``,
            ``"s3://bucket/prefix"``). Nothing is created (or contacted) until the first use.
        fsync: Flush each new file to disk before renaming it, so content survives a power loss,
            at the cost of write speed. Local folders only.
        storage_options: Extra keyword arguments for the fsspec filesystem (for s3fs:
            ``endpoint_url``, ``key``, ``secret``, ``client_kwargs``, ``config_kwargs``, ...).
        spool_dir: Local folder for content on its way to a remote store; the system's
            temporary folder by default.

    Raises:
        ConfigError: The URL's protocol is unknown or its fsspec backend is not installed.
    """

    def __init__(
        self,
        url: str,
        *,
        fsync: bool = False,
        storage_options: Mapping[str, Any] | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        options = dict(storage_options or {})
        fs: fsspec.AbstractFileSystem | None = None
        local = _local_folder(url) if not options else None
        if local is not None:
            # A plain folder is read and written with os calls: fsspec is not even imported.
            root = local
        else:
            try:
                import fsspec

                if "://" in url and not url.startswith("file://"):
                    # Each store has its own filesystem object, so no listing another user of
                    # fsspec cached in this process can hide content that was written since.
                    options.setdefault("skip_instance_cache", True)
                    # Nor may a listing of its own (gc lists the store) answer a later check of
                    # one object: s3fs would say an object another process removed since is there.
                    options.setdefault("use_listings_cache", False)
                fs, root = fsspec.core.url_to_fs(url, **options)
            except (ValueError, ImportError, TypeError) as exc:
                raise ConfigError(f"cannot open artifact store {url!r}: {exc}") from exc
            from fsspec.implementations.local import LocalFileSystem

            local = root if isinstance(fs, LocalFileSystem) else None
        self._url = url
        self._fs_made = fs
        self._root: str = root.rstrip("/")
        self._local = local is not None
        self._folder = FolderWriter(f"{self._root}/{_TMP_DIR}", fsync=fsync)
        self._spool_dir = None if spool_dir is None else os.fspath(spool_dir)

    @property
    def _fs(self) -> fsspec.AbstractFileSystem:
        """The store's fsspec filesystem (a local folder's made when first needed)."""
        if self._fs_made is None:
            import fsspec

            self._fs_made = fsspec.filesystem("file")
        return self._fs_made

    @functools.cached_property
    def _claims(self) -> RemoteClaims:
        return RemoteClaims(self._fs, self._root, f"{self._root}/{_TMP_DIR}")

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

    @property
    def local(self) -> bool:
        """Whether the store is a folder on this machine's filesystem."""
        return self._local

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
        """Whether content is stored under ``key``; False for a malformed key.

        Raises:
            ArtifactError: The store could not be asked (no such bucket, no access, no network).
        """
        if not _is_key(key):
            return False
        path = self._path(key)
        if not self._local:
            return self._remote_size(path, f"check artifact {key!r}") is not None
        try:
            return os.path.isfile(path)
        except OSError as exc:
            raise ArtifactError(f"could not check artifact {key!r} at {path!r}: {exc}") from exc

    def size(self, key: str) -> int:
        """Number of bytes stored under ``key``.

        Raises:
            NotFoundError: Nothing is stored under ``key``, or it is malformed.
        """
        path = self._path(key)
        if not self._local:
            size = self._remote_size(path, f"read the size of artifact {key!r}")
            if size is None:
                raise self._not_found(key)
            return size
        try:
            return os.path.getsize(path)
        except FileNotFoundError as exc:
            raise self._not_found(key) from exc
        except OSError as exc:
            raise ArtifactError(
                f"could not read size of artifact {key!r} at {path!r}: {exc}"
            ) from exc

    def open(self, key: str, *, block_size: int | None = None) -> BinaryIO:
        """Open the content stored under ``key`` for reading; the caller closes it.

        A remote object is read in ranges of about ``block_size`` bytes (:data:`CHUNK_SIZE` by
        default) as the reader asks for them, never fetched whole.

        Raises:
            NotFoundError: Nothing is stored under ``key``, or it is malformed.
        """
        path = self._path(key)
        if not self._local:
            with self._remote(f"open artifact {key!r}", key):
                return cast(
                    BinaryIO, self._fs.open(path, "rb", block_size=block_size or CHUNK_SIZE)
                )
        try:
            return open(path, "rb")
        except FileNotFoundError as exc:
            raise self._not_found(key) from exc
        except OSError as exc:
            raise ArtifactError(f"could not open artifact {key!r} at {path!r}: {exc}") from exc

    def get_bytes(self, key: str, verify: bool = False) -> bytes:
        """The content stored under ``key``.

        Args:
            key: The content's key.
            verify: Hash the bytes as they are read and check them against ``key``.

        Raises:
            NotFoundError: Nothing is stored under ``key``, or it is malformed.
            IntegrityError: ``verify`` is set and the stored bytes do not hash to ``key``.
        """
        path = self._path(key)
        if verify:
            chunks: list[bytes] = []
            self._stream_verified(key, chunks.append)
            return b"".join(chunks)
        if not self._local:
            with self._remote(f"read artifact {key!r}", key):
                return bytes(self._fs.cat_file(path))
        try:
            with open(path, "rb") as fileobj:
                return fileobj.read()
        except FileNotFoundError as exc:
            raise self._not_found(key) from exc
        except OSError as exc:
            raise ArtifactError(f"could not read artifact {key!r} at {path!r}: {exc}") from exc

    def verify(self, key: str) -> int:
        """Check, streaming in chunks, that the content under ``key`` hashes to ``key``.

        Returns:
            The content's size in bytes.

        Raises:
            NotFoundError: Nothing is stored under ``key``, or it is malformed.
            IntegrityError: The stored bytes do not hash to ``key``.
        """
        return self._stream_verified(key, lambda chunk: None)

    def open_verified(self, key: str) -> BinaryIO:
        """Open the content under ``key`` for reading once its hash has been checked.

        A local file is hashed in place and then opened; a remote object is downloaded once,
        hashed on the way into a local temporary file (memory when small), and that is returned.
        Nothing is read whole into memory either way.

        Raises:
            NotFoundError: Nothing is stored under ``key``, or it is malformed.
            IntegrityError: The stored bytes do not hash to ``key``.
        """
        if self._local:
            self.verify(key)
            return self.open(key)
        copy = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - returned to the caller
            max_size=_SPOOL_IN_MEMORY, dir=self._spool_dir
        )
        try:
            self._stream_verified(key, copy.write)
            copy.seek(0)
        except BaseException:
            copy.close()
            raise
        return cast(BinaryIO, copy)

    def put_bytes(self, data: bytes | bytearray | memoryview) -> PutResult:
        """Store ``data`` and return its key; see :meth:`put_buffers`."""
        return self.put_buffers([data])

    def put_buffers(self, buffers: Iterable[ReadableBuffer]) -> PutResult:
        """Store the concatenation of ``buffers`` (bytes, arrays, any buffer) without joining them.

        The buffers are hashed before anything is written (a large one on every core), so
        content already stored is recognised from its key and size alone and nothing is written
        at all. New content goes from the buffers straight to a temporary file that is linked to
        its key (a local folder), or is spooled and uploaded as :meth:`put_stream` does
        (elsewhere). The buffers must not change until this returns.

        Raises:
            ArtifactError: The filesystem or object store failed.
        """
        views = [byte_view(buffer) for buffer in buffers]
        key, size = digest_buffers(views)
        if not self._local:
            if self._claim_remote(key, size):
                return PutResult(key=key, size=size, existed=True)
            return self._put_remote(lambda out: write_views(out, views, "a local spool file"))
        if self._folder.claim(self._path(key), size):
            return PutResult(key=key, size=size, existed=True)
        tmp, _ = self._folder.write(lambda target, tmp: write_views(target, views, tmp))
        return self._link(tmp, key, size)

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

        The bytes are hashed as they stream. In a local folder they go to a temporary file that
        is then linked to its key, or deleted if that key is already stored; elsewhere they are
        spooled locally and uploaded to their key unless it is already stored. If ``write``
        raises, whatever was spooled is removed and the exception propagates unchanged.

        Args:
            write: Called once with a write-only binary file object.

        Raises:
            ArtifactError: The filesystem or object store failed.
        """
        if not self._local:
            return self._put_remote(write)

        def fill(target: IO[bytes], tmp: str) -> tuple[str, int]:
            writer = HashingWriter(target, tmp)
            try:
                write(cast(BinaryIO, writer))
                writer.close()
            except BaseException:
                writer.abandon()
                raise
            return writer.hexdigest(), writer.size

        tmp, (key, size) = self._folder.write(fill)
        return self._link(tmp, key, size)

    def _put_remote(self, write: Callable[[BinaryIO], None]) -> PutResult:
        spool = Spool(_SPOOL_IN_MEMORY, self._spool_dir)
        with spool:
            writer = HashingWriter(cast(IO[bytes], spool), "a local spool file")
            try:
                write(cast(BinaryIO, writer))
                writer.close()
            except BaseException:
                writer.abandon()
                raise
            key, size = writer.hexdigest(), writer.size
            final = self._path(key)
            if self._claim_remote(key, size):
                return PutResult(key=key, size=size, existed=True)
            with self._remote(f"store artifact {key!r} ({size} bytes)"):
                if spool.file is None:
                    self._fs.pipe_file(final, bytes(spool.buffer))
                else:
                    spool.file.flush()
                    self._fs.put_file(spool.file.name, final)
        return PutResult(key=key, size=size, existed=False)

    def _claim_remote(self, key: str, size: int) -> bool:
        """Whether ``key`` holds ``size`` bytes in a remote store; if so, claim it: the claim
        is written *before* the object is checked once more (see ``claims.py`` for why)."""
        path = self._path(key)
        action = f"store artifact {key!r} ({size} bytes)"
        if self._remote_size(path, action) != size:
            return False
        with self._remote(action):
            self._claims.claim(key)
        return self._remote_size(path, action) == size

    def _stream_verified(self, key: str, sink: Callable[[bytes], object]) -> int:
        hasher = new_hasher()
        size = 0
        with self.open(key) as fileobj, self._remote(f"read artifact {key!r}", key):
            while chunk := fileobj.read(_VERIFY_READ):
                hasher.update(chunk)
                size += len(chunk)
                sink(chunk)
        actual = str(hasher.hexdigest())
        if actual != key:
            raise IntegrityError(
                f"artifact {key!r} in {self._url!r} is corrupt: its {size} bytes hash to "
                f"{actual!r}; delete {self.path_of(key)!r} and re-run the step that wrote it"
            )
        return size

    def _remote_size(self, path: str, action: str) -> int | None:
        """Size of the object at ``path``; None when there is none."""
        with self._remote(action):
            try:
                info = self._fs.info(path)
            except FileNotFoundError as exc:
                if bucket_missing(exc):
                    raise
                return None
        if info.get("type") != "file":
            return None
        return int(info["size"])

    @contextlib.contextmanager
    def _remote(self, action: str, key: str | None = None) -> Iterator[None]:
        """Turn whatever the fsspec backend raises into one pipetrail error naming the store."""
        try:
            yield
        except PipetrailError:
            raise
        except FileNotFoundError as exc:
            if key is not None and not bucket_missing(exc):
                raise self._not_found(key) from exc
            raise ArtifactError(f"artifact store {self._url!r}: {reason(exc, action)}") from exc
        except Exception as exc:  # botocore, aiohttp, OS errors: whatever the backend raises
            raise ArtifactError(f"artifact store {self._url!r}: {reason(exc, action)}") from exc

    def _path(self, key: str) -> str:
        if not _is_key(key):
            raise NotFoundError(
                f"no artifact with key {key!r}: keys are 64 lowercase hexadecimal characters"
            )
        return f"{self._root}/{key[:2]}/{key[2:]}"

    def _not_found(self, key: str) -> NotFoundError:
        return NotFoundError(f"no artifact with key {key!r} in {self._url!r}")

    def _link(self, tmp: str, key: str, size: int) -> PutResult:
        """Give the complete temporary file ``tmp`` its final name, ``key``'s path."""
        try:
            existed = self._folder.commit(tmp, self._path(key), size)
        except OSError as exc:
            self._folder.discard(tmp)
            raise ArtifactError(
                f"could not move {tmp!r} to artifact {key!r} at {self._path(key)!r}: {exc}"
            ) from exc
        return PutResult(key=key, size=size, existed=existed)

    # -- listing and removal, for garbage collection ---------------------------------------------

    def objects(self) -> Iterator[tuple[str, int, float]]:
        """Every stored object as ``(key, size in bytes, last modified in seconds since the
        epoch)``, in no particular order; temporary files of writes are not objects.

        Raises:
            ArtifactError: The store could not be listed.
        """
        if not self._local:
            with self._remote("list the stored artifacts"):
                found = (
                    self._fs.find(self._root, detail=True) if self._fs.exists(self._root) else {}
                )
            for path, info in found.items():
                key = "".join(str(path).rstrip("/").rsplit("/", 2)[-2:])
                if _is_key(key) and info.get("type") == "file":
                    yield key, int(info["size"]), modified_at(info)
            return
        try:
            shards = [e for e in os.scandir(self._root) if len(e.name) == 2 and e.is_dir()]
            for shard in shards:
                for entry in os.scandir(shard.path):
                    key = shard.name + entry.name
                    if _is_key(key) and entry.is_file():
                        stat = entry.stat()
                        yield key, stat.st_size, stat.st_mtime
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ArtifactError(f"could not list artifacts in {self._root!r}: {exc}") from exc

    def temporaries(self) -> Iterator[tuple[str, int, float]]:
        """Temporary files of writes to a local folder (in progress, or left by a crash), and
        objects a garbage collection moved aside (left by a crash), as ``(name, size, last
        modified)``. Remote writes spool locally, so a remote store has only the latter."""
        if not self._local:
            with self._remote("list the store's temporary objects"):
                top = f"{self._root}/{_TMP_DIR}"
                found = self._fs.find(top, detail=True) if self._fs.exists(top) else {}
            for path, info in found.items():
                name = str(path).rstrip("/").rsplit("/", 1)[-1]
                if info.get("type") == "file" and name.startswith("gc-"):
                    yield name, int(info["size"]), modified_at(info)
            return
        try:
            for entry in os.scandir(f"{self._root}/{_TMP_DIR}"):
                if entry.is_file():
                    stat = entry.stat()
                    yield entry.name, stat.st_size, stat.st_mtime
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ArtifactError(f"could not list {self._root}/{_TMP_DIR}: {exc}") from exc

    def modified(self, key: str) -> float | None:
        """When the object under ``key`` was last written (seconds since the epoch); None when
        nothing is stored under it."""
        path = self._path(key)
        if not self._local:
            with self._remote(f"check artifact {key!r}"):
                try:
                    return modified_at(self._fs.info(path))
                except FileNotFoundError:
                    return None
        try:
            return os.stat(path).st_mtime
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ArtifactError(f"could not check artifact {key!r} at {path!r}: {exc}") from exc

    def delete(self, key: str) -> bool:
        """Remove the object under ``key``; False when there was none.

        Raises:
            NotFoundError: ``key`` is malformed.
            ArtifactError: The store failed.
        """
        path = self._path(key)
        if not self._local:
            with self._remote(f"delete artifact {key!r}"):
                try:
                    self._fs.rm_file(path)
                except FileNotFoundError:
                    return False
            return True
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ArtifactError(f"could not delete artifact {key!r} at {path!r}: {exc}") from exc
        return True

    def delete_unclaimed(self, keys: Iterable[str], *, before: float) -> list[str]:
        """Remove the objects under ``keys`` that nobody wrote or claimed since ``before``.

        A put that finds its content already stored claims it (a local file's modification
        time is set to now; a remote object gets a claim, see ``claims.py``), so an
        object a running task has just stored again is not removed even if its first copy is
        old. Safe against such a put at any moment: each object is first moved aside (a rename
        in a local folder, a server-side copy elsewhere), and only then are its time and claims
        read; one claimed meanwhile is put back.

        Args:
            keys: Keys of the objects to remove, if unclaimed.
            before: Seconds since the epoch; a write or claim at or after it keeps the object.

        Returns:
            The keys whose objects were removed.

        Raises:
            NotFoundError: a key is malformed.
            ArtifactError: The store failed.
        """
        keys = list(keys)
        for key in keys:
            self._path(key)  # every key checked before anything is removed
        if not self._local:
            with self._remote("remove unreferenced artifacts"):
                return self._claims.remove_unclaimed({k: self._path(k) for k in keys}, before)
        return [k for k in keys if self._folder.remove_unclaimed(self._path(k), before, k)]

    def expire_claims(self, before: float) -> int:
        """Remove the claims (see ``claims.py``) made before ``before``; how many.

        Each claim is an object of its own, never rewritten, so one made since is never removed.
        Local folders keep none (a claim there is a file's modification time).

        Raises:
            ArtifactError: The store failed.
        """
        if self._local:
            return 0
        with self._remote("remove old artifact claims"):
            return self._claims.expire(before)

    def delete_temporary(self, name: str) -> bool:
        """Remove the temporary file ``name`` of :meth:`temporaries`; False when it is gone."""
        if "/" in name or name in ("", ".", ".."):
            return False
        if not self._local:
            with self._remote(f"delete {self._root}/{_TMP_DIR}/{name}"):
                try:
                    self._fs.rm_file(f"{self._root}/{_TMP_DIR}/{name}")
                except FileNotFoundError:
                    return False
            return True
        try:
            os.unlink(f"{self._root}/{_TMP_DIR}/{name}")
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ArtifactError(f"could not delete {self._root}/{_TMP_DIR}/{name}: {exc}") from exc
        return True


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


def _local_folder(url: str) -> str | None:
    """The absolute folder a plain path or ``file://`` URL names; None for any other URL
    (another protocol, or a chain such as ``simplecache::file://``)."""
    if "::" in url:
        return None
    if url.startswith("file://"):
        url = url[len("file://") :]
    elif "://" in url:
        return None
    return os.path.abspath(os.path.expanduser(url or "."))


def _is_key(key: object) -> bool:
    return isinstance(key, str) and _KEY.fullmatch(key) is not None
