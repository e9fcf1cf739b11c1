"""Garbage collection: remove stored content and rows that no remaining run or model uses.

What is referenced: every artifact a remaining run links (as input or output), every model
version's artifact, every run's code snapshot. Everything else in the artifact store is
garbage once it is older than the grace period, and so are the store's rows nobody points at
(artifacts without links, environments and pipeline versions without runs).

Why the grace period: a task stores its output first and records the link afterwards, in a
later transaction. An object written a moment ago with no link yet is therefore not garbage
but a write in progress. The store is listed *before* the references are read, so an object
that appears later is never a candidate, and each candidate's age is checked again just
before it is removed. Keep the grace (default one hour) longer than any task takes between
storing a value and ending.

A task that stores content identical to garbage finds it stored and writes nothing, so the
object's own time is old. The artifact store's put claims such an object instead (it sets a
local file's time to now, or writes a claim beside a remote object), and removal goes through
:meth:`ContentAddressedStore.delete_unclaimed`, which moves each object aside before it reads
its time and claims and puts back one claimed meanwhile. So an object stored again within the
grace stays, whenever the put happens during the collection.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipetrail.storage.artifacts.cas import ContentAddressedStore
from pipetrail.storage.metadata.base import MetadataStore
from pipetrail.storage.metadata.governance import GovernanceEvent
from pipetrail.storage.metadata.retention import RowsCollected

__all__ = ["DEFAULT_GRACE_S", "GcReport", "collect_garbage"]

#: How old unreferenced content must be before it is removed, by default.
DEFAULT_GRACE_S = 3600.0


@dataclass(frozen=True)
class GcReport:
    """What a collection removed (or, with ``dry_run``, would remove) and what it kept.

    Attributes:
        objects, bytes: unreferenced objects removed from the artifact store, their size.
        young, young_bytes: unreferenced objects kept because they are younger than the grace.
        referenced: objects kept because a run or model version uses them.
        temporaries, temporary_bytes: leftover temporary files of writes removed (local).
        rows: rows of the metadata store removed.
        keys: the keys of the objects removed.
    """

    dry_run: bool
    grace_s: float
    objects: int = 0
    bytes: int = 0
    young: int = 0
    young_bytes: int = 0
    referenced: int = 0
    temporaries: int = 0
    temporary_bytes: int = 0
    rows: RowsCollected = field(default_factory=RowsCollected)
    keys: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "grace_s": self.grace_s,
            "objects": self.objects,
            "bytes": self.bytes,
            "young": self.young,
            "young_bytes": self.young_bytes,
            "referenced": self.referenced,
            "temporaries": self.temporaries,
            "temporary_bytes": self.temporary_bytes,
            "rows": {
                "artifacts": self.rows.artifacts,
                "environments": self.rows.environments,
                "pipeline_versions": self.rows.pipeline_versions,
            },
        }


def collect_garbage(
    store: MetadataStore,
    cas: ContentAddressedStore,
    *,
    actor: str,
    grace_s: float = DEFAULT_GRACE_S,
    dry_run: bool = False,
    clock: Callable[[], float] = time.time,
) -> GcReport:
    """Remove what nothing references from ``cas`` and ``store`` (see the module's docstring).

    A ``gc`` governance event records who collected and what was freed (not on ``dry_run``).

    Raises:
        ArtifactError: the artifact store could not be listed or changed.
        StoreError: the metadata store failed.
    """
    # The listing comes first: whatever is stored after it is not looked at this time.
    listing = list(cas.objects())
    referenced = store.referenced_keys()
    now = clock()
    removed: list[tuple[str, int]] = []
    young: list[tuple[str, int]] = []
    in_use = 0
    candidates: list[tuple[str, int]] = []
    for key, size, modified in listing:
        if key in referenced:
            in_use += 1
        elif now - modified < grace_s:
            young.append((key, size))
        else:
            candidates.append((key, size))
    if candidates:
        # Read again just before removing: a link recorded since the first read keeps its object.
        referenced = store.referenced_keys()
    unreferenced: dict[str, int] = {}
    for key, size in candidates:
        if key in referenced:
            in_use += 1
        else:
            unreferenced[key] = size
    if dry_run:
        for key, size in unreferenced.items():
            modified_at = cas.modified(key)
            if modified_at is None:
                continue  # someone else removed it
            if clock() - modified_at < grace_s:
                young.append((key, size))  # written again since the listing (a write healed it)
            else:
                removed.append((key, size))
    elif unreferenced:
        # Stored again or claimed since the listing (a task re-storing the same content): kept.
        gone = set(cas.delete_unclaimed(unreferenced, before=clock() - grace_s))
        for key, size in unreferenced.items():
            if key in gone:
                removed.append((key, size))
            elif cas.exists(key):
                young.append((key, size))
    temporaries = 0
    temporary_bytes = 0
    for name, size, modified in list(cas.temporaries()):
        if now - modified >= grace_s and (dry_run or cas.delete_temporary(name)):
            temporaries += 1
            temporary_bytes += size
    if not dry_run:
        cas.expire_claims(now - grace_s)
    rows = store.collect_rows({k for k, _ in young}, dry_run=dry_run)
    report = GcReport(
        dry_run=dry_run,
        grace_s=grace_s,
        objects=len(removed),
        bytes=sum(s for _, s in removed),
        young=len(young),
        young_bytes=sum(s for _, s in young),
        referenced=in_use,
        temporaries=temporaries,
        temporary_bytes=temporary_bytes,
        rows=rows,
        keys=tuple(sorted(k for k, _ in removed)),
    )
    if not dry_run:
        store.record_governance_event(
            GovernanceEvent(
                id=0,
                at=datetime.now(UTC),
                actor=actor,
                action="gc",
                message=(
                    f"removed {report.objects} unreferenced objects ({report.bytes} bytes) "
                    f"from {cas.url}"
                ),
                detail={"artifacts": cas.url, **report.as_dict()},
            )
        )
    return report
