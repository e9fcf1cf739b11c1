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
#: The record's ``__dict__`` keys of the copied columns (raw fields under their stored name).
_KEYS = tuple(f"_stored_{name}" if name in _LAZY else name for name in _COPIED)
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
    new, set_fields, keys = object.__new__, object.__setattr__, _KEYS
    status_at = len(_COPIED)
    end = status_at + 8  # (a row may bring more after: get_run's DAG)
    empty: tuple[list[str], list[str]] = ([], [])
    records: list[RunRecord] = []
    for row in rows:
        # zip stops at the last copied column: one dict built in C per record.
        fields = dict(zip(keys, row, strict=False))
        status, version_id, trigger, scheduled, upstream_id, name, version, env_hash = row[
            status_at:end
        ]
        user_tags, system_tags = tags.get(row[0], empty)
        fields["pipeline"] = name
        fields["version"] = version
        fields["environment_hash"] = env_hash
        fields["status"] = _STATUS[status]
        fields["user_tags"] = tuple(user_tags)
        fields["system_tags"] = tuple(system_tags)
        fields["dag"] = dags[version_id]
        fields["cause"] = (
            None
            if trigger is None
            else RunCause(trigger, _time(scheduled), upstream_id, upstream.get(upstream_id))  # type: ignore[arg-type]
        )
        record = new(StoredRunRecord)
        set_fields(record, "__dict__", fields)
        records.append(record)
    return records
