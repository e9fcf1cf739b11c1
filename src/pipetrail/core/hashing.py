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
