"""The search language's syntax tree: fields, conditions, order keys, and their text form."""

from __future__ import annotations

import string
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

__all__ = [
    "AGGREGATES",
    "And",
    "Compare",
    "Condition",
    "FIELD_LIST",
    "Field",
    "FieldKind",
    "In",
    "NAMED",
    "NAME_CHARS",
    "NUMERIC",
    "Not",
    "OPERATORS",
    "OPERATOR_LIST",
    "Or",
    "OrderKey",
    "PLAIN",
    "TEXT",
    "TEXT_MATCHES",
    "TIMES",
    "Value",
    "name_text",
    "to_text",
    "value_text",
]

#: A literal in a filter: a number, text, ``true``/``false`` or ``null``.
Value: TypeAlias = bool | int | float | str | None


class FieldKind(StrEnum):
    """What a field refers to."""

    PARAM = "params"
    METRIC = "metrics"
    METRIC_MIN = "min"
    METRIC_MAX = "max"
    TAG_VALUE = "tags"
    TAG = "tag"
    STATUS = "status"
    PIPELINE = "pipeline"
    USER = "user"
    CREATED = "created"
    FINISHED = "finished"
    DURATION = "duration"


NAMED = frozenset({FieldKind.PARAM, FieldKind.METRIC, FieldKind.TAG_VALUE})
AGGREGATES = frozenset({FieldKind.METRIC_MIN, FieldKind.METRIC_MAX})
NUMERIC = frozenset(
    {FieldKind.METRIC, FieldKind.METRIC_MIN, FieldKind.METRIC_MAX, FieldKind.DURATION}
)
TIMES = frozenset({FieldKind.CREATED, FieldKind.FINISHED})
TEXT = frozenset(
    {FieldKind.TAG_VALUE, FieldKind.TAG, FieldKind.STATUS, FieldKind.PIPELINE, FieldKind.USER}
)
PLAIN = frozenset(FieldKind) - NAMED - AGGREGATES
NAME_CHARS = frozenset(string.ascii_letters + string.digits + "_-./")
FIELD_LIST = (
    "params.<name>, metrics.<name>, min(metrics.<name>), max(metrics.<name>), tags.<key>, "
    "tag, status, pipeline, user, created, finished, duration"
)
OPERATOR_LIST = "= != < <= > >= like, not like, in, not in, ~ (matches), !~ (not matches)"


@dataclass(frozen=True)
class Field:
    """A field of a run: ``Field(FieldKind.PARAM, "optimizer.lr")`` is ``params.optimizer.lr``.

    Attributes:
        kind: what it refers to.
        name: the parameter path, metric name or tag key; empty for the other kinds.
    """

    kind: FieldKind
    name: str = ""

    def __str__(self) -> str:
        if self.kind in NAMED:
            return f"{self.kind.value}.{name_text(self.name)}"
        if self.kind in AGGREGATES:
            return f"{self.kind.value}(metrics.{name_text(self.name)})"
        return self.kind.value


@dataclass(frozen=True)
class Compare:
    """``field op value``; ``op`` is one of :data:`OPERATORS`."""

    field: Field
    op: str
    value: Value


@dataclass(frozen=True)
class In:
    """``field in (values…)``, or ``not in`` when ``negated``."""

    field: Field
    values: tuple[Value, ...]
    negated: bool = False


@dataclass(frozen=True)
class And:
    """Every one of ``items`` holds."""

    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Or:
    """At least one of ``items`` holds."""

    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    """``item`` does not hold (a run missing the field does match)."""

    item: Condition


Condition: TypeAlias = Compare | In | And | Or | Not


@dataclass(frozen=True)
class OrderKey:
    """One ``order_by`` item: a field and a direction."""

    field: Field
    descending: bool = False

    def __str__(self) -> str:
        return f"{self.field} {'desc' if self.descending else 'asc'}"


#: The operators of :class:`Compare`, as the AST spells them (``matches`` is ``~``).
OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "like", "not like", "~", "!~")
TEXT_MATCHES = ("like", "not like", "~", "!~")


def to_text(node: Condition) -> str:
    """Filter text for a condition; ``parse_filter(to_text(node)) == node``."""
    if isinstance(node, Compare):
        return f"{node.field} {node.op} {value_text(node.value)}"
    if isinstance(node, In):
        values = ", ".join(value_text(v) for v in node.values)
        return f"{node.field} {'not in' if node.negated else 'in'} ({values})"
    if isinstance(node, Not):
        inner = to_text(node.item)
        return f"not ({inner})" if isinstance(node.item, And | Or) else f"not {inner}"
    joiner = " and " if isinstance(node, And) else " or "
    return joiner.join(
        f"({to_text(item)})" if isinstance(item, And | Or) else to_text(item) for item in node.items
    )


# -- printing -----------------------------------------------------------------------------------


def name_text(name: str) -> str:
    """A parameter, metric or tag name as filter text, backquoted when it needs it."""
    if name and all(c in NAME_CHARS for c in name):
        return name
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def value_text(value: Value) -> str:
    """A literal as filter text: ``null``, ``true``, a number, or quoted text."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    escaped = (
        value.replace("\\", "\\\\")
        .replace("'", "\\'")
        .replace("\n", "\\n")
        .replace("\t", "\\t")
        .replace("\r", "\\r")
    )
    return f"'{escaped}'"
