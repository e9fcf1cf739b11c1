"""Previews of a task's outputs: rows of a table, the head of an array, a small value or its
repr, the first lines of a file; always JSON-safe (NaN and infinities become null).

A preview never reads a large artifact whole: a file shows its first bytes, an array (``.npy``)
is read only where its head lies, a big table (Parquet) only its first rows, and other values
over :data:`LOAD_LIMIT_BYTES` are not loaded at all (download them instead).
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any, BinaryIO

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
#: Values stored in more bytes than this are previewed from part of their bytes, or not at all.
LOAD_LIMIT_BYTES = 32 * 1024 * 1024
#: Most separate reads to gather an array's head (one per row of the head, along all but one axis).
_MAX_ARRAY_READS = 1024
#: Read size for the scattered reads of a partial preview.
_PARTIAL_BLOCK = 1024 * 1024


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
        if record.serializer == "bytes":
            return {**base, "type": "binary"}
        if record.serializer == "npy":
            partial = _npy_preview(reader, link, sample_count)
            if partial is not None:
                return {**base, **partial}
        if record.size > LOAD_LIMIT_BYTES:
            return {**base, **_large_preview(reader, link, sample_count)}
        return {**base, **_value_preview(reader.load(link), sample_count)}
    except Exception as exc:  # any failure to load (even unpickling) is reported, not raised
        return {**base, "type": "error", "preview_error": f"{type(exc).__name__}: {exc}"}


def _file_preview(reader: Reader, link: ArtifactLink, sample_count: int) -> dict[str, Any]:
    content_type = link.artifact.content_type
    if link.artifact.serializer == "archive" or content_type == "inode/directory":
        return {"type": "binary"}
    if content_type.startswith("image/"):
        return {"type": "image"}
    return _text_head(reader, link, sample_count)


def _text_head(reader: Reader, link: ArtifactLink, sample_count: int) -> dict[str, Any]:
    content_type = link.artifact.content_type
    with reader.cas.open(link.artifact.key, block_size=TEXT_HEAD_BYTES) as fileobj:
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


def _large_preview(reader: Reader, link: ArtifactLink, sample_count: int) -> dict[str, Any]:
    """A value too big to load for a preview: the head of its table or its text, if it has one."""
    record = link.artifact
    if record.serializer == "parquet":
        return _parquet_preview(reader, link, sample_count)
    if record.serializer == "json":
        return _text_head(reader, link, sample_count)
    return {
        "type": "object",
        "truncated": True,
        "preview_error": (
            f"too large to preview: {record.size} bytes of {record.serializer} (previews load at "
            f"most {LOAD_LIMIT_BYTES} bytes); download it to look inside"
        ),
    }


def _parquet_preview(reader: Reader, link: ArtifactLink, sample_count: int) -> dict[str, Any]:
    """The first rows of a Parquet table, read without the rest of the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with reader.cas.open(link.artifact.key, block_size=_PARTIAL_BLOCK) as fileobj:
        # Buffered, not pre-buffered: only the pages of the first rows are read, not whole
        # column chunks.
        parquet = pq.ParquetFile(fileobj, buffer_size=_PARTIAL_BLOCK, pre_buffer=False)
        rows = parquet.metadata.num_rows
        schema = parquet.schema_arrow
        batches = list(itertools.islice(parquet.iter_batches(batch_size=sample_count), 1))
        table = (
            pa.Table.from_batches(batches) if batches else schema.empty_table()
        ).replace_schema_metadata(schema.metadata)
        head = table.to_pandas()
    preview = _table(head, sample_count)
    return {**preview, "shape": [int(rows), int(head.shape[1])], "truncated": rows > len(head)}


def _npy_preview(reader: Reader, link: ArtifactLink, sample_count: int) -> dict[str, Any] | None:
    """The head of a stored ``.npy`` array, read from just the bytes it lies in.

    None when it cannot be read in part (an unusual header, too many separate pieces).
    """
    import numpy as np

    with reader.cas.open(link.artifact.key, block_size=_PARTIAL_BLOCK) as fileobj:
        version = np.lib.format.read_magic(fileobj)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fileobj)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fileobj)
        else:
            return None
        if dtype.hasobject or dtype.itemsize == 0:
            return None
        head = _array_head(fileobj, fileobj.tell(), shape, fortran, dtype, sample_count)
    if head is None:
        return None
    result = _array(head, sample_count)
    return {
        **result,
        "shape": [int(n) for n in shape],
        "truncated": any(n > sample_count for n in shape),
    }


def _array_head(
    fileobj: BinaryIO,
    start: int,
    shape: tuple[int, ...],
    fortran: bool,
    dtype: Any,
    count: int,
) -> Any:
    """``array[:count, :count, ...]`` of the array stored from ``start``, read piece by piece."""
    import numpy as np

    head_shape = tuple(min(n, count) for n in shape)
    head = np.empty(head_shape, dtype=dtype)
    if head.size == 0:
        return head
    if not shape:
        fileobj.seek(start)
        return np.frombuffer(fileobj.read(dtype.itemsize), dtype=dtype).reshape(())
    # Work in C order; a Fortran-ordered array is the C-ordered transpose of its reversed shape.
    dims = tuple(reversed(shape)) if fortran else shape
    head_dims = tuple(reversed(head_shape)) if fortran else head_shape
    strides = [math.prod(dims[i + 1 :]) for i in range(len(dims))]
    outer = head_dims[:-1]
    if math.prod(outer) > _MAX_ARRAY_READS:
        return None
    piece = head_dims[-1] * dtype.itemsize
    target = np.empty(head_dims, dtype=dtype)
    for index in itertools.product(*(range(n) for n in outer)):
        offset = sum(i * stride for i, stride in zip(index, strides, strict=False))
        fileobj.seek(start + offset * dtype.itemsize)
        data = fileobj.read(piece)
        if len(data) != piece:
            return None  # a truncated file: let the full load report it
        target[index] = np.frombuffer(data, dtype=dtype)
    return target.T if fortran else target


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
