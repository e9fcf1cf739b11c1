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
    matches somewhere in the value (anchor it with ``^`` and ``$``). Patterns are checked with
    Python's ``re``; keep to the common syntax (``. * + ? [] () | ^ $ {m,n}``) to get the same
    answer from SQLite (Python ``re``) and PostgreSQL (POSIX ``~``).
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

import difflib
import re
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeAlias

from pipetrail.core.status import RunStatus
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


_NAMED = frozenset({FieldKind.PARAM, FieldKind.METRIC, FieldKind.TAG_VALUE})
_AGGREGATES = frozenset({FieldKind.METRIC_MIN, FieldKind.METRIC_MAX})
_NUMERIC = frozenset(
    {FieldKind.METRIC, FieldKind.METRIC_MIN, FieldKind.METRIC_MAX, FieldKind.DURATION}
)
_TIMES = frozenset({FieldKind.CREATED, FieldKind.FINISHED})
_TEXT = frozenset(
    {FieldKind.TAG_VALUE, FieldKind.TAG, FieldKind.STATUS, FieldKind.PIPELINE, FieldKind.USER}
)
_PLAIN = frozenset(FieldKind) - _NAMED - _AGGREGATES
_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "_-./")
_FIELD_LIST = (
    "params.<name>, metrics.<name>, min(metrics.<name>), max(metrics.<name>), tags.<key>, "
    "tag, status, pipeline, user, created, finished, duration"
)
_OPERATOR_LIST = "= != < <= > >= like, not like, in, not in, ~ (matches), !~ (not matches)"


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
        if self.kind in _NAMED:
            return f"{self.kind.value}.{_name_text(self.name)}"
        if self.kind in _AGGREGATES:
            return f"{self.kind.value}(metrics.{_name_text(self.name)})"
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
_TEXT_MATCHES = ("like", "not like", "~", "!~")
_OP_ALIASES = {"==": "=", "<>": "!="}
_OPS = ("<=", ">=", "!=", "<>", "==", "!~", "=", "<", ">", "~")
_KEYWORDS = frozenset(
    {"and", "or", "not", "in", "like", "matches", "true", "false", "null", "asc", "desc"}
)
#: Makes a positioned error for the text being lexed.
_Fail: TypeAlias = Callable[[str, int], QuerySyntaxError]
_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DIGITS = string.digits
_WORD_START = frozenset(string.ascii_letters + "_")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


# -- public entry points ------------------------------------------------------------------------


def parse_filter(text: str) -> Condition:
    """Parse filter text into a condition.

    Args:
        text: e.g. ``"metrics.accuracy > 0.9 and params.lr = 0.01"``.

    Raises:
        QuerySyntaxError: naming what was expected and pointing at the offending token.
    """
    return _Parser(text, "filter").filter()


def parse_order_by(items: Sequence[str]) -> tuple[OrderKey, ...]:
    """Parse ``order_by`` items (``"metrics.accuracy desc"``, ``"created, user desc"``).

    Raises:
        QuerySyntaxError: for an empty item, an unknown field or a bad direction.
    """
    keys: list[OrderKey] = []
    for item in items:
        keys.extend(_Parser(item, "order_by").order_keys())
    return tuple(keys)


def parse_time(text: str) -> datetime:
    """An ISO 8601 date or time as a UTC-aware datetime; without an offset it is UTC.

    Raises:
        ValueError: when ``text`` is not an ISO date or time.
    """
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_text(node: Condition) -> str:
    """Filter text for a condition; ``parse_filter(to_text(node)) == node``."""
    if isinstance(node, Compare):
        return f"{node.field} {node.op} {_value_text(node.value)}"
    if isinstance(node, In):
        values = ", ".join(_value_text(v) for v in node.values)
        return f"{node.field} {'not in' if node.negated else 'in'} ({values})"
    if isinstance(node, Not):
        inner = to_text(node.item)
        return f"not ({inner})" if isinstance(node.item, And | Or) else f"not {inner}"
    joiner = " and " if isinstance(node, And) else " or "
    return joiner.join(
        f"({to_text(item)})" if isinstance(item, And | Or) else to_text(item) for item in node.items
    )


# -- printing -----------------------------------------------------------------------------------


def _name_text(name: str) -> str:
    if name and all(c in _NAME_CHARS for c in name):
        return name
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _value_text(value: Value) -> str:
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


