"""The stores a client handle reads from, and how handles built without one find them."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipetrail.core.model import ArtifactLink
from pipetrail.errors import UsageError
from pipetrail.storage.metadata.base import MetadataStore

if TYPE_CHECKING:
    from pipetrail.storage.artifacts.cas import ContentAddressedStore
    from pipetrail.storage.artifacts.serializers import SerializerRegistry

__all__ = ["Reader", "resolve_reader", "set_default_reader"]


class Reader:
    """The stores a client handle reads from; the artifact store is opened on first use.

    Args:
        store: the metadata store.
        artifacts: returns the artifact store and serializers (called at most once).
    """

    def __init__(
        self,
        store: MetadataStore,
        artifacts: Callable[[], tuple[ContentAddressedStore, SerializerRegistry]],
    ) -> None:
        self.store = store
        self._artifacts = artifacts

    @functools.cached_property
    def _opened(self) -> tuple[ContentAddressedStore, SerializerRegistry]:
        return self._artifacts()

    @property
    def cas(self) -> ContentAddressedStore:
        return self._opened[0]

    @property
    def registry(self) -> SerializerRegistry:
        return self._opened[1]

    def load(self, link: ArtifactLink) -> Any:
        """The Python value of a stored artifact (bytes for files)."""
        from pipetrail.storage.artifacts.serializers import load_from_store

        if link.artifact.serializer in ("file", "archive"):
            return self.cas.get_bytes(link.artifact.key)
        if link.artifact.serializer == "external":
            raise UsageError(
                f"artifact {link.name!r} is an external input recorded by hash only "
                f"({link.source_uri}); it was not copied into the store"
            )
        return load_from_store(self.cas, link.artifact.key, link.artifact.serializer, self.registry)


_default_reader: Callable[[], Reader] | None = None


def set_default_reader(factory: Callable[[], Reader]) -> None:
    """Install how handles built without a ``reader`` find the store (the workspace does this)."""
    global _default_reader
    _default_reader = factory


def resolve_reader(reader: Reader | None) -> Reader:
    if reader is not None:
        return reader
    if _default_reader is None:
        raise UsageError("no store configured: import pipetrail (not pipetrail.client) first")
    return _default_reader()
