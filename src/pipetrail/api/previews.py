"""Previews of a task's outputs: rows of a table, the head of an array, a small value or its
repr, the first lines of a file; always JSON-safe (NaN and infinities become null)."""

from __future__ import annotations

import json
import math
from typing import Any

from pipetrail.client import Reader
from pipetrail.core.model import ArtifactLink

__all__ = ["artifact_url", "jsonable", "preview"]

#: Most bytes read from a file for a text preview.
TEXT_HEAD_BYTES = 64 * 1024
#: Longest repr or string kept in a preview.
REPR_CHARS = 4000
#: A JSON sample bigger than this is replaced by its (cut) repr.
SAMPLE_JSON_CHARS = 256 * 1024
_TEXT_TYPES = ("application/json", "application/xml", "application/x-yaml", "application/csv")


def artifact_url(key: str) -> str:
    """Where the API serves the artifact ``key``."""
    return f"/api/artifacts/{key}"


def preview(reader: Reader, link: ArtifactLink, sample_count: int) -> dict[str, Any]:
    """The preview of one output as the fields of ``OutputPreview``."""
    record = link.artifact
    base: dict[str, Any] = {
        "name": link.name,
        "content_type": record.content_type,
        "type_name": record.type_name,
        "size": record.size,
        "shape": None,
        "sample_data": None,
        "truncated": False,
        "download_url": artifact_url(record.key),
        "preview_error": None,
    }
    if record.serializer == "external":
        return {**base, "type": "external", "download_url": None}
    try:
        if record.serializer in ("file", "archive"):
            return {**base, **_file_preview(reader, link, sample_count)}
        return {**base, **_value_preview(reader.load(link), sample_count)}
    except Exception as exc:  # any failure to load (even unpickling) is reported, not raised
        return {**base, "type": "error", "preview_error": f"{type(exc).__name__}: {exc}"}


def _file_preview(reader: Reader, link: ArtifactLink, sample_count: int) -> dict[str, Any]:
    content_type = link.artifact.content_type
    if link.artifact.serializer == "archive" or content_type == "inode/directory":
        return {"type": "binary"}
    if content_type.startswith("image/"):
        return {"type": "image"}
    with reader.cas.open(link.artifact.key) as fileobj:
        head = fileobj.read(TEXT_HEAD_BYTES)
    textual = content_type.startswith("text/") or content_type in _TEXT_TYPES
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if not textual or exc.start < len(head) - 4:
            return {"type": "binary"}
        text = head[: exc.start].decode("utf-8")  # a character cut at the end of the head
    lines = text.splitlines(keepends=True)
    shown = "".join(lines[:sample_count])
    return {
        "type": "text",
        "sample_data": shown,
        "truncated": len(lines) > sample_count or link.artifact.size > len(head),
    }


def _value_preview(value: Any, sample_count: int) -> dict[str, Any]:
    kind = type(value)
    module = kind.__module__.split(".")[0]
    if module == "pandas" and hasattr(value, "to_frame") and not hasattr(value, "columns"):
        value = value.to_frame()  # a Series previews as a one-column table
    if module == "pandas" and hasattr(value, "columns") and hasattr(value, "to_json"):
        return _table(value, sample_count)
    if module == "numpy" and hasattr(value, "shape") and hasattr(value, "tolist"):
        return _array(value, sample_count)
    if isinstance(value, (bytes, bytearray)):
        return {"type": "binary", "truncated": False}
    if value is None or isinstance(value, (bool, int, float, str, list, dict, tuple)):
        sample, truncated = _head(value, sample_count)
        safe = jsonable(sample)
        if len(json.dumps(safe)) <= SAMPLE_JSON_CHARS:
            return {"type": "object", "sample_data": safe, "truncated": truncated}
    text = repr(value)
    return {
        "type": "object",
        "sample_data": text[:REPR_CHARS],
        "truncated": len(text) > REPR_CHARS,
    }


def _table(frame: Any, sample_count: int) -> dict[str, Any]:
    head = frame.head(sample_count)
    split = json.loads(head.to_json(orient="split", date_format="iso", default_handler=str))
    columns = [str(c) for c in split["columns"]]
    rows = [dict(zip(columns, row, strict=False)) for row in split["data"]]
    return {
        "type": "table",
        "shape": [int(n) for n in frame.shape],
        "sample_data": {"columns": columns, "rows": jsonable(rows)},
        "truncated": len(frame) > sample_count,
    }


def _array(array: Any, sample_count: int) -> dict[str, Any]:
    shape = [int(n) for n in array.shape]
    if not shape:
        return {"type": "array", "shape": [], "sample_data": jsonable(array.tolist())}
    # The head along every axis: a 1 x 10^7 array must not preview ten million numbers.
    head = array[tuple(slice(0, sample_count) for _ in shape)]
    return {
        "type": "array",
        "shape": shape,
        "sample_data": jsonable(head.tolist()),
        "truncated": any(n > sample_count for n in shape),
    }


def _head(value: Any, count: int) -> tuple[Any, bool]:
    if isinstance(value, (list, tuple)):
        return list(value[:count]), len(value) > count
    if isinstance(value, dict):
        items = list(value.items())
        return dict(items[:count]), len(items) > count
    if isinstance(value, str):
        return value[:REPR_CHARS], len(value) > REPR_CHARS
    return value, False


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON: non-finite floats become None, unknown objects their repr."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if depth > 32:
        return repr(value)[:REPR_CHARS]
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, depth + 1) for v in value]
    return repr(value)[:REPR_CHARS]
