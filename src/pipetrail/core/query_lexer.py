"""The search language's lexer: filter and order-by text into positioned tokens."""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeAlias

from pipetrail.core.bounds import MAX_INTEGER
from pipetrail.core.query_ast import NAME_CHARS, Value
from pipetrail.errors import QuerySyntaxError

__all__ = ["Fail", "Token", "lex", "read_quoted", "read_word"]

_OP_ALIASES = {"==": "=", "<>": "!="}
_OPS = ("<=", ">=", "!=", "<>", "==", "!~", "=", "<", ">", "~")
_KEYWORDS = frozenset(
    {"and", "or", "not", "in", "like", "matches", "true", "false", "null", "asc", "desc"}
)
#: Makes a positioned error for the text being lexed.
Fail: TypeAlias = Callable[[str, int], QuerySyntaxError]
_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DIGITS = string.digits
_WORD_START = frozenset(string.ascii_letters + "_")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


# -- lexing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
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


def lex(text: str, source: str) -> Iterator[Token]:
    i, n = 0, len(text)

    def fail(reason: str, at: int) -> QuerySyntaxError:
        return QuerySyntaxError(reason, source=source, text=text, offset=at)

    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "(),":
            yield Token(c, c, i)
            i += 1
        elif c in "'\"":
            value, end = read_quoted(text, i, c, fail, "text")
            yield Token("string", text[i:end], i, value)
            i = end
        elif c in _DIGITS or (c in "-." and i + 1 < n and text[i + 1] in _DIGITS + "."):
            match = _NUMBER.match(text, i)
            if match is None:
                raise fail(f"unexpected character {c!r}", i)
            raw = match.group()
            number: int | float = float(raw) if any(ch in raw for ch in ".eE") else int(raw)
            if isinstance(number, float) and number in (float("inf"), float("-inf")):
                raise fail(f"number {raw} is too large", i)
            if isinstance(number, int) and abs(number) > MAX_INTEGER:
                raise fail(
                    f"number {raw} is too large; integers go up to {MAX_INTEGER} "
                    "(write it with a decimal point to compare as a float)",
                    i,
                )
            yield Token("number", raw, i, number)
            i = match.end()
        elif c in _WORD_START:
            token, i = read_word(text, i, fail)
            yield token
        else:
            op = next((o for o in _OPS if text.startswith(o, i)), None)
            if op is None:
                raise fail(f"unexpected character {c!r}", i)
            yield Token("op", op, i, _OP_ALIASES.get(op, op))
            i += len(op)
    yield Token("end", "", n)


def read_quoted(text: str, start: int, quote: str, fail: Fail, what: str) -> tuple[str, int]:
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


def read_word(text: str, start: int, fail: Fail) -> tuple[Token, int]:
    i = start
    parts: list[str] = []
    head: str | None = None
    quoted_head = False
    quoted_any = False
    while i < len(text):
        c = text[i]
        if c == "`":
            value, i = read_quoted(text, i, "`", fail, "name")
            if head is None:
                quoted_head = True
            parts.append(value)
            quoted_any = True
        elif c in NAME_CHARS:
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
            return Token("keyword", raw, start, word.lower()), i
        return Token("word", raw, start, word, head=word, quoted_head=quoted_head), i
    tail = "".join(parts)
    return Token("word", raw, start, raw, head=head, tail=tail, quoted_head=quoted_head), i
