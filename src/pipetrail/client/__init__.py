"""Read-side API: Run, Step and Task handles addressed by pathspec, shaped like Metaflow's client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipetrail.client.artifacts import Artifact, ArtifactMap, DataArtifacts
from pipetrail.client.pipelines import Pipeline
from pipetrail.client.reader import Reader, set_default_reader
from pipetrail.client.runs import (
    Code,
    PipelineHistory,
    Run,
    RunList,
    RunTrigger,
    list_runs,
    namespace,
    search_runs,
)
from pipetrail.client.steps import Step, Task, TaskException

if TYPE_CHECKING:
    from pipetrail.client.comparison import Comparison, compare
    from pipetrail.client.lineage_graph import LineageGraph, lineage

#: Imported on first use: comparing runs and drawing lineage are not what most imports need.
_LAZY = {
    "Comparison": "pipetrail.client.comparison",
    "compare": "pipetrail.client.comparison",
    "LineageGraph": "pipetrail.client.lineage_graph",
    "lineage": "pipetrail.client.lineage_graph",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Artifact",
    "ArtifactMap",
    "Code",
    "Comparison",
    "DataArtifacts",
    "LineageGraph",
    "Pipeline",
    "PipelineHistory",
    "Reader",
    "Run",
    "RunList",
    "RunTrigger",
    "Step",
    "Task",
    "TaskException",
    "compare",
    "lineage",
    "list_runs",
    "namespace",
    "search_runs",
    "set_default_reader",
]
