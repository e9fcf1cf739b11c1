"""Writes into a local artifact folder: complete temporary files, linked to their final paths."""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Callable, Iterable
from stat import S_ISREG
from typing import IO, TypeVar

from pipetrail.errors import ArtifactError

__all__ = ["FolderWriter", "write_views"]

_T = TypeVar("_T")


class FolderWriter:
    """Puts content at final paths in a local folder; no final path ever holds part of it.

    Content goes to a uniquely named file in ``tmp_dir``, which is closed (flushed to disk first
    when ``fsync`` is set, so it survives a power loss, at the cost of write speed) and then
    hard-linked to its final path. The link fails if that path exists, so of racing writers of
    the same content exactly one adds the file; a file of another size there (truncated by a
    crash before it reached the disk) is replaced.

    Args:
        tmp_dir: Folder for temporary files, on the same filesystem as the final paths; created
            on first use.
        fsync: Flush each temporary file to disk before it is linked.
    """

    def __init__(self, tmp_dir: str, *, fsync: bool) -> None:
        self._tmp_dir = tmp_dir
        self._fsync = fsync

    def holds(self, path: str, size: int) -> bool:
        """Whether a file of ``size`` bytes is at ``path``.

        Raises:
            ArtifactError: ``path`` could not be checked.
        """
        try:
            info = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise ArtifactError(f"could not check artifact file {path!r}: {exc}") from exc
        return S_ISREG(info.st_mode) and info.st_size == size

    def claim(self, path: str, size: int) -> bool:
        """Whether a file of ``size`` bytes is at ``path``; if so its modification time is now.

        The new time is what keeps the file from garbage collection, which removes only
        content unclaimed for a while: a writer that finds its content already stored claims
        it this way instead of writing it. The time is set first, so a file that a collection
        has just moved aside is not claimed (the caller writes it afresh). A file this process
        may not touch is not claimed either, so the caller writes a fresh copy over it.

        Raises:
            ArtifactError: ``path`` could not be checked.
        """
        try:
            os.utime(path)
            info = os.stat(path)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return False
        except OSError as exc:
            if exc.errno == errno.EROFS:
                return False
            raise ArtifactError(f"could not check artifact file {path!r}: {exc}") from exc
        return S_ISREG(info.st_mode) and info.st_size == size

    def write(self, fill: Callable[[IO[bytes], str], _T]) -> tuple[str, _T]:
        """A new, complete temporary file, and what ``fill`` returned.

        ``fill`` writes the content to the open file, whose path it is also given for errors.
        If anything fails, or ``fill`` raises, the file is removed and the exception propagates.

        Raises:
            ArtifactError: The file could not be created or written.
        """
        tmp = f"{self._tmp_dir}/{uuid.uuid4().hex}"
        try:
            os.makedirs(self._tmp_dir, exist_ok=True)
            target = open(tmp, "xb")  # noqa: SIM115 - closed below, or by _close_quietly
        except OSError as exc:
            raise ArtifactError(f"could not create temporary artifact file {tmp!r}: {exc}") from exc
        # No fallocate ahead of a large write, though it makes the write a third cheaper: the
        # file would have its full size on disk before its data, so after a power loss without
        # fsync a final file could read as zeros at the right size, and commit would not heal it.
        try:
            filled = fill(target, tmp)
            try:
                if self._fsync:
                    target.flush()
                    os.fsync(target.fileno())
                target.close()
            except OSError as exc:
                raise ArtifactError(
                    f"could not write temporary artifact file {tmp!r}: {exc}"
                ) from exc
        except BaseException:
            _close_quietly(target)
            self.discard(tmp)
            raise
        return tmp, filled

    def commit(self, tmp: str, path: str, size: int) -> bool:
        """Move the complete file ``tmp`` to ``path`` unless a file of ``size`` bytes is already
        there; True when it was (``tmp`` is then removed and that file claimed, see
        :meth:`claim`).

        Raises:
            OSError: The move failed; ``tmp`` is left for the caller to discard.
        """
        os.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        try:
            # A hard link fails if the path exists, so of racing writers exactly one adds the file.
            os.link(tmp, path)
            existed = False
        except FileExistsError:
            if not self.claim(path, size):
                # Heal a truncated file left by a crash before fsync; or the file was just
                # moved aside by garbage collection, or is not ours to claim: a fresh copy.
                os.replace(tmp, path)
                return False
            existed = True
        except OSError:
            # No hard links on this filesystem: a rename is just as atomic.
            if not self.claim(path, size):
                os.replace(tmp, path)
                return False
            existed = True
        os.unlink(tmp)
        return existed

    def remove_unclaimed(self, path: str, before: float, name: str) -> bool:
        """Remove the file at ``path`` unless it was written or claimed (:meth:`claim`) at or
        after ``before`` (seconds since the epoch); True when it was removed.

        The file is first moved aside into the temporary folder and its time read only there: a
        claim before the move shows in that time, and one after it finds no file (its writer
        then writes the content afresh). A claimed file is linked back, unless a fresh copy is
        there already. ``name`` says what the file is, for errors.

        Raises:
            ArtifactError: The file could not be moved, or put back.
        """
        aside = f"{self._tmp_dir}/gc-{uuid.uuid4().hex}"
        try:
            os.makedirs(self._tmp_dir, exist_ok=True)
            os.rename(path, aside)
        except FileNotFoundError:
            return False  # someone else removed it
        except OSError as exc:
            raise ArtifactError(f"could not remove artifact {name!r} at {path!r}: {exc}") from exc
        try:
            try:
                claimed = os.stat(aside).st_mtime >= before
            except FileNotFoundError:
                return False  # a collection at the same time took it for a leftover
            if not claimed:
                os.unlink(aside)
                return True
            with contextlib.suppress(FileExistsError):  # a writer found it gone and wrote it
                os.link(aside, path)
            os.unlink(aside)
        except OSError as exc:
            raise ArtifactError(
                f"could not put artifact {name!r} back from {aside!r} at {path!r}: {exc}"
            ) from exc
        return False

    def discard(self, tmp: str) -> None:
        """Remove ``tmp`` if it is there, never raising."""
        # Best effort: this runs while another error propagates, which must not be masked.
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def write_views(target: IO[bytes], views: Iterable[memoryview], name: str) -> None:
    """Write ``views`` to ``target`` in order, as they are (no copy).

    Raises:
        ArtifactError: The write failed; ``name`` says what ``target`` is.
    """
    try:
        for view in views:
            target.write(view)
    except OSError as exc:
        raise ArtifactError(f"could not write temporary artifact file {name!r}: {exc}") from exc


def _close_quietly(fileobj: IO[bytes]) -> None:
    with contextlib.suppress(OSError):
        fileobj.close()
