"""``pt.Pipeline``: a definition when given steps, and always a handle on the pipeline's runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pipetrail.client.reader import Reader
from pipetrail.client.runs import PipelineHistory
from pipetrail.core.model import PipelineSpec
from pipetrail.dsl import Pipeline as PipelineDefinition
from pipetrail.dsl import Step as StepDefinition
from pipetrail.errors import UsageError

__all__ = ["Pipeline"]


class Pipeline(PipelineDefinition, PipelineHistory):
    """``pt.Pipeline("iris", [load, train])`` defines a pipeline; ``pt.Pipeline("iris")`` finds one.

    Either way it answers for the pipeline's recorded runs (see ``PipelineHistory``).
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

    def __repr__(self) -> str:
        return f"Pipeline('{self.name}')"
