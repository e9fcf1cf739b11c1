"""The search language's parser: tokens into a checked syntax tree, by recursive descent."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from datetime import UTC, datetime

from pipetrail.core.bounds import check_time
from pipetrail.core.query_ast import (
    FIELD_LIST,
    NUMERIC,
    OPERATOR_LIST,
    PLAIN,
    TEXT,
    TEXT_MATCHES,
    TIMES,
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
    value_text,
)
from pipetrail.core.query_lexer import Token, lex
from pipetrail.core.query_regex import compile_regex
from pipetrail.core.status import RunStatus
from pipetrail.errors import QuerySyntaxError, UsageError

__all__ = ["MAX_DEPTH", "Parser", "parse_time"]

#: How deeply parentheses and ``not`` may nest in a filter; deeper text is refused before the
#: recursive descent (and the SQL compiler after it) could exhaust Python's stack.
MAX_DEPTH = 32


def parse_time(text: str) -> datetime:
    """An ISO 8601 date or time as a UTC-aware datetime; without an offset it is UTC.

    Raises:
        ValueError: when ``text`` is not an ISO date or time.
    """
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is outside the range of times") from None


# -- parsing ------------------------------------------------------------------------------------


class Parser:
    """Recursive descent over the tokens of one filter or order-by text."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.tokens = list(lex(text, source))
        self.i = 0
        self.depth = 0

    # token helpers

    def peek(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        token = self.tokens[self.i]
        if token.kind != "end":
            self.i += 1
        return token

    def at_keyword(self, *words: str) -> bool:
        token = self.peek()
        return token.kind == "keyword" and token.value in words

    def fail(self, reason: str, token: Token) -> QuerySyntaxError:
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

    def disjunction(self, after: Token | None) -> Condition:
        items = [self.conjunction(after)]
        while self.at_keyword("or"):
            items.append(self.conjunction(self.advance()))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conjunction(self, after: Token | None) -> Condition:
        items = [self.negation(after)]
        while self.at_keyword("and"):
            items.append(self.negation(self.advance()))
        return items[0] if len(items) == 1 else And(tuple(items))

    def nest(self, token: Token) -> None:
        """Enter one more level of ``(`` or ``not`` at ``token``, refusing past :data:`MAX_DEPTH`."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(
                f"the filter nests parentheses and 'not' more than {MAX_DEPTH} levels deep "
                "here; write it with fewer levels",
                token,
            )

    def negation(self, after: Token | None) -> Condition:
        if self.at_keyword("not"):
            token = self.advance()
            self.nest(token)
            node = Not(self.negation(token))
            self.depth -= 1
            return node
        return self.primary(after)

    def primary(self, after: Token | None) -> Condition:
        token = self.peek()
        if token.kind == "(":
            self.advance()
            self.nest(token)
            node = self.disjunction(token)
            self.depth -= 1
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
                f"expected an operator after {field_token.text!r} ({OPERATOR_LIST})", token
            )
        value, value_token = self.value(token)
        self.check(field, op, value, value_token)
        return Compare(field, op, value)

    def in_list(self, field: Field, in_token: Token, negated: bool) -> In:
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

    def field(self) -> tuple[Field, Token]:
        token = self.advance()
        if token.kind != "word":
            raise self.fail(f"expected a field ({FIELD_LIST})", token)
        head = token.head.lower()
        if token.quoted_head:
            raise self.fail(self._unknown(token), token)
        if token.tail is None and head in ("min", "max") and self.peek().kind == "(":
            return self.aggregate(FieldKind(head), token), token
        if head in ("params", "metrics", "tags"):
            if not token.tail:
                kind = {"params": "parameter", "metrics": "metric", "tags": "tag key"}[head]
                end = Token("end", "", token.pos + len(token.text))
                raise self.fail(f"expected a {kind} name after '{head}.'", end)
            return Field(FieldKind(head), token.tail), token
        if token.tail is None and head in {k.value for k in PLAIN}:
            return Field(FieldKind(head)), token
        raise self.fail(self._unknown(token), token)

    def aggregate(self, kind: FieldKind, token: Token) -> Field:
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

    def _unknown(self, token: Token) -> str:
        heads = [k.value for k in FieldKind]
        close = difflib.get_close_matches(token.head.lower(), heads, n=1, cutoff=0.6)
        hint = ""
        if close and not token.quoted_head:
            suggestion = close[0] + token.text[len(token.head) :]
            hint = f"; did you mean {suggestion!r}?"
        return f"unknown field {token.text!r}{hint} (fields: {FIELD_LIST})"

    def value(self, after: Token) -> tuple[Value, Token]:
        token = self.advance()
        if token.kind in ("number", "string"):
            return token.value, token
        if token.kind == "keyword" and token.value in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[str(token.value)], token
        if token.kind == "word":
            raise self.fail(
                f"expected a value after {after.describe()} (put text in quotes: "
                f"{value_text(token.text)})",
                token,
            )
        raise self.fail(f"expected a value after {after.describe()}", token)

    def check(self, field: Field, op: str, value: Value, token: Token) -> None:
        """Reject a value or operator that the field's type does not take, at ``token``."""
        if value is None:
            if op not in ("=", "!="):
                raise self.fail(f"null can only be compared with = or !=, not {op}", token)
            return
        if op in TEXT_MATCHES:
            if field.kind in NUMERIC or field.kind in TIMES:
                kind = "a number" if field.kind in NUMERIC else "a time"
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
                    compile_regex(value)
                except ValueError as exc:
                    raise self.fail(
                        f"invalid regular expression {value!r}: {exc} (patterns are RE2: "
                        "no backreferences or lookaround)",
                        token,
                    ) from None
            return
        if field.kind in NUMERIC:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.fail(f"{field} is a number; compare it with a number", token)
        elif field.kind in TIMES:
            if not isinstance(value, str):
                raise self.fail(f"{field} is a time; {_TIME_HINT}", token)
            try:
                moment = parse_time(value)
            except ValueError:
                raise self.fail(f"{value!r} is not a time; {_TIME_HINT}", token) from None
            try:
                check_time(moment, str(field))
            except UsageError as exc:
                raise self.fail(str(exc), token) from None
        elif field.kind in TEXT:
            if not isinstance(value, str):
                raise self.fail(
                    f"{field} is text; put the value in quotes: '{value_text(value)}'", token
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
