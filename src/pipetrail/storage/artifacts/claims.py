"""Claims in a remote artifact store: how a put of stored content keeps it from garbage collection.

A local file is claimed by setting its modification time (``FolderWriter.claim``); an object
store has no such touch, and a copy of an object onto itself costs as much as the object is
large. So a put that finds its content stored writes an empty claim,
``<root>/claims/<key>/<unique name>``, *before* it checks the object once more, and a
collection removes an object first and only then reads the claims: whichever comes second
sees the other (the writer finds the object gone and uploads it, or the collection finds the
claim and puts the object back from the copy it set aside). Each claim is an object of its
own, never rewritten, so removing old claims never removes one made since.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from pipetrail.storage.artifacts.remote import modified_at

if TYPE_CHECKING:
    import fsspec

__all__ = ["CLAIMS_DIR", "RemoteClaims"]

#: Two levels deep and named by more than a key, so no listing of objects takes one for an object.
CLAIMS_DIR = "claims"


class RemoteClaims:
    """The claims of one remote store, and removal that respects them.

    Args:
        fs: The store's filesystem (s3fs, memory, ...), without a listings cache.
        root: The store's root path on ``fs``.
        aside_dir: Where removal sets objects aside (the store's temporary folder).

    Errors of ``fs`` propagate as they are; the store turns them into its own.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, aside_dir: str) -> None:
        self._fs = fs
        self._top = f"{root}/{CLAIMS_DIR}"
        self._aside_dir = aside_dir

    def claim(self, key: str) -> None:
        """Record that content under ``key`` was just stored again."""
        self._fs.pipe_file(f"{self._top}/{key}/{uuid.uuid4().hex}", b"")

    def since(self, before: float) -> set[str]:
        """Keys claimed at or after ``before`` (seconds since the epoch)."""
        return {key for key, _, at in self._listing() if at >= before}

    def expire(self, before: float) -> int:
        """Remove the claims made before ``before``; how many."""
        old = [path for _, path, at in self._listing() if at < before]
        if old:
            self._fs.rm(old)
        return len(old)

    def remove_unclaimed(self, paths: dict[str, str], before: float) -> list[str]:
        """Remove the objects at ``paths`` (key -> path) not written or claimed since
        ``before``; the keys removed. Each is copied aside, removed, and put back from the copy
        when a claim made meanwhile shows up once they are gone."""
        claimed = self.since(before)
        aside: dict[str, str] = {}
        for key, path in paths.items():
            if key in claimed:
                continue
            try:
                if modified_at(self._fs.info(path)) >= before:
                    continue  # written again since the caller listed it
            except FileNotFoundError:
                continue  # someone else removed it
            copy = f"{self._aside_dir}/gc-{uuid.uuid4().hex}"
            self._fs.copy(path, copy)
            aside[key] = copy
        if aside:
            self._fs.rm([paths[key] for key in aside])
        # Only now, with the objects gone, are claims read again: a put that claimed one
        # before it went wrote its claim first, so it is in this listing.
        claimed = self.since(before)
        for key, copy in aside.items():
            if key in claimed:
                self._fs.copy(copy, paths[key])
        if aside:
            self._fs.rm(list(aside.values()))
        return [key for key in aside if key not in claimed]

    def _listing(self) -> list[tuple[str, str, float]]:
        """Every claim as ``(key, path, time)``."""
        try:
            found = self._fs.find(self._top, detail=True)
        except FileNotFoundError:
            return []
        return [
            (str(path).rstrip("/").rsplit("/", 2)[-2], str(path), modified_at(info))
            for path, info in found.items()
            if info.get("type") == "file" and str(path).count("/") > self._top.count("/") + 1
        ]
