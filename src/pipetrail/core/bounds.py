"""The ranges ids, counts and times must fall in before they reach a store: one table for every edge.

PostgreSQL stores ids as 32-bit integers and refuses a larger bound parameter, SQLite and Python's
``datetime`` overflow at their own limits; each edge (API, dashboard, CLI) checks its input against
these ranges and answers with one line naming the value, instead of a store failure or a 500.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pipetrail.errors import UsageError

__all__ = [
    "EARLIEST",
    "LATEST",
    "MAX_COUNT",
    "MAX_ID",
    "MAX_INTEGER",
    "check_count",
    "check_id",
    "check_time",
]

#: The largest run, task or artifact id (ids are 32-bit integers on PostgreSQL).
MAX_ID = 2**31 - 1
#: The largest limit, position, offset or page number a request may carry.
MAX_COUNT = 2**31 - 1
#: The largest integer a filter may compare with (64-bit on both stores).
MAX_INTEGER = 2**63 - 1
#: Times outside ``[EARLIEST, LATEST]`` are refused: both stores and ``datetime`` arithmetic
#: (a day added to a date, an offset applied) stay well inside their limits.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
_TIME_RANGE = f"from {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d} (UTC)"


def check_id(value: int, what: str) -> int:
    """``value`` when it is an id from 1 to :data:`MAX_ID`.

    Raises:
        UsageError: naming ``what`` and the value.
    """
    if not 1 <= value <= MAX_ID:
        raise UsageError(f"{what}: id {value} is out of range; ids go from 1 to {MAX_ID}")
    return value


def check_count(value: int, what: str, *, low: int = 0, high: int = MAX_COUNT) -> int:
    """``value`` when ``low <= value <= high`` (by default a count up to :data:`MAX_COUNT`).

    Raises:
        UsageError: naming ``what``, the value and the range.
    """
    if not low <= value <= high:
        raise UsageError(f"{what}: {value} is out of range; give a number from {low} to {high}")
    return value


def check_time(value: datetime, what: str) -> datetime:
    """``value`` in UTC when it lies between :data:`EARLIEST` and :data:`LATEST`; a time
    without an offset is taken as UTC.

    Raises:
        UsageError: naming ``what``, the time and the range.
    """
    try:
        if value.tzinfo is None or value.utcoffset() is None:
            value = value.replace(tzinfo=UTC)
        inside = EARLIEST <= value <= LATEST
        utc = value.astimezone(UTC) if inside else value
    except (OverflowError, ValueError):
        inside, utc = False, value
    if not inside:
        raise UsageError(
            f"{what}: time {value.isoformat()!r} is out of range; give a time {_TIME_RANGE}"
        )
    return utc
