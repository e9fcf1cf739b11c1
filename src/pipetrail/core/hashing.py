"""Canonical JSON encoding and content digests: one definition for the artifact store and fingerprints."""

from __future__ import annotations

import json
from typing import Any

import blake3

__all__ = [
    "DIGEST_ALGORITHM",
    "canonical_json",
    "digest_bytes",
    "digest_json",
    "fingerprint_source",
    "new_hasher",
]

#: Name recorded beside every digest, so a later change of algorithm is detectable.
DIGEST_ALGORITHM = "blake3"


def new_hasher() -> Any:
    """A streaming hasher: call ``update(bytes)`` repeatedly, then ``hexdigest()``."""
    # blake3 hashes large buffers on several threads; small updates stay single-threaded.
    return blake3.blake3(max_threads=blake3.blake3.AUTO)


def digest_bytes(data: bytes | bytearray | memoryview) -> str:
    """Hex digest of ``data``."""
    hasher = new_hasher()
    hasher.update(data)
    return str(hasher.hexdigest())


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` as JSON with sorted keys and no whitespace, so equal values give equal bytes."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True
    ).encode()


def digest_json(value: Any) -> str:
    """Hex digest of the canonical JSON encoding of ``value``."""
    return digest_bytes(canonical_json(value))


def fingerprint_source(source: str) -> str:
    """Digest of Python source that ignores comments, docstrings and formatting.

    Falls back to hashing the raw text when it does not parse (e.g. a lambda's fragment).
    """
    import ast
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return digest_bytes(source.encode())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module))
            and isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return digest_bytes(ast.unparse(tree).encode())
