"""The dashboard's own static files (CSS, JS, vendored libraries), served with safe paths."""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path, PurePosixPath

from fastapi import Response
from fastapi.responses import FileResponse

__all__ = ["STATIC", "asset_version", "resolve_static", "static_response"]

STATIC = Path(__file__).parent / "static"

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


def resolve_static(path: str, root: Path = STATIC) -> Path | None:
    """The file ``path`` names under ``root``, or None when it names nothing there.

    Only plain relative paths are served: no ``..``, no hidden parts, no backslashes or NUL,
    and the resolved file (symlinks followed) must still be inside ``root``.
    """
    if not path or "\\" in path or "\x00" in path or path.startswith("/"):
        return None
    parts = PurePosixPath(path).parts
    if not parts or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    base = root.resolve()
    target = base.joinpath(*parts).resolve()
    if not target.is_relative_to(base) or not target.is_file():
        return None
    return target


def static_response(path: str, *, versioned: bool) -> Response:
    """The file as a response (404 when there is none); cached for long when ``versioned``."""
    target = resolve_static(path)
    if target is None:
        return Response("not found", status_code=404, media_type="text/plain")
    media = _TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0]
    cache = "public, max-age=31536000, immutable" if versioned else "no-cache"
    return FileResponse(
        target,
        media_type=media or "application/octet-stream",
        headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"},
    )


def asset_version(root: Path = STATIC) -> str:
    """A short digest of the static files' names, sizes and times: changes when they do."""
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:10]