# -- lexing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    """A token: ``kind`` is word, keyword, number, string, op, ``(``, ``)``, ``,`` or end."""

    kind: str
    text: str
    pos: int
    value: Value = None
    #: Words: the part before the first unquoted dot, and the decoded rest (None: no dot).
    head: str = ""
    tail: str | None = None
    #: Words: a backquoted part came before the first dot (never a valid field).
    quoted_head: bool = False

    def describe(self) -> str:
        return "the end" if self.kind == "end" else repr(self.text)


def _lex(text: str, source: str) -> Iterator[_Token]:
    i, n = 0, len(text)

    def fail(reason: str, at: int) -> QuerySyntaxError:
        return QuerySyntaxError(reason, source=source, text=text, offset=at)

    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "(),":
            yield _Token(c, c, i)
            i += 1
        elif c in "'\"":
            value, end = _read_quoted(text, i, c, fail, "text")
            yield _Token("string", text[i:end], i, value)
            i = end
        elif c in _DIGITS or (c in "-." and i + 1 < n and text[i + 1] in _DIGITS + "."):
            match = _NUMBER.match(text, i)
            if match is None:
                raise fail(f"unexpected character {c!r}", i)
            raw = match.group()
            number: int | float = float(raw) if any(ch in raw for ch in ".eE") else int(raw)
            if isinstance(number, float) and number in (float("inf"), float("-inf")):
                raise fail(f"number {raw} is too large", i)
            yield _Token("number", raw, i, number)
            i = match.end()
        elif c in _WORD_START:
            token, i = _read_word(text, i, fail)
            yield token
        else:
            op = next((o for o in _OPS if text.startswith(o, i)), None)
            if op is None:
                raise fail(f"unexpected character {c!r}", i)
            yield _Token("op", op, i, _OP_ALIASES.get(op, op))
            i += len(op)
    yield _Token("end", "", n)


