"""A script that calls ``pt.run`` at its top level, with no ``if __name__ == "__main__":`` guard.

multiprocessing re-imports a parent's ``__main__`` file in every process it starts; the worker
processes must not re-run the user's script (issue 13: it failed with multiprocessing's
"bootstrapping phase" traceback and a failed run).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipetrail.config import Settings
from pipetrail.storage.metadata.base import RunQuery
from pipetrail.workspace import Workspace

SCRIPT = """
import os
import pipetrail as pt

@pt.step
def a():
    return os.getpid()

@pt.step
def b(a):
    return [a, os.getpid()]

pipeline = pt.Pipeline("unguarded", [a, b])
run = pt.run(pipeline, executor={executor!r}, max_parallel=2)
print("RESULT", run.status, os.getpid())
"""


@pytest.mark.parametrize("executor", ["process", "dask"])
def test_a_script_without_a_main_guard_runs_on_worker_processes(
    tmp_path: Path, executor: str
) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(executor=executor))
    home = tmp_path / "home"
    env = {**os.environ, "PIPETRAIL_HOME": str(home)}
    env.pop("PIPETRAIL_DB", None)
    env.pop("PIPETRAIL_ARTIFACTS", None)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "bootstrapping phase" not in done.stderr
    result = [line.split() for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert len(result) == 1, f"the script ran more than once: {done.stdout}"
    _, status, script_pid = result[0]
    assert status == "completed", done.stderr

    workspace = Workspace(Settings.for_home(home))
    try:
        runs = workspace.store.list_runs(RunQuery(limit=None))
        assert len(runs) == 1, "only the script's own run is recorded"
        tasks = workspace.store.tasks(runs[0].id)
    finally:
        workspace.close()
    # The steps ran in worker processes, not in the script's.
    pids = {task.pid for task in tasks}
    assert len(tasks) == 2 and None not in pids and int(script_pid) not in pids, pids
