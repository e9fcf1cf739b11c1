"""Run rows into ``RunRecord``s for the read path: built from tuples, decoded when first read.

A listing or a search builds hundreds of records of which a caller reads a few fields (the
id, the status, the params): every timestamp parsed and every JSON document decoded up front
cost more than the query. So the row's columns are selected as the driver returns them (text
on SQLite; ``datetime`` and decoded JSON from psycopg) and a :class:`StoredRunRecord` decodes
each of those fields the first time it is read, then keeps the value. The rows come straight from
the driver's cursor (:func:`driver_rows`): a ``Row`` per row cost as much as the record.

A client's listing goes further (:func:`listed_records`): its rows hold only what a listed run
is mostly read for (:data:`LISTED_COLUMNS`: identity, status and times, user, params, error and
the columns that change while a run goes on); its tags and what the run recorded when it was
created (host, trigger, param types, variables, git, code, environment, version, DAG, cause,
SLA due time) are read the first time one record asks for them, for every record of the
listing at once (:class:`Listing`): one query per group, not one per run.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Executable, bindparam, select, type_coerce
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import NullType

from pipetrail.core.model import RunCause, RunRecord
from pipetrail.core.status import RunStatus
from pipetrail.errors import NotFoundError
from pipetrail.storage.metadata.sql.tables import (
    environment,
    pipeline,
    pipeline_run,
    pipeline_version,
    run_tag,
)

__all__ = [
    "IN_CHUNK",
    "LISTED_COLUMNS",
    "RUN_COLUMNS",
    "Listing",
    "StoredRunRecord",
    "build_records",
    "chunks",
    "driver_rows",
    "later_fields",
    "listed_records",
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

    A statement whose one parameter is a list of ids (``IN``) runs as the text of its size
    (:func:`_sized`), through ``conn.exec_driver_sql``: events and error translation as above.
    """
    result: Any = None
    if params is not None and len(params) == 1:
        ((name, ids),) = params.items()
        if type(ids) in (list, tuple) and 0 < len(ids) <= IN_CHUNK:
            size = next(s for s in _SIZES if s >= len(ids))
            sized = _sized(statement, conn.dialect, name, size)
            if sized is not None:
                padded = (*ids, *(ids[-1],) * (size - len(ids)))
                sql, names = sized
                bound: Any = padded if names is None else dict(zip(names, padded, strict=True))
                result = conn.exec_driver_sql(sql, bound)
    if result is None:
        result = conn.execute(statement, params)
    try:
        return result.cursor.fetchall()  # type: ignore[no-any-return]
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(
            str(statement), params, exc, conn.dialect.loaded_dbapi.Error
        ) from exc
    finally:
        result.close()


#: The sizes an ``IN`` list of ids is bound at, padded with its last id (which matches nothing
#: more): each size's text is expanded once, not on every execution, as SQLAlchemy does for an
#: expanding parameter (1,000 ids cost about 0.7 ms of Python a query, a fifth of the fetch).
_SIZES = (8, 32, 128, 512, IN_CHUNK)


@functools.lru_cache(maxsize=256)
def _sized(
    statement: Executable, dialect: Any, name: str, size: int
) -> tuple[str, tuple[str, ...] | None] | None:
    """The SQL text of ``statement`` with its expanding parameter ``name`` bound to ``size``
    values, and the names of those values for a driver of named parameters (None: positional,
    in order); None when the statement is not of that shape or a value needs a bind processor
    (then it runs as any other)."""
    compiled: Any = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    bind = compiled.binds.get(name)
    if bind is None or not bind.expanding or len(compiled.binds) != 1:
        return None
    if bind.type.dialect_impl(dialect).bind_processor(dialect) is not None:
        return None
    state = compiled.construct_expanded_state({name: list(range(size))})
    names = tuple(state.parameter_expansion.get(name, ()))
    if len(names) != size:
        return None
    if compiled.positional:
        return (state.statement, None) if tuple(state.positiontup) == names else None
    return state.statement, names


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
    """A field of a :class:`StoredRunRecord` decoded from its stored form on first read.

    Not a data descriptor: once decoded, the value sits in the record's ``__dict__`` (as it
    does when ``RunRecord.__init__`` sets it, for ``dataclasses.replace``) and later reads
    never come here. A listed record without the stored form reads it with its listing first.
    """

    __slots__ = ("decode", "name", "raw")

    def __init__(self, name: str, decode: Callable[[Any], Any]) -> None:
        self.name = name
        self.raw = "_stored_" + name
        self.decode = decode

    def __get__(self, record: object, owner: type | None = None) -> Any:
        if record is None:
            return self
        fields = record.__dict__
        if self.raw not in fields:
            _read_later(fields, self.raw, self.name)
        # The stored form stays: two threads reading a shared record both find it.
        value = fields[self.name] = self.decode(fields[self.raw])
        return value