def _read_quoted(text: str, start: int, quote: str, fail: _Fail, what: str) -> tuple[str, int]:
    """Decode a quoted run starting at ``start``; returns (value, index after the closing quote)."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == quote:
            return "".join(out), i + 1
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in (quote, "\\", "'", '"', "`"):
                out.append(nxt)
            elif nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
            else:
                out.append(c + nxt)
            i += 2
            continue
        out.append(c)
        i += 1
    closing = "backquote" if quote == "`" else "quote"
    raise fail(f"unterminated {what}: no closing {closing} for the one here", start)


def _read_word(text: str, start: int, fail: _Fail) -> tuple[_Token, int]:
    i = start
    parts: list[str] = []
    head: str | None = None
    quoted_head = False
    quoted_any = False
    while i < len(text):
        c = text[i]
        if c == "`":
            value, i = _read_quoted(text, i, "`", fail, "name")
            if head is None:
                quoted_head = True
            parts.append(value)
            quoted_any = True
        elif c in _NAME_CHARS:
            if c == "." and head is None:
                head = "".join(parts)
                parts = []
            else:
                parts.append(c)
            i += 1
        else:
            break
    raw = text[start:i]
    if head is None:
        word = "".join(parts)
        if not quoted_any and word.lower() in _KEYWORDS:
            return _Token("keyword", raw, start, word.lower()), i
        return _Token("word", raw, start, word, head=word, quoted_head=quoted_head), i
    tail = "".join(parts)
    return _Token("word", raw, start, raw, head=head, tail=tail, quoted_head=quoted_head), i


# -- parsing ------------------------------------------------------------------------------------


class _Parser:
    """Recursive descent over the tokens of one filter or order-by text."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.tokens = list(_lex(text, source))
        self.i = 0

    # token helpers

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def advance(self) -> _Token:
        token = self.tokens[self.i]
        if token.kind != "end":
            self.i += 1
        return token

    def at_keyword(self, *words: str) -> bool:
        token = self.peek()
        return token.kind == "keyword" and token.value in words

    def fail(self, reason: str, token: _Token) -> QuerySyntaxError:
        return QuerySyntaxError(reason, source=self.source, text=self.text, offset=token.pos)

    # grammar

    def filter(self) -> Condition:
        if self.peek().kind == "end":
            raise self.fail(
                "the filter is empty; write a condition like metrics.accuracy > 0.9", self.peek()
            )
        node = self.disjunction(None)
        token = self.peek()
        if token.kind == ")":
            raise self.fail("unbalanced ')': there is no '(' before it", token)
        if token.kind != "end":
            raise self.fail(
                f"unexpected {token.describe()} after a complete condition; "
                "join conditions with 'and' or 'or'",
                token,
            )
        return node

    def disjunction(self, after: _Token | None) -> Condition:
        items = [self.conjunction(after)]
        while self.at_keyword("or"):
            items.append(self.conjunction(self.advance()))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conjunction(self, after: _Token | None) -> Condition:
        items = [self.negation(after)]
        while self.at_keyword("and"):
            items.append(self.negation(self.advance()))
        return items[0] if len(items) == 1 else And(tuple(items))

    def negation(self, after: _Token | None) -> Condition:
        if self.at_keyword("not"):
            token = self.advance()
            return Not(self.negation(token))
        return self.primary(after)

    def primary(self, after: _Token | None) -> Condition:
        token = self.peek()
        if token.kind == "(":
            self.advance()
            node = self.disjunction(token)
            closing = self.peek()
            if closing.kind != ")":
                raise self.fail(
                    f"expected ')' to close the '(' at position {token.pos + 1}", closing
                )
            self.advance()
            return node
        if token.kind != "word":
            where = f" after {after.describe()}" if after is not None else ""
            if token.kind in ("number", "string") or (
                token.kind == "keyword" and token.value in ("true", "false", "null")
            ):
                raise self.fail(
                    f"expected a field{where}, not the value {token.text}; a condition reads "
                    "field operator value, like metrics.accuracy > 0.9",
                    token,
                )
            raise self.fail(f"expected a condition{where}", token)
        return self.predicate()

    def predicate(self) -> Condition:
        field, field_token = self.field()
        token = self.advance()
        negated = False
        if token.kind == "keyword" and token.value == "not":
            nxt = self.peek()
            if not (nxt.kind == "keyword" and nxt.value in ("in", "like", "matches")):
                raise self.fail("expected in, like or matches after 'not'", nxt)
            negated = True
            token = self.advance()
        if token.kind == "keyword" and token.value == "in":
            return self.in_list(field, token, negated)
        if token.kind == "keyword" and token.value in ("like", "matches"):
            op = {"like": "like", "matches": "~"}[str(token.value)]
            op = {"like": "not like", "~": "!~"}[op] if negated else op
        elif token.kind == "op":
            op = str(token.value)
        else:
            raise self.fail(
                f"expected an operator after {field_token.text!r} ({_OPERATOR_LIST})", token
            )
        value, value_token = self.value(token)
        self.check(field, op, value, value_token)
        return Compare(field, op, value)

    def in_list(self, field: Field, in_token: _Token, negated: bool) -> In:
        opening = self.peek()
        if opening.kind != "(":
            raise self.fail(f"expected '(' after {in_token.text!r}, as in in ('a', 'b')", opening)
        self.advance()
        if self.peek().kind == ")":
            raise self.fail("in () needs at least one value", self.peek())
        values: list[Value] = []
        after = opening
        while True:
            value, token = self.value(after)
            if value is None:
                raise self.fail(
                    "null cannot be one of the values of in (…); use = null or != null", token
                )
            self.check(field, "=", value, token)
            values.append(value)
            separator = self.peek()
            if separator.kind == ")":
                self.advance()
                return In(field, tuple(values), negated)
            if separator.kind != ",":
                raise self.fail(
                    f"expected ',' or ')' after {token.text} in the list of {in_token.text!r}",
                    separator,
                )
            after = self.advance()

    def field(self) -> tuple[Field, _Token]:
        token = self.advance()
        if token.kind != "word":
            raise self.fail(f"expected a field ({_FIELD_LIST})", token)
        head = token.head.lower()
        if token.quoted_head:
            raise self.fail(self._unknown(token), token)
        if token.tail is None and head in ("min", "max") and self.peek().kind == "(":
            return self.aggregate(FieldKind(head), token), token
        if head in ("params", "metrics", "tags"):
            if not token.tail:
                kind = {"params": "parameter", "metrics": "metric", "tags": "tag key"}[head]
                end = _Token("end", "", token.pos + len(token.text))
                raise self.fail(f"expected a {kind} name after '{head}.'", end)
            return Field(FieldKind(head), token.tail), token
        if token.tail is None and head in {k.value for k in _PLAIN}:
            return Field(FieldKind(head)), token
        raise self.fail(self._unknown(token), token)

    def aggregate(self, kind: FieldKind, token: _Token) -> Field:
        self.advance()  # the "("
        inner = self.advance()
        if inner.kind != "word" or inner.head.lower() != "metrics" or not inner.tail:
            raise self.fail(
                f"{kind.value}(…) takes a metric, like {kind.value}(metrics.loss)", inner
            )
        closing = self.peek()
        if closing.kind != ")":
            raise self.fail(f"expected ')' after '{kind.value}({inner.text}'", closing)
        self.advance()
        return Field(kind, inner.tail)

    def _unknown(self, token: _Token) -> str:
        heads = [k.value for k in FieldKind]
        close = difflib.get_close_matches(token.head.lower(), heads, n=1, cutoff=0.6)
        hint = ""
        if close and not token.quoted_head:
            suggestion = close[0] + token.text[len(token.head) :]
            hint = f"; did you mean {suggestion!r}?"
        return f"unknown field {token.text!r}{hint} (fields: {_FIELD_LIST})"

    def value(self, after: _Token) -> tuple[Value, _Token]:
        token = self.advance()
        if token.kind in ("number", "string"):
            return token.value, token
        if token.kind == "keyword" and token.value in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[str(token.value)], token
        if token.kind == "word":
            raise self.fail(
                f"expected a value after {after.describe()} (put text in quotes: "
                f"{_value_text(token.text)})",
                token,
            )
        raise self.fail(f"expected a value after {after.describe()}", token)

    def check(self, field: Field, op: str, value: Value, token: _Token) -> None:
        """Reject a value or operator that the field's type does not take, at ``token``."""
        if value is None:
            if op not in ("=", "!="):
                raise self.fail(f"null can only be compared with = or !=, not {op}", token)
            return
        if op in _TEXT_MATCHES:
            if field.kind in _NUMERIC or field.kind in _TIMES:
                kind = "a number" if field.kind in _NUMERIC else "a time"
                raise self.fail(f"{op} works on text, and {field} is {kind}", token)
            if not isinstance(value, str):
                raise self.fail(f"{op} takes a pattern in quotes, not {token.text}", token)
            if op in ("like", "not like") and (len(value) - len(value.rstrip("\\"))) % 2:
                raise self.fail(
                    "a like pattern cannot end with a lone backslash: it escapes the character "
                    "after it",
                    token,
                )
            if op in ("~", "!~"):
                try:
                    re.compile(value)
                except re.error as exc:
                    raise self.fail(f"invalid regular expression {value!r}: {exc}", token) from None
            return
        if field.kind in _NUMERIC:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.fail(f"{field} is a number; compare it with a number", token)
        elif field.kind in _TIMES:
            if not isinstance(value, str):
                raise self.fail(f"{field} is a time; {_TIME_HINT}", token)
            try:
                parse_time(value)
            except ValueError:
                raise self.fail(f"{value!r} is not a time; {_TIME_HINT}", token) from None
        elif field.kind in _TEXT:
            if not isinstance(value, str):
                raise self.fail(
                    f"{field} is text; put the value in quotes: '{_value_text(value)}'", token
                )
            if field.kind is FieldKind.STATUS and op in ("=", "!="):
                statuses = [s.value for s in RunStatus]
                if value not in statuses:
                    raise self.fail(
                        f"unknown status {value!r} (statuses: {', '.join(statuses)})", token
                    )
        elif isinstance(value, bool) and op not in ("=", "!="):
            raise self.fail(f"true and false can only be compared with = or !=, not {op}", token)

    def order_keys(self) -> Iterator[OrderKey]:
        if self.peek().kind == "end":
            raise self.fail(
                "the order_by item is empty; write a field, like 'metrics.accuracy desc'",
                self.peek(),
            )
        while True:
            field, token = self.field()
            descending = False
            if self.at_keyword("asc", "desc"):
                descending = self.advance().value == "desc"
            yield OrderKey(field, descending)
            nxt = self.peek()
            if nxt.kind == "end":
                return
            if nxt.kind != ",":
                raise self.fail(f"expected asc, desc or ',' after {token.text!r}", nxt)
            self.advance()


_TIME_HINT = "give an ISO date or time in quotes, like '2024-05-01' or '2024-05-01T12:30:00+00:00'"
