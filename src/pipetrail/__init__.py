"""pipetrail: define pipelines in plain Python, run them, and keep a complete record of every run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipetrail.client import (
    Pipeline,
    Run,
    Step,
    Task,
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

if TYPE_CHECKING:
    from pipetrail.client import compare, lineage
    from pipetrail.governance.models import ModelVersion, load_model, register_model

__version__ = "0.1.0"


#: Loaded on first use (they cost import time): name → the module that defines it.
_LAZY = {
    "compare": "pipetrail.client",
    "lineage": "pipetrail.client",
    "ModelVersion": "pipetrail.governance.models",
    "load_model": "pipetrail.governance.models",
    "register_model": "pipetrail.governance.models",
}


def __getattr__(name: str) -> Any:
    """``pt.compare``, ``pt.lineage`` and the model registry load on first use."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DefinitionError",
    "ModelVersion",
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
    "load_model",
    "log_artifact",
    "log_input",
    "log_metric",
    "log_metrics",
    "namespace",
    "open_workspace",
    "register_model",
    "retry",
    "run",
    "search_runs",
    "set_tag",
    "step",
    "triggers",
]
