"""Artifact bytes, streamed from the content-addressed store by key.

A key is 64 lowercase hex characters, checked by the route (422 otherwise) before the store is
asked, and the store checks it again: no text from the URL ever becomes part of a path, so
``../`` in any encoding reaches nothing outside the store. Only artifacts recorded in the
metadata store are served.
"""

from __future__ import annotations

import mimetypes
import re
import urllib.parse
from collections.abc import Iterator
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse

from pipetrail.api.deps import Context
from pipetrail.api.errors import ERROR_RESPONSES
from pipetrail.core.model import ArtifactRecord
from pipetrail.errors import NotFoundError

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["artifacts"], responses=ERROR_RESPONSES)

CHUNK_BYTES = 256 * 1024
KEY_PATTERN = r"^[0-9a-f]{64}$"
#: Shown in the browser; anything else (HTML, SVG, scripts) is a download, never run here.
_INLINE_TYPES = frozenset(
    {
        "application/json",
        "application/pdf",
        "image/gif",
        "image/jpeg",
        "image/png",
        "image/webp",
        "text/csv",
        "text/plain",
    }
)
#: Serialized values whose media type no browser knows are sent as plain bytes.
_BYTES_TYPES = frozenset(
    {"application/x-npy", "application/x-joblib", "application/x-python-pickle"}
)
_EXTENSIONS = {
    "application/x-npy": ".npy",
    "application/vnd.apache.parquet": ".parquet",
    "application/x-joblib": ".joblib",
    "application/x-python-pickle": ".pkl",
    "application/json": ".json",
}


@router.get(
    "/artifacts/{hash}",
    response_class=StreamingResponse,
    summary="Download an artifact",
    responses={
        200: {
            "description": "The artifact's bytes, with its recorded content type.",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
def get_artifact(
    ctx: Context,
    key: Annotated[
        str, Path(alias="hash", pattern=KEY_PATTERN, description="The artifact's content hash.")
    ],
    download: Annotated[bool, Query(description="Always send as an attachment.")] = False,
) -> StreamingResponse:
    """Stream the artifact's bytes in chunks with its content type and a file name."""
    record = ctx.workspace.store.artifact(key)
    if record.serializer == "external":
        raise NotFoundError(
            f"artifact {key!r} is an external input recorded by hash only; its bytes were "
            "never copied into the store"
        )
    fileobj = ctx.workspace.cas.open(key)
    links = ctx.workspace.store.links_of_artifacts([key])
    filename = _filename(record, links[0].name if links else key[:16])
    media_type = (
        "application/octet-stream" if record.content_type in _BYTES_TYPES else record.content_type
    )
    inline = record.content_type in _INLINE_TYPES and not download
    quoted = urllib.parse.quote(filename, safe="")
    headers = {
        "Content-Disposition": (
            f'{"inline" if inline else "attachment"}; filename="{_ascii(filename)}"; '
            f"filename*=UTF-8''{quoted}"
        ),
        "Content-Length": str(record.size),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, max-age=31536000, immutable",
        "ETag": f'"{key}"',
    }
    return StreamingResponse(_chunks(fileobj), media_type=media_type, headers=headers)


def _chunks(fileobj: BinaryIO) -> Iterator[bytes]:
    with fileobj:
        while chunk := fileobj.read(CHUNK_BYTES):
            yield chunk


def _filename(record: ArtifactRecord, name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or record.key[:16]
    extension = _EXTENSIONS.get(record.content_type) or mimetypes.guess_extension(
        record.content_type
    )
    if extension and not stem.lower().endswith(extension):
        stem += extension
    return stem


def _ascii(name: str) -> str:
    return name.encode("ascii", "replace").decode().replace('"', "_")
