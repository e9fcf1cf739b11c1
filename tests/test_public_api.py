"""The public surface of ``import pipetrail`` is pinned: a change here is a change for users."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pipetrail as pt


def test_all_is_sorted_and_pinned() -> None:
    assert pt.__all__ == sorted(pt.__all__)
    assert pt.__all__ == [
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
    for name in pt.__all__:
        assert hasattr(pt, name), name


def test_client_all_is_sorted_and_pinned() -> None:
    assert pt.client.__all__ == sorted(pt.client.__all__)
    assert pt.client.__all__ == [
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
    for name in pt.client.__all__:
        assert hasattr(pt.client, name), name


def test_import_loads_no_heavy_library() -> None:
    code = (
        "import sys, pipetrail; "
        "heavy = [m for m in ('sqlalchemy', 'numpy', 'pandas', 'fsspec', 'rich', 'alembic') "
        "if m in sys.modules]; print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_fresh_script_reads_runs_with_nothing_but_import_pipetrail(tmp_path: Path) -> None:
    # The client's handles find the store without the script opening a workspace (the names
    # load on first use, and the store's default must come with them).
    code = (
        "import pipetrail as pt\n"
        "@pt.step\n"
        "def one() -> int:\n"
        "    return 1\n"
        "run = pt.run(pt.Pipeline('fresh', [one]), executor='inline')\n"
        "print(run.pathspec)\n"
    )
    env = {**os.environ, "PIPETRAIL_HOME": str(tmp_path)}
    made = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    read = "import pipetrail as pt, sys; r = pt.Run(sys.argv[1]); print(r.status, r['one'].task.data.one)"
    done = subprocess.run(
        [sys.executable, "-c", read, made.stdout.strip()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["completed", "1"]
