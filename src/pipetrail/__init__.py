"""pipetrail: define pipelines in plain Python, run them, and keep a complete record of every run."""

from __future__ import annotations

from pipetrail.client import (
    Pipeline,
    Run,
    Step,
    Task,
    compare,
    lineage,
    list_runs,
    namespace,
    search_runs,
)
from pipetrail.dsl import step
from pipetrail.errors import (
    DefinitionError,
    ParameterError,
    PipetrailError,
    StepTimeoutError,
)
from pipetrail.runtime.context import (
    current,
    log_artifact,
    log_input,
    log_metric,
    log_metrics,
    set_tag,
)
from pipetrail.schedules import Trigger, apply_triggers, create_trigger, triggers
from pipetrail.workspace import cancel, open_workspace, retry, run

__version__ = "0.1.0"

__all__ = [
    "DefinitionError",
    "ParameterError",
    "Pipeline",
    "PipetrailError",
    "Run",
    "Step",
    "StepTimeoutError",
    "Task",
    "Trigger",
    "__version__",
    "apply_triggers",
    "cancel",
    "compare",
    "create_trigger",
    "current",
    "lineage",
    "list_runs",
    "log_artifact",
    "log_input",
    "log_metric",
    "log_metrics",
    "namespace",
    "open_workspace",
    "retry",
    "run",
    "search_runs",
    "set_tag",
    "step",
    "triggers",
]
