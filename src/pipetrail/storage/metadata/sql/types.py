"""Portable column types: UTC-only timestamps, JSON, ids."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, Integer
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["BigId", "EpochTime", "JsonDoc", "UtcDateTime"]

#: 64-bit ids on PostgreSQL; on SQLite only INTEGER PRIMARY KEY autoincrements (the rowid).
BigId = BigInteger().with_variant(Integer(), "sqlite")


class JsonDoc(TypeDecorator[Any]):
    """JSON documents: JSONB on PostgreSQL (indexable, compact), JSON text on SQLite.

    The PostgreSQL dialect is imported only when a PostgreSQL engine asks for it, so the
    embedded default does not pay for it at start-up.
    """

    impl = JSON
    cache_ok = True
    comparator_factory = JSON.Comparator

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always UTC-aware going in and coming out; naive values are rejected."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r} given to the store; use UTC-aware times")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            # SQLite keeps text; store without offset so ordering by text is ordering by time.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


class EpochTime(TypeDecorator[datetime]):
    """A UTC instant stored as float seconds since the epoch, for rows written by the thousand.

    Metric points carry ``time.time()`` floats from where they are logged to the driver with no
    conversion per row; reads give UTC-aware datetimes like every other timestamp.
    """

    impl = Float(precision=53)
    cache_ok = True

    def process_bind_param(self, value: datetime | float | None, dialect: Dialect) -> float | None:
        if value is None or isinstance(value, (int, float)):
            return value
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r} given to the store; use UTC-aware times")
        return value.timestamp()

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return datetime.fromtimestamp(float(value), UTC)
