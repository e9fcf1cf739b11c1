"""Read-side API: Run, Step and Task handles addressed by pathspec, shaped like Metaflow's client."""

from __future__ import annotations

from pipetrail.client.artifacts import Artifact, ArtifactMap, DataArtifacts
from pipetrail.client.comparison import Comparison, compare
from pipetrail.client.lineage_graph import LineageGraph, lineage
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
