"""Source fingerprints: a digest of what code does, blind to comments, docstrings and layout."""

from __future__ import annotations

import ast
import io
import textwrap
import tokenize

from pipetrail.core.hashing import digest_bytes

__all__ = ["fingerprint_source", "normalized_source"]

_DOCSTRING_OWNERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_LAYOUT_TOKENS = frozenset({tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT})


def fingerprint_source(source: str) -> str:
    """Digest of Python source that ignores comments, docstrings and formatting.

    The source is parsed, docstrings are removed and the tree is unparsed again, so comments,
    blank lines, indentation, quoting and line wrapping do not change the digest while any change
    to names, decorators, arguments or statements does.
    """
    return digest_bytes(normalized_source(source).encode())


def normalized_source(source: str) -> str:
    """The canonical text that ``fingerprint_source`` hashes."""
    tree = _parse(source)
    if tree is not None:
        _strip_docstrings(tree)
        return ast.unparse(tree)
    # Fragments that do not parse alone (a lambda inside a multi-line call): drop comments and
    # layout tokens, keep everything else.
    text = textwrap.dedent(source)
    kept: list[str] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type not in _LAYOUT_TOKENS:
                kept.append(token.string)
    except tokenize.TokenError as error:
        # Unbalanced brackets fail only at the end of input; an unterminated string fails at its
        # start. Keep whatever was not tokenized verbatim so no logic drops out of the digest.
        line, column = error.args[1]
        lines = text.splitlines(keepends=True)
        offset = sum(len(part) for part in lines[: line - 1]) + column
        kept.append(" ".join(text[offset:].split()))
    except SyntaxError:
        return " ".join(text.split())
    return " ".join(kept)


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(textwrap.dedent(source))
    except SyntaxError:
        pass
    # A method whose multi-line string is less indented than its body defeats dedent: parse it
    # nested in a block, then lift the block's body out so it unparses like a top-level def.
    try:
        wrapper = ast.parse("if True:\n" + source).body[0]
    except SyntaxError:
        return None
    return ast.Module(body=wrapper.body, type_ignores=[]) if isinstance(wrapper, ast.If) else None


def _strip_docstrings(tree: ast.Module) -> None:
    for node in ast.walk(tree):
        if not isinstance(node, _DOCSTRING_OWNERS) or not node.body:
            continue
        first = node.body[0]
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            node.body = node.body[1:] or [ast.Pass()]
