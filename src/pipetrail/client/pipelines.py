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
        self._spec: PipelineSpec | None = None

    @property
    def spec(self) -> PipelineSpec:
        """The definition: as built from the steps, or as the latest run recorded it.

        The recorded one is read when first asked for: iterating the runs does not need it.
        """
        if self._spec is None:
            latest = self.latest_run
            self._spec = (
                PipelineSpec(self.name, ())
                if latest is None
                else PipelineSpec.from_dict(latest.dag)
            )
        return self._spec

    @spec.setter
    def spec(self, value: PipelineSpec) -> None:
        self._spec = value

    def __repr__(self) -> str:
        return f"Pipeline('{self.name}')"
