"""Cursor pages of runs over the store's newest-first listing, and the ``q`` text search.

The cursor is opaque to clients. Inside it is the id of the last run of the page (and, as a
hint of how far to read, its position). With the default order (newest first) the next page is
the runs with a smaller id, so runs recorded meanwhile never shift a page; with ``order_by``
it is the runs after that run in the ordering.

``q`` is matched here, case-insensitively, against each run's pipeline name, tags (user and
system), parameter names and values, and error message (which names the failed steps and their
exceptions); the other filters are applied by the store first. The store lists from the top, so
a page deep in a large store reads every run before it: the store gaining a keyset bound and a
text condition (see the report to the lead) makes each page one indexed query.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Iterable

from pipetrail.api.errors import ApiError
from pipetrail.core.bounds import MAX_COUNT, MAX_ID
from pipetrail.core.model import RunRecord
from pipetrail.storage.metadata.base import MetadataStore, RunQuery

__all__ = [
    "Cursor",
    "RunPage",
    "decode_cursor",
    "decode_offset",
    "encode_cursor",
    "encode_offset",
    "matches_text",
    "page_runs",
]


@dataclasses.dataclass(frozen=True)
class Cursor:
    """Where the previous page ended."""

    last_id: int
    position: int


@dataclasses.dataclass(frozen=True)
class RunPage:
    """One page of runs and the cursor of the next one."""

    runs: list[RunRecord]
    next_cursor: str | None


def encode_cursor(cursor: Cursor) -> str:
    """The opaque text form of ``cursor``."""
    raw = f"{cursor.last_id}:{cursor.position}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    """Parse a cursor made by :func:`encode_cursor`.

    Raises:
        ApiError: 422 for text that is not such a cursor.
    """
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        last, position = raw.split(":")
        cursor = Cursor(int(last), int(position))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(
            422, "ValidationError", f"invalid cursor {text!r}: pass a next_cursor as returned"
        ) from None
    if not (0 <= cursor.last_id <= MAX_ID and 0 <= cursor.position <= MAX_COUNT):
        raise ApiError(
            422, "ValidationError", f"invalid cursor {text!r}: pass a next_cursor as returned"
        )
    return cursor


def matches_text(run: RunRecord, text: str) -> bool:
    """Whether ``text`` occurs (ignoring case) in the run's name, tags, params or error."""
    needle = text.casefold()
    return any(needle in hay.casefold() for hay in _haystacks(run))


def _haystacks(run: RunRecord) -> Iterable[str]:
    yield run.pipeline
    yield from run.user_tags
    yield from run.system_tags
    for name, value in run.params.items():
        yield name
        yield value if isinstance(value, str) else json.dumps(value)
    if run.error:
        yield run.error


def page_runs(
    store: MetadataStore,
    query: RunQuery,
    *,
    limit: int,
    cursor: Cursor | None,
    text: str | None,
) -> RunPage:
    """The page of ``limit`` runs after ``cursor`` among those ``query`` (and ``text``) select."""
    keyset = not query.order_by
    want = limit + 1
    if keyset and cursor is not None:
        # Newest first: the next page is the runs older than the last one shown, from the index.
        query = dataclasses.replace(query, before_id=cursor.last_id)
    fetch = (0 if keyset else (cursor.position if cursor else 0)) + want
    if text:
        fetch *= 4
    while True:
        rows = store.list_runs(dataclasses.replace(query, limit=fetch))
        exhausted = len(rows) < fetch
        start = 0
        if cursor is not None:
            if keyset:
                start = next((i for i, r in enumerate(rows) if r.id < cursor.last_id), len(rows))
            else:
                found = next((i for i, r in enumerate(rows) if r.id == cursor.last_id), None)
                if found is None and not exhausted:
                    fetch *= 2
                    continue
                # The run the page ended on left the selection: resume at its old position.
                start = found + 1 if found is not None else min(cursor.position, len(rows))
        chosen = [
            (i, r) for i, r in enumerate(rows[start:], start) if not text or matches_text(r, text)
        ]
        if len(chosen) >= want or exhausted:
            break
        fetch *= 2
    page = chosen[:limit]
    next_cursor = None
    if len(chosen) > limit and page:
        position, last = page[-1]
        next_cursor = encode_cursor(Cursor(last.id, position + 1))
    return RunPage([r for _, r in page], next_cursor)


def encode_offset(offset: int) -> str:
    """The opaque cursor of a position in a metric series."""
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def decode_offset(text: str) -> int:
    """Parse a cursor made by :func:`encode_offset`.

    Raises:
        ApiError: 422 for text that is not such a cursor.
    """
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        prefix, offset = raw.split(":")
        value = int(offset)
        if prefix != "o" or not 0 <= value <= MAX_COUNT:
            raise ValueError(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(
            422, "ValidationError", f"invalid cursor {text!r}: pass a next_cursor as returned"
        ) from None
    return value
