"""What a content-addressed store needs for remote filesystems: a local spool, error reasons."""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from collections.abc import Mapping
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["Spool", "bucket_missing", "modified_at", "reason"]

# Exception class names (anywhere in the MRO) that mean the endpoint could not be reached:
# botocore's, aiohttp's and the builtin's, named so that none of them is imported here.
_CONNECTION_ERRORS = frozenset(
    {
        "ConnectionError",
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ClientConnectorError",
        "ServerDisconnectedError",
        "TimeoutError",
    }
)


class Spool(io.RawIOBase):
    """Write-only holder of content on its way to a remote store: memory, then a temporary file.

    The file is created only once the content outgrows ``limit`` and is deleted on close, so a
    write that fails anywhere leaves nothing behind.
    """

    def __init__(self, limit: int, folder: str | None) -> None:
        super().__init__()
        self._limit = limit
        self._folder = folder
        self.buffer = bytearray()
        self.file: IO[bytes] | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        view = memoryview(data)
        if self.file is None:
            if len(self.buffer) + view.nbytes <= self._limit:
                self.buffer += view
                return view.nbytes
            self.file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by close()
                dir=self._folder, prefix="pipetrail-", suffix=".part"
            )
            self.file.write(self.buffer)
            self.buffer = bytearray()
        return self.file.write(view)

    def close(self) -> None:
        if self.file is not None:
            _close_quietly(self.file)
        self.buffer = bytearray()
        super().close()


def bucket_missing(exc: BaseException) -> bool:
    # s3fs reports a missing bucket as FileNotFoundError, as it does a missing key.
    text = str(exc).lower()
    return "bucket does not exist" in text or "nosuchbucket" in text


def reason(exc: BaseException, action: str) -> str:
    """One line saying what failed and what to check."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    names = {kind.__name__ for kind in type(exc).__mro__}
    if isinstance(exc, FileNotFoundError) and bucket_missing(exc):
        why = "the bucket does not exist; create it, or point PIPETRAIL_ARTIFACTS at one that does"
    elif isinstance(exc, PermissionError):
        why = (
            f"access denied ({detail}); check the credentials (AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or PIPETRAIL_ARTIFACTS_OPTIONS)"
        )
    elif names & _CONNECTION_ERRORS:
        why = (
            f"cannot reach the endpoint ({detail}); check AWS_ENDPOINT_URL or the endpoint_url "
            "in PIPETRAIL_ARTIFACTS_OPTIONS, and the network"
        )
    else:
        why = f"{type(exc).__name__}: {detail}"
    return f"could not {action}: {why}"


def modified_at(info: Mapping[str, Any]) -> float:
    """Last-modified time of an fsspec ``info`` entry (s3fs: ``LastModified``; others:
    ``mtime`` or ``created``), in seconds since the epoch. When none is given it is now: an
    object of unknown age counts as new, which garbage collection never removes."""
    for name in ("LastModified", "mtime", "last_modified", "updated", "created"):
        value = info.get(name)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return time.time()


def _close_quietly(fileobj: IO[bytes]) -> None:
    with contextlib.suppress(OSError):
        fileobj.close()
