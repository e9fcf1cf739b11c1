"""The run page's lineage links: origin and retries, runs it read from and runs that read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipetrail.client import Run, list_runs
from pipetrail.errors import NotFoundError

if TYPE_CHECKING:
    from pipetrail.client import Reader
    from pipetrail.storage.metadata.base import MetadataStore

__all__ = ["Lineage", "RunLink", "run_lineage"]

#: How many runs of the pipeline are searched for retries of this one.
RETRY_SEARCH = 200
#: At most this many runs downstream are listed.
DOWNSTREAM_LIMIT = 50


@dataclass(frozen=True)
class RunLink:
    """A link to another run, and what connects them."""

    run_id: int
    pipeline: str
    status: str
    via: tuple[str, ...] = ()

    @property
    def href(self) -> str:
        return f"/pipelines/{self.pipeline}/runs/{self.run_id}"


@dataclass
class Lineage:
    """The runs connected to one: its origin, its retries, and across artifacts."""

    origin: RunLink | None = None
    retries: list[RunLink] = field(default_factory=list)
    upstream: list[RunLink] = field(default_factory=list)
    downstream: list[RunLink] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.origin or self.retries or self.upstream or self.downstream)


def _link(store: MetadataStore, run_id: int, via: set[str] | None = None) -> RunLink | None:
    try:
        record = store.get_run(run_id)
    except NotFoundError:
        return None
    return RunLink(run_id, record.pipeline, record.status.value, tuple(sorted(via or ())))


def run_lineage(run: Run, store: MetadataStore, reader: Reader) -> Lineage:
    """How ``run`` is connected to other runs, read from the store's lineage edges."""
    found = Lineage()
    origin = run.record.origin_run_id
    if origin is not None:
        found.origin = _link(store, origin)
    for other in list_runs(
        pipeline=run.pipeline_name, limit=RETRY_SEARCH, all_namespaces=True, reader=reader
    ):
        if other.record.origin_run_id == run.id:
            found.retries.append(RunLink(other.id, other.pipeline_name, other.status))
    links = store.links(run.id)
    own = {link.task_id for link in links}
    producers = sorted(
        {
            link.producer_task_id
            for link in links
            if link.direction == "input" and link.producer_task_id is not None
        }
        - own
    )
    if producers:
        names: dict[int, set[str]] = {}
        by_task = {link.producer_task_id: link.name for link in links if link.direction == "input"}
        for task in store.get_tasks(producers):
            if task.run_id != run.id and task.run_id != origin:
                names.setdefault(task.run_id, set()).add(by_task.get(task.id) or task.step)
        for run_id, via in sorted(names.items()):
            if (up := _link(store, run_id, via)) is not None:
                found.upstream.append(up)
    keys = sorted({link.artifact.key for link in links if link.direction == "output"})
    if keys:
        # The same bytes may come from other runs too: only a link naming one of this run's
        # tasks as the producer means the reader read it from here.
        readers: dict[int, set[str]] = {}
        for link in store.links_of_artifacts(keys):
            if link.direction == "input" and link.run_id != run.id and link.producer_task_id in own:
                readers.setdefault(link.run_id, set()).add(link.name)
        for run_id, via in sorted(readers.items(), reverse=True)[:DOWNSTREAM_LIMIT]:
            if (down := _link(store, run_id, via)) is not None:
                found.downstream.append(down)
    return found
