"""pipetrail: define pipelines in plain Python, run them, and keep a complete record of every run."""

from __future__ import annotations

from pipetrail.errors import (
    DefinitionError,
    ParameterError,
    PipetrailError,
    StepTimeoutError,
)

# Not ``typing.TYPE_CHECKING``: importing typing alone costs more than the rest of this module.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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
    from pipetrail.governance.models import ModelVersion, load_model, register_model
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


#: The public names, each loaded on first use from the module that defines it: ``import
#: pipetrail`` costs a few milliseconds, and a script pays only for what it touches.
_LAZY = {
    **dict.fromkeys(
        ("Pipeline", "Run", "Step", "Task", "compare", "lineage", "list_runs", "namespace"),
        "pipetrail.client",
    ),
    "search_runs": "pipetrail.client",
    "step": "pipetrail.dsl",
    **dict.fromkeys(
        ("ModelVersion", "load_model", "register_model"), "pipetrail.governance.models"
    ),
    **dict.fromkeys(
        ("current", "log_artifact", "log_input", "log_metric", "log_metrics", "set_tag"),
        "pipetrail.runtime.context",
    ),
    **dict.fromkeys(
        ("Trigger", "apply_triggers", "create_trigger", "triggers"), "pipetrail.schedules"
    ),
    **dict.fromkeys(("cancel", "open_workspace", "retry", "run"), "pipetrail.workspace"),
}


#: Modules of what a pipeline file and its steps use: loading them opens no store.
_DEFINING = frozenset({"pipetrail.dsl", "pipetrail.runtime.context"})


def __getattr__(name: str) -> Any:
    """Every public name but the errors loads on first use (PEP 562)."""
    if name in _LAZY:
        import importlib

        module = _LAZY[name]
        value = getattr(importlib.import_module(module), name)
        if module not in _DEFINING:
            # The client's handles (pt.Run, pt.Pipeline's runs, ...) find the configured
            # store through the workspace, which installs itself as their default on import.
            importlib.import_module("pipetrail.workspace")
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
