"""Run search in the SQL store: the query AST compiled to WHERE conditions and ORDER BY clauses.

Every condition is a two-valued SQL expression over ``pipeline_run`` (never NULL), so ``not``
is plain logical negation. Params, metrics and tags are ``pipeline_run.id IN (SELECT run_id
…)`` semi-joins that use the ``(key, value_num)``, ``(name, value)`` and ``tag`` indexes; every
value is a bound parameter. ``IN`` rather than correlated ``EXISTS``: as fast on SQLite, and on
a PostgreSQL store without statistics yet, ``EXISTS`` under ``or``/``not`` planned 10x slower.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    and_,
    case,
    false,
    func,
    not_,
    or_,
    select,
    true,
)

from pipetrail.core.query import (
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
    parse_time,
)
from pipetrail.storage.metadata.sql.engine import like_match, regex_match
from pipetrail.storage.metadata.sql.tables import (
    latest_metric,
    pipeline,
    pipeline_run,
    run_param,
    run_tag,
)

__all__ = ["SearchOrder", "filter_condition", "search_order", "search_plan"]

_RUN_COLUMNS = {
    FieldKind.STATUS: pipeline_run.c.status,
    FieldKind.USER: pipeline_run.c.user,
    FieldKind.CREATED: pipeline_run.c.created_at,
    FieldKind.FINISHED: pipeline_run.c.finished_at,
    FieldKind.DURATION: pipeline_run.c.duration_s,
}
_NULLABLE = frozenset({FieldKind.FINISHED, FieldKind.DURATION})
_METRIC_COLUMNS = {
    FieldKind.METRIC: "value",
    FieldKind.METRIC_MIN: "min_value",
    FieldKind.METRIC_MAX: "max_value",
}


@dataclass(frozen=True)
class SearchOrder:
    """ORDER BY for a run listing: outer joins to add, then the clauses (ending in ``id desc``).

    Attributes:
        joins: ``(table, on clause)`` pairs to outer-join onto ``pipeline_run``; each matches at
            most one row per run (a primary key), so none duplicates runs.
        clauses: the ORDER BY clauses.
        inner: the tables of ``joins`` to join as inner joins: the filter requires their row.
    """

    joins: tuple[tuple[FromClause, ColumnElement[bool]], ...] = ()
    clauses: tuple[ColumnElement[Any], ...] = field(
        default_factory=lambda: (pipeline_run.c.id.desc(),)
    )
    inner: frozenset[FromClause] = frozenset()


def filter_condition(node: Condition) -> ColumnElement[bool]:
    """A WHERE condition over ``pipeline_run`` for a parsed filter (see ``core.query``)."""
    if isinstance(node, And):
        return and_(*(filter_condition(item) for item in node.items))
    if isinstance(node, Or):
        return or_(*(filter_condition(item) for item in node.items))
    if isinstance(node, Not):
        return not_(filter_condition(node.item))
    if isinstance(node, In):
        return _in(node.field, node.values, node.negated)
    if isinstance(node, Compare):
        return _compare(node.field, node.op, node.value)
    raise TypeError(f"not a search condition: {node!r}")


def search_order(keys: Sequence[OrderKey]) -> SearchOrder:
    """ORDER BY for ``keys``: missing values last in both directions, then newest first."""
    return search_plan(None, keys)[1]


def search_plan(
    node: Condition | None, keys: Sequence[OrderKey]
) -> tuple[list[ColumnElement[bool]], SearchOrder]:
    """WHERE conditions for filter ``node`` and the ORDER BY for ``keys``, planned together.

    Plans are kept (the last 256): a dashboard or a script runs the same searches again, and
    planning one cost as much as fetching a page of its runs. They are keyed by the ``repr``
    of the filter and the keys, which tells ``1`` from ``1.0`` and ``true`` (equal in Python,
    not in a search: ``params.x = 1`` is a number, ``params.x = true`` a boolean).

    When the filter requires a metric the order sorts by (``metrics.accuracy > 0.9 … order by
    metrics.accuracy desc``), that metric's row is inner-joined and the filter's comparisons
    on it are made on the joined row: no run misses it, so the ORDER BY is the bare value and
    PostgreSQL walks the ``(name, value, run_id)`` index in order and stops at the limit,
    instead of sorting every matching run.
    """
    ordered = tuple(keys)
    conditions, order = _plan(repr(node), repr(ordered), node, ordered)
    return list(conditions), order


@functools.lru_cache(maxsize=256)
def _plan(
    node_text: str, keys_text: str, node: Condition | None, keys: tuple[OrderKey, ...]
) -> tuple[tuple[ColumnElement[bool], ...], SearchOrder]:
    """:func:`search_plan` of ``node`` and ``keys`` (their reprs make the cache key exact)."""
    items: list[Condition] = []
    if node is not None:
        items = list(node.items) if isinstance(node, And) else [node]
    ordered = {
        k.field.name: index for index, k in enumerate(keys) if k.field.kind in _METRIC_COLUMNS
    }
    aliases = {name: latest_metric.alias(f"order_metric_{i}") for name, i in ordered.items()}
    conditions: list[ColumnElement[bool]] = []
    required: set[str] = set()
    for item in items:
        on_alias = _on_alias(item, aliases)
        if on_alias is None:
            conditions.append(filter_condition(item))
        else:
            conditions.append(on_alias)
            required.add(item.field.name)  # type: ignore[union-attr]
    if not keys:
        return tuple(conditions), SearchOrder()
    joins: list[tuple[FromClause, ColumnElement[bool]]] = []
    clauses: list[ColumnElement[Any]] = []
    for index, key in enumerate(keys):
        if key.field.kind in _METRIC_COLUMNS and key.field.name in required:
            metric = aliases[key.field.name]
            if all(t is not metric for t, _ in joins):
                joins.append(
                    (
                        metric,
                        and_(metric.c.run_id == pipeline_run.c.id, metric.c.name == key.field.name),
                    )
                )
            column = metric.c[_METRIC_COLUMNS[key.field.kind]]
            clauses.append(column.desc() if key.descending else column.asc())
            continue
        missing, ranks, values = _sort_values(key, index, joins, aliases)
        if missing is not None:
            # Portable "NULLS LAST" in both directions (SQLite and PostgreSQL disagree on NULLs).
            clauses.append(case((missing, 1), else_=0).asc())
        clauses.extend(rank.asc() for rank in ranks)
        clauses.extend(v.desc() if key.descending else v.asc() for v in values)
    inner = frozenset(aliases[name] for name in required)
    # Newest first among equals: on an inner-joined metric's run_id (the run's id) SQLite
    # takes the (name, value, run_id) index's order whole instead of sorting equal values.
    joined = next((table for table, _ in joins if table in inner), None)
    clauses.append((pipeline_run.c.id if joined is None else joined.c.run_id).desc())
    return tuple(conditions), SearchOrder(tuple(joins), tuple(clauses), inner)


def _on_alias(item: Condition, aliases: Mapping[str, FromClause]) -> ColumnElement[bool] | None:
    """``item`` made on the joined metric row when it is a comparison of an ordered metric that
    only a recorded value can pass; None otherwise (it stays a semi-join)."""
    if not isinstance(item, Compare | In) or item.field.kind not in _METRIC_COLUMNS:
        return None
    if item.field.name not in aliases:
        return None
    column = aliases[item.field.name].c[_METRIC_COLUMNS[item.field.kind]]
    if isinstance(item, Compare):
        if item.value is None:
            return None
        return _match(column, item.op, float(_number(item.value)))
    if item.negated:
        return None  # "not in" also matches runs without the metric
    return column.in_([float(_number(v)) for v in item.values])


# -- conditions ---------------------------------------------------------------------------------


def _compare(fld: Field, op: str, value: Value) -> ColumnElement[bool]:
    kind = fld.kind
    if kind is FieldKind.PARAM:
        return _param_rows(fld.name, _param_match(op, value))
    if value is None:
        return _null(fld, op)
    if kind in _METRIC_COLUMNS:
        column = latest_metric.c[_METRIC_COLUMNS[kind]]
        return _metric_rows(fld.name, _match(column, op, float(_number(value))))
    if kind is FieldKind.TAG:
        return _tag_rows(_match(run_tag.c.tag, op, _text(value)))
    if kind is FieldKind.TAG_VALUE:
        return _tag_rows(_tag_value_match(fld.name, op, _text(value)))
    if kind is FieldKind.PIPELINE:
        names = select(pipeline.c.id).where(_match(pipeline.c.name, op, _text(value)))
        return pipeline_run.c.pipeline_id.in_(names.correlate(None))
    column = _RUN_COLUMNS[kind]
    bound = _run_value(kind, value)
    condition = _match(column, op, bound)
    return and_(column.is_not(None), condition) if kind in _NULLABLE else condition


def _in(fld: Field, values: tuple[Value, ...], negated: bool) -> ColumnElement[bool]:
    kind = fld.kind
    if kind is FieldKind.PARAM:
        return _param_rows(fld.name, _param_in(values, negated))

    def member(column: ColumnElement[Any], items: list[Any]) -> ColumnElement[bool]:
        return column.not_in(items) if negated else column.in_(items)

    if kind in _METRIC_COLUMNS:
        column = latest_metric.c[_METRIC_COLUMNS[kind]]
        return _metric_rows(fld.name, member(column, [float(_number(v)) for v in values]))
    if kind is FieldKind.TAG:
        return _tag_rows(member(run_tag.c.tag, [_text(v) for v in values]))
    if kind is FieldKind.TAG_VALUE:
        prefix = f"{fld.name}:"
        tags = [prefix + _text(v) for v in values]
        return _tag_rows(and_(_has_prefix(prefix), member(run_tag.c.tag, tags)))
    if kind is FieldKind.PIPELINE:
        names = select(pipeline.c.id).where(member(pipeline.c.name, [_text(v) for v in values]))
        return pipeline_run.c.pipeline_id.in_(names.correlate(None))
    column = _RUN_COLUMNS[kind]
    condition = member(column, [_run_value(kind, v) for v in values])
    return and_(column.is_not(None), condition) if kind in _NULLABLE else condition


_COMPARISONS: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _match(column: ColumnElement[Any], op: str, value: Any) -> ColumnElement[bool]:
    """``column op value``: a comparison, a LIKE or a regular expression."""
    if op in _COMPARISONS:
        return _COMPARISONS[op](column, value)
    if op in ("like", "not like"):
        matched = like_match(column, value)
    elif op in ("~", "!~"):
        matched = regex_match(column, value)
    else:
        raise ValueError(f"unknown search operator {op!r}")
    return not_(matched) if op in ("not like", "!~") else matched


def _null(fld: Field, op: str) -> ColumnElement[bool]:
    """``field = null`` (recorded as null) or ``field != null`` (present and not null)."""
    present: ColumnElement[bool]
    if fld.kind in _METRIC_COLUMNS:
        present = _metric_rows(fld.name, true())
    elif fld.kind is FieldKind.TAG:
        present = _tag_rows(true())
    elif fld.kind is FieldKind.TAG_VALUE:
        present = _tag_rows(_has_prefix(f"{fld.name}:"))
    elif fld.kind in _NULLABLE:
        column = _RUN_COLUMNS[fld.kind]
        return column.is_(None) if op == "=" else column.is_not(None)
    else:
        present = true()  # status, user, pipeline, created: always there
    # Metrics, tags and the always-present fields are never recorded as null.
    return present if op == "!=" else false()


def _param_rows(name: str, condition: ColumnElement[bool]) -> ColumnElement[bool]:
    rows = select(run_param.c.run_id).where(run_param.c.key == name, condition)
    return pipeline_run.c.id.in_(rows.correlate(None))


def _metric_rows(name: str, condition: ColumnElement[bool]) -> ColumnElement[bool]:
    rows = select(latest_metric.c.run_id).where(latest_metric.c.name == name, condition)
    return pipeline_run.c.id.in_(rows.correlate(None))


def _tag_rows(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    return pipeline_run.c.id.in_(select(run_tag.c.run_id).where(condition).correlate(None))


def _param_match(op: str, value: Value) -> ColumnElement[bool]:
    """Condition on one ``run_param`` row, typed by the literal (see ``core.query``)."""
    kind, num, text = run_param.c.type, run_param.c.value_num, run_param.c.value_text
    if value is None:
        return kind == "null" if op == "=" else kind != "null"
    if op == "!=":
        # Present (not null) and not equal: "!= 0.1" matches lr = 'auto' as well as lr = 0.2.
        return and_(kind != "null", not_(_param_match("=", value)))
    if isinstance(value, bool):
        return and_(kind == "bool", num == float(value))
    if isinstance(value, int | float):
        return and_(kind == "number", _match(num, op, float(value)))
    return and_(text.is_not(None), _match(text, op, value))


def _param_in(values: tuple[Value, ...], negated: bool) -> ColumnElement[bool]:
    kind, num, text = run_param.c.type, run_param.c.value_num, run_param.c.value_text
    bools = [float(v) for v in values if isinstance(v, bool)]
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    texts = [v for v in values if isinstance(v, str)]
    parts: list[ColumnElement[bool]] = []
    if numbers:
        parts.append(and_(kind == "number", num.in_(numbers)))
    if bools:
        parts.append(and_(kind == "bool", num.in_(bools)))
    if texts:
        parts.append(and_(text.is_not(None), text.in_(texts)))
    member = or_(*parts)
    return and_(kind != "null", not_(member)) if negated else member


def _tag_value_match(key: str, op: str, value: str) -> ColumnElement[bool]:
    """Condition on one ``run_tag`` row for ``tags.<key> op value`` (tags are ``key:value``)."""
    prefix = f"{key}:"
    tag = run_tag.c.tag
    if op == "=":
        return tag == prefix + value  # the tag index, exactly
    if op in ("~", "!~"):
        rest = func.substr(tag, len(prefix) + 1)
        return and_(_has_prefix(prefix), _match(rest, op, value))
    if op in ("like", "not like"):
        return and_(_has_prefix(prefix), _match(tag, op, _like_escape(prefix) + value))
    # The shared prefix leaves the order of the values as the order of the whole tags.
    return and_(_has_prefix(prefix), _match(tag, op, prefix + value))


def _has_prefix(prefix: str) -> ColumnElement[bool]:
    # substr, not LIKE: exact and case-sensitive on both stores, whatever the prefix contains.
    return func.substr(run_tag.c.tag, 1, len(prefix)) == prefix


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _run_value(kind: FieldKind, value: Value) -> Any:
    if kind in (FieldKind.CREATED, FieldKind.FINISHED):
        return parse_time(_text(value))
    if kind is FieldKind.DURATION:
        return float(_number(value))
    return _text(value)


def _number(value: Value) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"search value {value!r} is not a number")
    return value


def _text(value: Value) -> str:
    if not isinstance(value, str):
        raise ValueError(f"search value {value!r} is not text")
    return value


# -- ordering -----------------------------------------------------------------------------------


_SortValues = tuple[ColumnElement[bool] | None, list[ColumnElement[Any]], list[ColumnElement[Any]]]


def _sort_values(
    key: OrderKey,
    index: int,
    joins: list[tuple[FromClause, ColumnElement[bool]]],
    aliases: Mapping[str, FromClause] | None = None,
) -> _SortValues:
    """(is missing, ranks, values) of one key, adding the outer joins it needs.

    Missing and ranks always sort ascending; values sort in the key's direction.
    """
    fld = key.field
    if fld.kind is FieldKind.PARAM:
        param = run_param.alias(f"order_param_{index}")
        joins.append((param, and_(param.c.run_id == pipeline_run.c.id, param.c.key == fld.name)))
        num = param.c.value_num
        # Numbers (and booleans) first, then text, in the asked direction within each.
        return (
            or_(param.c.run_id.is_(None), param.c.type == "null"),
            [case((num.is_(None), 1), else_=0)],
            [num, param.c.value_text],
        )
    if fld.kind in _METRIC_COLUMNS:
        found = (aliases or {}).get(fld.name)
        metric = latest_metric.alias(f"order_metric_{index}") if found is None else found
        if all(t is not metric for t, _ in joins):
            joins.append(
                (metric, and_(metric.c.run_id == pipeline_run.c.id, metric.c.name == fld.name))
            )
        return metric.c.run_id.is_(None), [], [metric.c[_METRIC_COLUMNS[fld.kind]]]
    if fld.kind in (FieldKind.TAG, FieldKind.TAG_VALUE):
        # A run has many tags: ascending sorts by its smallest, descending by its largest. A
        # lookup per run on the (run_id, tag) key: a joined GROUP BY is faster over every run
        # but PostgreSQL without statistics may rescan it per run (seconds on 10k runs).
        pick = func.max if key.descending else func.min
        if fld.kind is FieldKind.TAG:
            rows = select(pick(run_tag.c.tag)).where(run_tag.c.run_id == pipeline_run.c.id)
        else:
            prefix = f"{fld.name}:"
            rows = select(pick(func.substr(run_tag.c.tag, len(prefix) + 1))).where(
                run_tag.c.run_id == pipeline_run.c.id, _has_prefix(prefix)
            )
        value = rows.correlate(pipeline_run).scalar_subquery()
        return value.is_(None), [], [value]
    if fld.kind is FieldKind.PIPELINE:
        named = pipeline.alias(f"order_pipeline_{index}")
        joins.append((named, named.c.id == pipeline_run.c.pipeline_id))
        return None, [], [named.c.name]
    column = _RUN_COLUMNS[fld.kind]
    return (column.is_(None) if fld.kind in _NULLABLE else None), [], [column]
