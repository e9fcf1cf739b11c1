"""Run rows into ``RunRecord``s for the read path: built from tuples, decoded when first read.

A listing or a search builds hundreds of records of which a caller reads a few fields (the
id, the status, the params): every timestamp parsed and every JSON document decoded up front
cost more than the query. So the row's columns are selected as the driver returns them (text
on SQLite; ``datetime`` and decoded JSON from psycopg) and a :class:`StoredRunRecord` decodes
each of those fields the first time it is read, then keeps the value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, type_coerce
from sqlalchemy.types import NullType

from pipetrail.core.model import RunCause, RunRecord
from pipetrail.core.status import RunStatus
from pipetrail.storage.metadata.sql.tables import pipeline_run

__all__ = ["RUN_COLUMNS", "StoredRunRecord", "build_records"]


def _time(value: Any) -> datetime | None:
    """A stored timestamp as a UTC-aware datetime (SQLite keeps naive UTC text)."""
    if value is None:
        return None
    if type(value) is str:
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
    return value.astimezone(UTC)  # type: ignore[no-any-return]


def _json(value: Any) -> Any:
    """A stored JSON document (text on SQLite; psycopg hands JSONB over decoded)."""
    return json.loads(value) if type(value) is str else value


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
            value = fields[self.name] = self.decode(fields.pop(self.raw))
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

#: The ``pipeline_run`` columns a record is built from, in this order; those decoded later
#: are selected as the driver returns them.
_COLUMNS = (
    "id",
    "status",
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
    "version_id",
    "trigger_name",
    "scheduled_at",
    "upstream_run_id",
)
RUN_COLUMNS: tuple[ColumnElement[Any], ...] = tuple(
    type_coerce(pipeline_run.c[name], NullType()).label(name)
    if name in _LAZY or name == "scheduled_at"
    else pipeline_run.c[name]
    for name in _COLUMNS
)
#: Record field → position in a row of RUN_COLUMNS (raw fields under their stored name).
_STORED = {
    (f"_stored_{name}" if name in _LAZY else name): i
    for i, name in enumerate(_COLUMNS)
    if name not in ("version_id", "trigger_name", "scheduled_at", "upstream_run_id", "status")
}
_STATUS = {s.value: s for s in RunStatus}


def build_records(
    rows: Sequence[Sequence[Any]],
    tags: dict[int, tuple[list[str], list[str]]],
    dags: dict[int, Any],
    upstream: dict[int, str],
) -> list[RunRecord]:
    """Records from rows of :data:`RUN_COLUMNS` followed by the pipeline's name, the version and
    the environment's hash; tags by run id, decoded DAGs by version id, and the pathspecs of
    upstream runs."""
    new = object.__new__
    positions = tuple(_STORED.items())
    status_at = _COLUMNS.index("status")
    version_at = _COLUMNS.index("version_id")
    trigger_at = _COLUMNS.index("trigger_name")
    scheduled_at = _COLUMNS.index("scheduled_at")
    upstream_at = _COLUMNS.index("upstream_run_id")
    records: list[RunRecord] = []
    extra = len(_COLUMNS)
    for row in rows:
        record = new(StoredRunRecord)
        fields = record.__dict__
        for name, at in positions:
            fields[name] = row[at]
        run_tags = tags.get(row[0])
        trigger = row[trigger_at]
        fields.update(
            pipeline=row[extra],
            version=row[extra + 1],
            environment_hash=row[extra + 2],
            status=_STATUS[row[status_at]],
            user_tags=tuple(run_tags[0]) if run_tags else (),
            system_tags=tuple(run_tags[1]) if run_tags else (),
            dag=dags[row[version_at]],
            cause=None
            if trigger is None
            else RunCause(
                trigger,
                _time(row[scheduled_at]),  # type: ignore[arg-type]
                row[upstream_at],
                upstream.get(row[upstream_at]),
            ),
        )
        records.append(record)
    return records
