"""Run rows into ``RunRecord``s for the read path: built from tuples, decoded when first read.

A listing or a search builds hundreds of records of which a caller reads a few fields (the
id, the status, the params): every timestamp parsed and every JSON document decoded up front
cost more than the query. So the row's columns are selected as the driver returns them (text
on SQLite; ``datetime`` and decoded JSON from psycopg) and a :class:`StoredRunRecord` decodes
each of those fields the first time it is read, then keeps the value. The rows come straight from
the driver's cursor (:func:`driver_rows`): a ``Row`` per row cost as much as the record.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Executable, bindparam, select, type_coerce
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import NullType

from pipetrail.core.model import RunCause, RunRecord
from pipetrail.core.status import RunStatus
from pipetrail.storage.metadata.sql.tables import (
    pipeline,
    pipeline_run,
    pipeline_version,
    run_tag,
)

__all__ = [
    "IN_CHUNK",
    "RUN_COLUMNS",
    "StoredRunRecord",
    "build_records",
    "chunks",
    "driver_rows",
    "records_of",
]

#: Most ids bound in one ``IN (…)`` (SQLite allows 32,766 parameters in a statement).
IN_CHUNK = 1000


def chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    """``ids`` in slices of at most :data:`IN_CHUNK`."""
    for start in range(0, len(ids), IN_CHUNK):
        yield ids[start : start + IN_CHUNK]


def driver_rows(
    conn: Connection, statement: Executable, params: Mapping[str, Any] | None = None
) -> list[tuple[Any, ...]]:
    """The rows of a query as the driver's own tuples, not one SQLAlchemy ``Row`` each.

    The statement still goes through ``conn.execute`` (compiled once and cached, events, error
    translation); only the fetch is the cursor's. So no result processor runs: for columns
    the driver returns as they are meant (integers, text, floats, columns ``type_coerce``d to
    ``NullType`` and decoded later, booleans read as truthy). A driver error while fetching
    is raised as SQLAlchemy's, like one while executing.
    """
    result: Any = conn.execute(statement, params)
    try:
        return result.cursor.fetchall()  # type: ignore[no-any-return]
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(
            str(statement), params, exc, conn.dialect.loaded_dbapi.Error
        ) from exc
    finally:
        result.close()


def _time(value: Any) -> datetime | None:
    """A stored timestamp as a UTC-aware datetime (SQLite keeps naive UTC text)."""
    if value is None:
        return None
    if type(value) is str:
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
    return value.astimezone(UTC)  # type: ignore[no-any-return]


_SCAN = json.JSONDecoder().raw_decode


def _json(value: Any) -> Any:
    """A stored JSON document (text on SQLite; psycopg hands JSONB over decoded).

    The decoder's own scan of a document that is the whole text (as the store writes them):
    half what ``json.loads`` costs, which first and last matches the text for whitespace.
    Anything else goes through ``json.loads``, errors and all.
    """
    if type(value) is not str:
        return value
    try:
        document, end = _SCAN(value)
    except ValueError:
        return json.loads(value)
    return document if end == len(value) else json.loads(value)


class _Decoded:
    """A field of a :class:`StoredRunRecord` decoded from its stored form on first read."""

    __slots__ = ("decode", "name", "raw")

    def __init__(self, name: str, decode: Callable[[Any], Any]) -> None:
        self.name = name
        self.raw = "_stored_" + name
        self.decode = decode

    def __get__(self, record: object, owner: type | None = None) -> Any:
        if record is None:
            return self
        fields = record.__dict__
        try:
            return fields[self.name]
        except KeyError:
            # The stored form stays: two threads reading a shared record both find it.
            value = fields[self.name] = self.decode(fields[self.raw])
            return value

    def __set__(self, record: object, value: Any) -> None:
        # dataclasses.replace() builds a new record through RunRecord's __init__.
        record.__dict__[self.name] = value


#: The fields decoded on first read, and how.
_LAZY: dict[str, Callable[[Any], Any]] = {
    "created_at": _time,
    "started_at": _time,
    "finished_at": _time,
    "heartbeat_at": _time,
    "cancel_requested_at": _time,
    "sla_due_at": _time,
    "sla_missed_at": _time,
    "params": _json,
    "param_types": _json,
    "variables": _json,
    "git": _json,
}


class StoredRunRecord(RunRecord):
    """A ``RunRecord`` read from the store, its timestamps and JSON fields decoded when read.

    It is a ``RunRecord`` in every way a caller can see (fields, equality, ``replace``,
    pickling); only the work of decoding is moved to where a field is read.
    """

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunRecord):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in _FIELDS)

    __hash__ = RunRecord.__hash__

    def __repr__(self) -> str:
        shown = ", ".join(f"{f}={getattr(self, f)!r}" for f in _FIELDS)
        return f"RunRecord({shown})"


for _name, _decode in _LAZY.items():
    setattr(StoredRunRecord, _name, _Decoded(_name, _decode))

_FIELDS = tuple(RunRecord.__dataclass_fields__)

#: The ``pipeline_run`` columns a record is built from, in this order: first those copied as
#: they are into its fields (the ones decoded later as the driver returns them), then those it
#: is built from otherwise.
_COPIED = (
    "id",
    "created_at",
    "started_at",
    "finished_at",
    "user",
    "host",
    "trigger",
    "params",
    "param_types",
    "variables",
    "origin_run_id",
    "error",
    "git",
    "code_key",
    "heartbeat_at",
    "runner_host",
    "runner_pid",
    "cancel_requested_at",
    "timeout_s",
    "lease",
    "sla_due_at",
    "sla_state",
    "sla_missed_at",
)
_COLUMNS = (*_COPIED, "status", "version_id", "trigger_name", "scheduled_at", "upstream_run_id")
RUN_COLUMNS: tuple[ColumnElement[Any], ...] = tuple(
    type_coerce(pipeline_run.c[name], NullType()).label(name)
    if name in _LAZY or name == "scheduled_at"
    else pipeline_run.c[name]
    for name in _COLUMNS
)
#: Where a row of ``RUN_COLUMNS`` has the version and the upstream run.
_VERSION_AT = _COLUMNS.index("version_id")
_UPSTREAM_AT = _COLUMNS.index("upstream_run_id")
#: The record's ``__dict__`` keys of a row's columns, in order: the copied ones (raw fields
#: under their stored name), then the rest under names of their own, replaced or dropped as the
#: record is built, then the pipeline's name, the version and the environment's hash.
_KEYS = (
    *(f"_stored_{name}" if name in _LAZY else name for name in _COPIED),
    "status",
    "_version_id",
    "_trigger_name",
    "_scheduled_at",
    "_upstream_run_id",
    "pipeline",
    "version",
    "environment_hash",
)
#: A record's ``__dict__`` before it is filled: every key it ends with, and those dropped.
_TEMPLATE: dict[str, Any] = dict.fromkeys((*_KEYS, "user_tags", "system_tags", "dag", "cause"))
_STATUS = {s.value: s for s in RunStatus}
#: A run's tags, user tags first (``system`` is 0/1 on SQLite, a bool on PostgreSQL).
_TAGS_OF = (
    select(run_tag.c.run_id, run_tag.c.tag, run_tag.c.system)
    .where(run_tag.c.run_id.in_(bindparam("ids", expanding=True)))
    .order_by(run_tag.c.tag)
)
_DAGS_OF = select(pipeline_version.c.id, pipeline_version.c.dag).where(
    pipeline_version.c.id.in_(bindparam("ids", expanding=True))
)
_PATHSPECS_OF = (
    select(pipeline_run.c.id, pipeline.c.name)
    .join(pipeline, pipeline.c.id == pipeline_run.c.pipeline_id)
    .where(pipeline_run.c.id.in_(bindparam("ids", expanding=True)))
)


def records_of(
    conn: Connection, rows: Sequence[Sequence[Any]], dags: dict[int, Any] | None = None
) -> list[RunRecord]:
    """Records of rows of :data:`RUN_COLUMNS` followed by the pipeline's name, the version and
    the environment's hash, with their tags, DAGs (unless given, by version id) and the
    pathspecs of their upstream runs: a query for each, whatever the number of rows."""
    if not rows:
        return []
    tags: dict[int, tuple[list[str], list[str]]] = {}
    for chunk in chunks([r[0] for r in rows]):
        for run_id, tag, system in driver_rows(conn, _TAGS_OF, {"ids": chunk}):
            found = tags.get(run_id)
            if found is None:
                found = tags[run_id] = ([], [])
            found[1 if system else 0].append(tag)
    # One decoded DAG per version, not per run: thousands of runs share a handful.
    if dags is None:
        versions = list({r[_VERSION_AT] for r in rows})
        dags = dict(conn.execute(_DAGS_OF, {"ids": versions}).all())
    upstream: dict[int, str] = {}
    upstream_ids = list({r[_UPSTREAM_AT] for r in rows} - {None})
    if upstream_ids:
        for chunk in chunks(upstream_ids):
            for run_id, name in driver_rows(conn, _PATHSPECS_OF, {"ids": chunk}):
                upstream[run_id] = f"{name}/{run_id}"
    return build_records(rows, tags, dags, upstream)


def build_records(
    rows: Sequence[Sequence[Any]],
    tags: dict[int, tuple[list[str], list[str]]],
    dags: dict[int, Any],
    upstream: dict[int, str],
) -> list[RunRecord]:
    """Records from rows of :data:`RUN_COLUMNS` followed by the pipeline's name, the version and
    the environment's hash; tags by run id, decoded DAGs by version id, and the pathspecs of
    upstream runs."""
    new, set_fields, keys, statuses = object.__new__, object.__setattr__, _KEYS, _STATUS
    empty: tuple[list[str], list[str]] = ([], [])
    records: list[RunRecord] = []
    append = records.append
    for row in rows:
        # A copy of a dict of every key (no resizing as it fills), filled in C: zip stops at
        # the environment's hash (get_run's row brings the DAG after it). Then the few fields
        # built otherwise.
        fields = _TEMPLATE.copy()
        fields.update(zip(keys, row, strict=False))
        user_tags, system_tags = tags.get(row[0], empty)
        fields["status"] = statuses[fields["status"]]
        fields["user_tags"] = tuple(user_tags)
        fields["system_tags"] = tuple(system_tags)
        fields["dag"] = dags[fields.pop("_version_id")]
        trigger = fields.pop("_trigger_name")
        scheduled = fields.pop("_scheduled_at")
        upstream_id = fields.pop("_upstream_run_id")
        fields["cause"] = (
            None
            if trigger is None
            else RunCause(trigger, _time(scheduled), upstream_id, upstream.get(upstream_id))  # type: ignore[arg-type]
        )
        record = new(StoredRunRecord)
        set_fields(record, "__dict__", fields)
        append(record)
    return records
