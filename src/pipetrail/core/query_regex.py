"""The search language's regular expressions: RE2, which matches in time linear in the text.

Python's ``re`` backtracks: ``^(a+)+$`` against a few dozen ``a`` and a ``!`` runs for seconds,
and on an SQLite-backed server it would hold the store for every other request meanwhile. RE2
has no backtracking, and so no backreferences or lookaround: a pattern using them is refused
when the filter is parsed, with the reason, on every store.
"""

from __future__ import annotations

import functools
from typing import Any

import re2

__all__ = ["compile_regex", "regex_search"]

_OPTIONS = re2.Options()
# A refused pattern is reported to the user; RE2 need not also log it to stderr.
_OPTIONS.log_errors = False


@functools.lru_cache(maxsize=256)
def compile_regex(pattern: str) -> Any:
    """``pattern`` compiled by RE2.

    Raises:
        ValueError: RE2's reason, for a pattern it does not accept (a syntax error, a
            backreference, lookahead or lookbehind).
    """
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "not a valid pattern"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(str(reason)) from None


def regex_search(pattern: str, value: str) -> bool:
    """Whether ``pattern`` matches somewhere in ``value`` (RE2 semantics).

    Raises:
        ValueError: as :func:`compile_regex`.
    """
    return bool(compile_regex(pattern).search(value) is not None)