class _Later:
    """A field a listed :class:`StoredRunRecord` reads when first asked for, with the same
    field of every record listed with it. Not a data descriptor either: once read, the
    value sits in the record's ``__dict__``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, record: object, owner: type | None = None) -> Any:
        if record is None:
            return self
        fields = record.__dict__
        _read_later(fields, self.name, self.name)
        return fields[self.name]


def _read_later(fields: dict[str, Any], key: str, name: str) -> None:
    """Fill the group of field ``name`` (``__dict__`` key ``key``) of the record of
    ``fields`` from its listing, which reads that group for all its records the first time.

    Raises:
        NotFoundError: the run was deleted after it was listed (as ``pt.Run`` of it is now).
    """
    listing: Listing | None = fields.get("_listing")
    group = _GROUP_OF.get(key)
    if listing is None or group is None:
        raise AttributeError(name)
    found = listing.fields(group, fields["id"])
    if found is None:
        raise NotFoundError(
            f"no run with id {fields['id']} in the store: it was deleted after it was listed, "
            f"and its {name} is read when first asked for; list the runs again"
        )
    fields.update(found)


class Listing:
    """Runs listed together, and what their records read later: each group of fields
    (``tags``, ``created``) by one call of ``read(group, run ids)`` for all of them, the
    first time one of them is asked for a field of it; each record then takes its own.

    ``read`` returns ``{run id: record __dict__ entries}`` for the runs still in the store.
    What it reads is what the store holds then, for every record of the listing, and stays as
    read: ``pt.Run(pathspec)`` reads the same at that moment and keeps it likewise.

    It holds the runs' ids, not their records (which hold it): no reference cycle, so a
    search's thousand records are freed as soon as the caller drops them.
    """

    __slots__ = ("_found", "_lock", "_read", "run_ids")

    def __init__(self, read: Callable[[str, list[int]], dict[int, dict[str, Any]]]) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._found: dict[str, dict[int, dict[str, Any]]] = {}
        self.run_ids: list[int] = []

    def fields(self, group: str, run_id: int) -> dict[str, Any] | None:
        """The ``group`` entries of run ``run_id``'s record; None if it is gone from the store."""
        found = self._found.get(group)
        if found is None:
            with self._lock:  # one read for threads asking at once
                found = self._found.get(group)
                if found is None:
                    found = self._found[group] = self._read(group, self.run_ids)
        return found.get(run_id)


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

    def __getstate__(self) -> dict[str, Any]:
        # Every field as read (a listed record reads what it has not yet): no listing, no store.
        return {f: getattr(self, f) for f in _FIELDS}

    def __repr__(self) -> str:
        shown = ", ".join(f"{f}={getattr(self, f)!r}" for f in _FIELDS)
        return f"RunRecord({shown})"


for _name, _decode in _LAZY.items():
    setattr(StoredRunRecord, _name, _Decoded(_name, _decode))

#: The fields a listed record reads later, by group: its tags, and what the run recorded when
#: it was created (never changed after, so reading them later reads what the listing would).
_LATER_GROUPS: dict[str, tuple[str, ...]] = {
    "tags": ("user_tags", "system_tags"),
    "created": (
        "host",
        "trigger",
        "param_types",
        "variables",
        "origin_run_id",
        "git",
        "code_key",
        "timeout_s",
        "sla_due_at",
        "version",
        "environment_hash",
        "dag",
        "cause",
    ),
}
#: The group of each ``__dict__`` key a listed record fills later.
_GROUP_OF = {
    ("_stored_" + name if name in _LAZY else name): group
    for group, names in _LATER_GROUPS.items()
    for name in names
}
for _names in _LATER_GROUPS.values():
    for _name in _names:
        if _name not in _LAZY:
            setattr(StoredRunRecord, _name, _Later(_name))

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
    if dags is None:
        dags = _dags_of(conn, {r[_VERSION_AT] for r in rows})
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
        fields.update(zip(keys, row))  # noqa: B905 (a keyword makes zip slower per row)
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


def _dags_of(conn: Connection, versions: set[int]) -> dict[int, Any]:
    """The decoded DAG of each version id: one per version, not per run (thousands of runs
    share a handful)."""
    dags: dict[int, Any] = {}
    for chunk in chunks(list(versions)):
        dags.update(conn.execute(_DAGS_OF, {"ids": chunk}).all())
    return dags


# -- listings -----------------------------------------------------------------------------------

#: The ``pipeline_run`` columns of a listed record, copied as they are into its ``__dict__``
#: (then the pipeline's name): what a listed run is mostly read for, and every column that
#: changes while a run goes on (so none of those is read at another time than the listing).
_LISTED = (
    "id",
    "created_at",
    "started_at",
    "finished_at",
    "user",
    "params",
    "error",
    "heartbeat_at",
    "runner_host",
    "runner_pid",
    "cancel_requested_at",
    "lease",
    "sla_state",
    "sla_missed_at",
    "status",
)
LISTED_COLUMNS: tuple[ColumnElement[Any], ...] = tuple(
    type_coerce(pipeline_run.c[name], NullType()).label(name)
    if name in _LAZY
    else pipeline_run.c[name]
    for name in _LISTED
)
#: A listed record's ``__dict__`` keys of a row's columns (raw fields under their stored name),
#: then the pipeline's name.
_LISTED_KEYS = (*(f"_stored_{name}" if name in _LAZY else name for name in _LISTED), "pipeline")


