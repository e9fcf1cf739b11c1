"""The run search language: filter and order-by text parsed into a small, typed AST.

A filter is one or more conditions joined with ``and``, ``or``, ``not`` and parentheses::

    metrics.accuracy > 0.9 and params.lr = 0.01 and tags.phase = 'experiment'
    (status = 'failed' or status = 'cancelled') and created >= '2024-05-01'
    params.optimizer.name in ('adam', 'sgd') and not tag = 'baseline'
    max(metrics.val/loss) < 0.3 or params.`my key` ~ '^v[0-9]+$'

Fields
    ``params.<path>``
        a parameter, by its dotted path into nested values: ``params.optimizer.lr``,
        ``params.layers.0`` (list items by index).
    ``metrics.<name>``
        the latest value of a metric; ``min(metrics.<name>)`` and ``max(metrics.<name>)``
        are the smallest and largest value the run ever logged.
    ``tags.<key>``
        the value of a ``key:value`` tag: ``tags.phase = 'experiment'`` matches the tag
        ``phase:experiment``.
    ``tag``
        a whole tag: ``tag = 'joined'``.
    ``status``, ``pipeline``, ``user``
        text: the run's status (``initial``, ``running``, ``completed``, ``failed``,
        ``cancelled``), its pipeline's name, who started it.
    ``created``, ``finished``
        times, compared with ISO 8601 text: ``'2024-05-01'`` (midnight),
        ``'2024-05-01T12:30:00'``, ``'2024-05-01 12:30:00+02:00'``. A time without an offset is
        UTC. Relative times (``'-2d'``) are not part of the language. ``finished = null`` is a
        run that has not finished.
    ``duration``
        seconds from start to finish, a number (``null`` while the run is unfinished).

    Names after ``params.``, ``metrics.`` and ``tags.`` are case-sensitive and may contain
    letters, digits, ``_``, ``-``, ``.`` and ``/``; put anything else in backquotes:
    ``params.`my key```, ``metrics.`acc@top 5```. Inside backquotes, ``\\``` is a backquote and
    ``\\\\`` a backslash. Keywords and the other field names are case-insensitive.

Operators
    ``=`` (or ``==``), ``!=`` (or ``<>``), ``<``, ``<=``, ``>``, ``>=``;
    ``like 'pattern'`` and ``not like`` (SQL LIKE: ``%`` any run of characters, ``_`` one
    character, ``\\`` before either takes it literally; **case-sensitive** on every store);
    ``~ 'regex'`` (or ``matches``) and ``!~`` (or ``not matches``): the regular expression
    matches somewhere in the value (anchor it with ``^`` and ``$``). Patterns are RE2 syntax,
    checked when the filter is parsed: RE2 matches in linear time, so it has no backreferences
    or lookaround (refused with the reason). Keep to the common syntax
    (``. * + ? [] () | ^ $ {m,n}``) to get the same answer from SQLite (RE2) and PostgreSQL
    (POSIX ``~``, stopped by a statement timeout when it runs too long).
    ``in (a, b, …)`` and ``not in (…)``: equal to one of the values.

    ``not`` binds tighter than ``and``, which binds tighter than ``or``.

Values
    numbers (``3``, ``-0.5``, ``1e-3``), text in single or double quotes with backslash
    escapes (``\\'``, ``\\"``, ``\\\\``, ``\\n``, ``\\t``; any other backslash is kept, so
    ``'\\d+'`` is the regex ``\\d+``), ``true``, ``false`` and ``null``.

Types
    A number compares with numeric parameters (``params.lr > 0.01``), ``true``/``false``
    with boolean ones (``true`` is not ``1``), text with the parameter's text: a string
    parameter's value, or a number as written (``params.lr = '0.01'``). Metrics and
    ``duration`` are numbers; ``status``, ``pipeline``, ``user`` and tags are text; ``created``
    and ``finished`` are times. Text compares character by character (code-point order on
    SQLite and on PostgreSQL databases with the ``C`` collation).

Missing values
    A run that lacks the field (no such parameter, metric or tag, or a ``null`` value) matches
    no comparison, ``!=`` and ``not in`` included: ``params.lr != 0.1`` needs an ``lr``.
    ``not`` negates the whole condition, so ``not params.lr > 1`` *does* match a run without
    ``lr``. ``= null`` matches a value recorded as null (a ``None`` parameter, an unfinished
    run's ``finished``); ``params.lr != null`` means "has a non-null ``lr``" and
    ``not metrics.loss != null`` "has no ``loss`` metric". A run has many tags: a tag
    condition matches when any one of them does; ``not tag = 'x'`` is a run without ``x``.

Ordering
    ``order_by`` items are ``field [asc|desc]`` (ascending by default), several per item
    separated by commas. Runs missing the field come last in both directions; parameters sort
    numbers before text. Ties, and an empty ``order_by``, fall back to newest first.

Malformed text raises :class:`QuerySyntaxError`, whose message points at the offending token.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipetrail.core.query_ast import (
    OPERATORS,
    And,
    Compare,
    Condition,
    Field,
    FieldKind,
    In,
    Not,
    Or,
    OrderKey,
    Value,
    to_text,
)
from pipetrail.core.query_parser import Parser, parse_time
from pipetrail.errors import QuerySyntaxError

__all__ = [
    "And",
    "Compare",
    "Condition",
    "Field",
    "FieldKind",
    "In",
    "Not",
    "OPERATORS",
    "Or",
    "OrderKey",
    "QuerySyntaxError",
    "Value",
    "parse_filter",
    "parse_order_by",
    "parse_time",
    "to_text",
]


def parse_filter(text: str) -> Condition:
    """Parse filter text into a condition.

    Args:
        text: e.g. ``"metrics.accuracy > 0.9 and params.lr = 0.01"``.

    Raises:
        QuerySyntaxError: naming what was expected and pointing at the offending token.
    """
    return Parser(text, "filter").filter()


def parse_order_by(items: Sequence[str]) -> tuple[OrderKey, ...]:
    """Parse ``order_by`` items (``"metrics.accuracy desc"``, ``"created, user desc"``).

    Raises:
        QuerySyntaxError: for an empty item, an unknown field or a bad direction.
    """
    keys: list[OrderKey] = []
    for item in items:
        keys.extend(Parser(item, "order_by").order_keys())
    return tuple(keys)
