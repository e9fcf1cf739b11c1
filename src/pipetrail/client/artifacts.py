"""Artifact handles: a task's or run's artifacts by name, loaded on first access."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pipetrail.client.reader import Reader
from pipetrail.core.model import ArtifactLink

if TYPE_CHECKING:
    from pipetrail.client.steps import Task

__all__ = ["Artifact", "ArtifactMap", "DataArtifacts"]


class Artifact:
    """One artifact a task consumed or produced: a read-only view of its record.

    ``hash`` is the content hash (the artifact's identity in the store); ``data`` loads the
    value on first access (bytes for files; an external input, recorded by hash only, has none).
    """

    def __init__(
        self, link: ArtifactLink, reader: Reader, producer: Callable[[], Task | None]
    ) -> None:
        self._link = link
        self._reader = reader
        self._producer = producer

    @property
    def name(self) -> str:
        return self._link.name

    @property
    def hash(self) -> str:
        """The content hash of the stored (or, for an external input, the read) bytes."""
        return self._link.artifact.key

    @property
    def size(self) -> int:
        return self._link.artifact.size

    @property
    def type(self) -> str:
        """The qualified type of the value (``builtins.dict``); ``file`` or ``directory`` for files."""
        return self._link.artifact.type_name

    @property
    def serializer(self) -> str:
        return self._link.artifact.serializer

    @property
    def content_type(self) -> str:
        return self._link.artifact.content_type

    @property
    def kind(self) -> str:
        """How the task came by it: ``output``, ``upstream``, ``external``, ..."""
        return self._link.kind

    @property
    def source_uri(self) -> str | None:
        """Where an external input was read from (``log_input``); None otherwise."""
        return self._link.source_uri

    @functools.cached_property
    def task(self) -> Task | None:
        """The task that produced it; None for an external input."""
        return self._producer()

    @functools.cached_property
    def data(self) -> Any:
        """The value, loaded from the artifact store on first access.

        Raises:
            UsageError: an external input, which was recorded by hash and never copied in.
        """
        return self._reader.load(self._link)

    def __repr__(self) -> str:
        return f"Artifact({self.name!r}, hash={self.hash[:12]!r}, type={self.type!r})"


class ArtifactMap(Mapping[str, "Artifact | tuple[Artifact, ...]"]):
    """A task's inputs or outputs by name, in the order they were recorded.

    As with ``data``, a name received from several tasks (the gather of a foreach step) maps
    to the tuple of their artifacts, in task order; any other name maps to one ``Artifact``.
    """

    def __init__(self, artifacts: list[Artifact]) -> None:
        groups: dict[str, list[Artifact]] = {}
        for artifact in artifacts:
            groups.setdefault(artifact.name, []).append(artifact)
        self._items = {
            name: group[0] if len(group) == 1 else tuple(group) for name, group in groups.items()
        }

    def __getitem__(self, name: str) -> Artifact | tuple[Artifact, ...]:
        if name not in self._items:
            raise KeyError(f"no artifact {name!r}; artifacts: {list(self._items)}")
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def all(self) -> list[Artifact]:
        """Every artifact, a gathered name's one by one, in the order they were recorded."""
        return [a for v in self._items.values() for a in (v if isinstance(v, tuple) else (v,))]

    def __repr__(self) -> str:
        return f"<artifacts {list(self._items)}>"


class DataArtifacts:
    """Artifacts by name, loaded on first access: ``run.data.model``.

    A name produced by several tasks (a foreach step) reads as the list of their values, in
    task order, as the downstream step received it.
    """

    def __init__(
        self, reader: Reader, links: list[ArtifactLink] | dict[str, list[ArtifactLink]]
    ) -> None:
        self._reader = reader
        if isinstance(links, dict):
            self._groups = links
        else:
            self._groups = {}
            for link in links:
                self._groups.setdefault(link.name, []).append(link)
        self._links = {name: group[-1] for name, group in self._groups.items()}
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self._links:
            raise AttributeError(f"no artifact {name!r}; artifacts: {sorted(self._links)}")
        return self[name]

    def __getitem__(self, name: str) -> Any:
        if name not in self._links:
            raise KeyError(f"no artifact {name!r}; artifacts: {sorted(self._links)}")
        if name not in self._cache:
            group = self._groups[name]
            if len(group) == 1:
                self._cache[name] = self._reader.load(group[0])
            else:
                self._cache[name] = [self._reader.load(link) for link in group]
        return self._cache[name]

    def __contains__(self, name: object) -> bool:
        return name in self._links

    def __iter__(self) -> Iterator[str]:
        return iter(self._links)

    def __dir__(self) -> list[str]:
        return sorted(self._links)

    def __repr__(self) -> str:
        return f"<data {sorted(self._links)}>"
