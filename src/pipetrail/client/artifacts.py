"""Artifact handles: a task's or run's artifacts by name, loaded on first access."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipetrail.client.reader import Reader
from pipetrail.core.model import ArtifactLink

__all__ = ["DataArtifacts"]


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
