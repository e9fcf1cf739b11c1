"""The retention part of the MetadataStore port: deleting runs, and what no run references.

Records and the store methods the governance layer (``pipetrail.governance.retention`` and
``.gc``) calls. Which run may be deleted is a rule of that layer, handed to
``delete_run`` as ``refuse``; the store reads the facts the rule needs under the run's lock
and deletes in the same transaction, so nothing can start to use the run in between.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

__all__ = [
    "KEEP_TAG",
    "DeletedRun",
    "RetentionStore",
    "RowsCollected",
    "RunFacts",
    "VersionUse",
]


#: The user tag that protects a run from deletion (by hand or by a rule); a change of it is a
#: governance event.
KEEP_TAG = "keep"


@dataclass(frozen=True)
class VersionUse:
    """A registered model version that uses a run (produced by it, or bound to its output)."""

    model: str
    version: int
    aliases: tuple[str, ...] = ()
    #: Aliases that a pending promotion request would point at this version.
    pending: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.model}/{self.version}"


@dataclass(frozen=True)
class RunFacts:
    """What decides whether a run may be deleted, read under the run's lock."""

    run_id: int
    pathspec: str
    pipeline: str
    status: str
    created_at: datetime
    tags: tuple[str, ...]
    versions: tuple[VersionUse, ...] = ()
    #: Runs not yet ended that point at this one (retries or resumes of it, ``after`` runs).
    unfinished_dependents: tuple[int, ...] = ()


@dataclass(frozen=True)
class DeletedRun:
    """The outcome of ``delete_run``: deleted (or, with ``dry_run``, deletable), or refused.

    ``cleared`` names the pointers of other rows that pointed at the run and were set to NULL
    (``origin_run_id`` of its retries, ``upstream_run_id``, trigger ticks, alerts, reused tasks
    and input links of later runs): ``{"origin_run_id": [7, 9], ...}``.
    """

    facts: RunFacts
    deleted: bool
    refused: str | None = None
    cleared: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class RowsCollected:
    """Rows ``collect_rows`` removed (or would remove) because nothing referenced them."""

    artifacts: int = 0
    environments: int = 0
    pipeline_versions: int = 0


class RetentionStore(Protocol):
    """Deleting runs with everything under them, and finding rows that nothing references."""

    def delete_run(
        self,
        run_id: int,
        *,
        actor: str,
        refuse: Callable[[RunFacts], str | None],
        dry_run: bool = False,
        message: str | None = None,
    ) -> DeletedRun: ...
    def model_lineage(self) -> dict[int, tuple[str, ...]]: ...
    def referenced_keys(self) -> set[str]: ...
    def collect_rows(self, keep: set[str], *, dry_run: bool = False) -> RowsCollected: ...
    def claim_housekeeping(self, name: str, now: datetime, every_s: float) -> bool: ...
