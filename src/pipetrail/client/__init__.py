"""Read-side API: Run, Step and Task handles addressed by pathspec, shaped like Metaflow's client."""

from __future__ import annotations

from pipetrail.client.runs import (
    DataArtifacts,
    Reader,
    Run,
    Step,
    Task,
    list_runs,
    set_default_reader,
)

__all__ = ["DataArtifacts", "Reader", "Run", "Step", "Task", "list_runs", "set_default_reader"]