def listed_records(
    rows: Sequence[Sequence[Any]], read: Callable[[str, list[int]], dict[int, dict[str, Any]]]
) -> list[RunRecord]:
    """Records of rows of :data:`LISTED_COLUMNS` followed by the pipeline's name, listed
    together: their other fields are read by ``read`` (see :class:`Listing`), for all of
    them at once, when one of them is first asked for one."""
    listing = Listing(read)
    listing.run_ids = [row[0] for row in rows]
    # A copy of a dict of every key (no resizing as it fills), filled in C.
    template: dict[str, Any] = dict.fromkeys(_LISTED_KEYS)
    template["_listing"] = listing
    new, set_fields, keys, statuses = object.__new__, object.__setattr__, _LISTED_KEYS, _STATUS
    records: list[RunRecord] = []
    append = records.append
    for row in rows:
        fields = template.copy()
        fields.update(zip(keys, row))  # noqa: B905 (as above)
        fields["status"] = statuses[fields["status"]]
        record = new(StoredRunRecord)
        set_fields(record, "__dict__", fields)
        append(record)
    return records


#: The tags of runs, a row per tag and one without a tag for a run that has none: a run with no
#: row is no longer in the store. User tags come first as in ``_TAGS_OF``.
_LATER_TAGS = (
    select(pipeline_run.c.id, run_tag.c.tag, run_tag.c.system)
    .select_from(pipeline_run)
    .outerjoin(run_tag, run_tag.c.run_id == pipeline_run.c.id)
    .where(pipeline_run.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(pipeline_run.c.id, run_tag.c.tag)
)
_CREATED = _LATER_GROUPS["created"][:9]
_upstream = pipeline_run.alias("upstream_run")
_upstream_pipeline = pipeline.alias("upstream_pipeline")
#: What runs recorded when created, as the driver gives it (decoded by the record), then their
#: version id, cause, version, environment hash and the upstream run's pipeline name.
_LATER_CREATED = (
    select(
        pipeline_run.c.id,
        *(
            type_coerce(pipeline_run.c[name], NullType()).label(name)
            if name in _LAZY
            else pipeline_run.c[name]
            for name in _CREATED
        ),
        pipeline_run.c.version_id,
        pipeline_run.c.trigger_name,
        type_coerce(pipeline_run.c.scheduled_at, NullType()).label("scheduled_at"),
        pipeline_run.c.upstream_run_id,
        pipeline_version.c.version,
        environment.c.hash,
        _upstream_pipeline.c.name,
    )
    .join(pipeline_version, pipeline_version.c.id == pipeline_run.c.version_id)
    .outerjoin(environment, environment.c.id == pipeline_run.c.environment_id)
    .outerjoin(_upstream, _upstream.c.id == pipeline_run.c.upstream_run_id)
    .outerjoin(_upstream_pipeline, _upstream_pipeline.c.id == _upstream.c.pipeline_id)
    .where(pipeline_run.c.id.in_(bindparam("ids", expanding=True)))
)
_CREATED_KEYS = tuple(f"_stored_{name}" if name in _LAZY else name for name in _CREATED)


def later_fields(conn: Connection, group: str, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The ``__dict__`` entries of ``group`` (``tags`` or ``created``) of the runs ``ids``
    still in the store, by run id: a query per 1,000 runs (and one for their DAGs)."""
    found: dict[int, dict[str, Any]] = {}
    if group == "tags":
        tags: dict[int, tuple[list[str], list[str]]] = {}
        for chunk in chunks(ids):
            for run_id, tag, system in driver_rows(conn, _LATER_TAGS, {"ids": chunk}):
                lists = tags.get(run_id)
                if lists is None:
                    lists = tags[run_id] = ([], [])
                if tag is not None:
                    lists[1 if system else 0].append(tag)
        for run_id, (user, system_tags) in tags.items():
            found[run_id] = {"user_tags": tuple(user), "system_tags": tuple(system_tags)}
        return found
    if group != "created":
        raise ValueError(f"no group of fields {group!r}; groups: {sorted(_LATER_GROUPS)}")
    rows = [
        row for chunk in chunks(ids) for row in driver_rows(conn, _LATER_CREATED, {"ids": chunk})
    ]
    size = len(_CREATED)
    dags = _dags_of(conn, {row[size + 1] for row in rows})
    for row in rows:
        fields = dict(zip(_CREATED_KEYS, row[1 : size + 1], strict=True))
        version_id, trigger, scheduled, upstream_id, version, env_hash, upstream_pipeline = row[
            size + 1 :
        ]
        fields["version"] = version
        fields["environment_hash"] = env_hash
        fields["dag"] = dags[version_id]
        fields["cause"] = (
            None
            if trigger is None
            else RunCause(
                trigger,
                _time(scheduled),  # type: ignore[arg-type]
                upstream_id,
                None if upstream_pipeline is None else f"{upstream_pipeline}/{upstream_id}",
            )
        )
        found[row[0]] = fields
    return found
