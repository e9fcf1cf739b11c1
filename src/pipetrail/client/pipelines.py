"""``pt.Pipeline``: a definition when given steps, and always a handle on the pipeline's runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from pipetrail.client.reader import Reader, resolve_reader
from pipetrail.client.runs import Run, RunList, list_runs
from pipetrail.core.model import PipelineSpec
from pipetrail.core.status import RunStatus
from pipetrail.dsl import Pipeline as PipelineDefinition
from pipetrail.dsl import Step as StepDefinition
from pipetrail.errors import UsageError

__all__ = ["Pipeline"]


class Pipeline(PipelineDefinition):
    """``pt.Pipeline("iris", [load, train])`` defines a pipeline; ``pt.Pipeline("iris")`` finds one.

    Either way it answers for the pipeline's recorded runs: ``runs(...)``, ``latest_run``,
    ``latest_successful_run``, and iteration over its runs, newest first (in the namespace).
    """

    def __init__(
        self,
        name: str,
        steps: Iterable[StepDefinition | Callable[..., Any]] | None = None,
        *,
        reader: Reader | None = None,
        **options: Any,
    ) -> None:
        self._history_reader = reader
        if steps is not None:
            super().__init__(name, steps, **options)
            return
        if options:
            raise UsageError(f"pipeline {name!r}: options like {sorted(options)} need steps")
        self.name = name
        self.steps = {}
        self.spec = self._recorded_spec()

    def _recorded_spec(self) -> PipelineSpec:
        latest = self.latest_run
        if latest is None:
            return PipelineSpec(self.name, ())
        return PipelineSpec.from_dict(latest.dag)

    def runs(
        self,
        status: str | Iterable[str] | None = None,
        tags: Iterable[str] = (),
        since: datetime | None = None,
        limit: int | None = None,
        filter: str | None = None,
    ) -> RunList:
        """This pipeline's runs, newest first, in the current namespace."""
        wanted = [status] if isinstance(status, str) else list(status or [])
        try:
            statuses = tuple(RunStatus(s) for s in wanted)
        except ValueError:
            valid = ", ".join(s.value for s in RunStatus)
            raise UsageError(f"unknown status in {wanted}; statuses: {valid}") from None
        return list_runs(
            pipeline=self.name,
            statuses=statuses,
            tags=tuple(tags),
            since=since,
            limit=limit,
            filter=filter,
            reader=resolve_reader(self._history_reader),
        )

    @property
    def latest_run(self) -> Run | None:
        found = self.runs(limit=1)
        return found[0] if found else None

    @property
    def latest_successful_run(self) -> Run | None:
        for run in self.runs(status="completed", limit=50):
            if run.successful:
                return run
        return None

    def __iter__(self) -> Iterator[Run]:
        return iter(self.runs())

    def __repr__(self) -> str:
        return f"Pipeline('{self.name}')"
