"""``pipetrail runs delete`` and ``pipetrail gc`` over a real store (SQLite and PostgreSQL).

The commands run in this process (click's runner) with the environment a terminal would have
(``PIPETRAIL_HOME``/``PIPETRAIL_DB`` name the test's store); stdin is not a terminal, so a
deletion by rule needs ``--yes``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import pipetrail as pt
from pipetrail.cli.main import cli
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

FLOW = """
@pt.step
def make(n: int = 3, fail: bool = False):
    if fail:
        raise ValueError("make failed on purpose")
    return list(range(n))

pipeline = pt.Pipeline("cli-ret", [make])
"""


class Shell:
    def __init__(self, workspace: Workspace) -> None:
        self.env = {
            "PIPETRAIL_HOME": str(workspace.settings.home),
            "PIPETRAIL_DB": workspace.settings.db_url,
            "COLUMNS": "200",
            "LOGNAME": "ana",
            "USER": "ana",
        }

    def __call__(self, *args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=self.env, catch_exceptions=False)

    def refused(self, *args: str) -> str:
        """The one line on stderr of a command that must exit 2."""
        done = self(*args)
        assert done.exit_code == 2, f"{args}: exit {done.exit_code}\n{done.stdout}{done.stderr}"
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        return lines[0]


@pytest.fixture
def shell(workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Shell:
    monkeypatch.chdir(tmp_path)  # no pyproject.toml settings but the test's
    return Shell(workspace)


def _ids(workspace: Workspace) -> list[int]:
    from pipetrail.storage.metadata.base import RunQuery

    return sorted(r.id for r in workspace.store.list_runs(RunQuery(limit=None)))


def test_delete_by_id_and_by_rule_with_refusals_then_gc(
    shell: Shell, workspace: Workspace, flow_file: FlowWriter
) -> None:
    flow = load_pipeline_file(flow_file(FLOW))
    runs = [
        pt.run(flow, params, executor="inline", workspace=workspace, tags=tags)
        for params, tags in (({"n": 4}, []), ({"fail": True}, []), ({"n": 5}, ["keep"]))
    ]
    first, failed, kept = (r.id for r in runs)

    dry = shell("runs", "delete", str(first), "--dry-run")
    assert dry.exit_code == 0
    assert dry.stdout.splitlines() == [
        f"would delete cli-ret/{first} (completed)",
        "1 run would be deleted",
    ]
    assert _ids(workspace) == [first, failed, kept]
    gone = shell("runs", "delete", f"cli-ret/{first}", "--json")
    assert gone.exit_code == 0, gone.stderr
    assert json.loads(gone.stdout)["deleted"][0]["pathspec"] == f"cli-ret/{first}"
    refused = shell("runs", "delete", str(kept))
    assert refused.exit_code == 1
    assert refused.stdout.startswith(
        f"refused cli-ret/{kept}: run cli-ret/{kept} is tagged 'keep'; to delete it, remove "
        f"the tag first: pipetrail runs tag {kept} --remove keep"
    )
    assert _ids(workspace) == [failed, kept]
    [event] = workspace.store.governance_events(action="run_deleted")
    assert (event.run_id, event.actor) == (first, "ana")

    assert shell.refused("runs", "delete", "777") == "error: no run with id 777 in the store"
    assert shell.refused("runs", "delete", str(failed), "--older-than", "1d") == (
        "error: runs delete: give RUN ids or --older-than AGE with its filters, not both"
    )
    assert shell.refused("runs", "delete", "--status", "failed") == (
        "error: runs delete: --status, --pipeline and --keep-last go with --older-than"
    )
    assert "cannot read 'old' as a duration" in shell.refused(
        "runs", "delete", "--older-than", "old"
    )
    time.sleep(1.1)
    rule = ("runs", "delete", "--older-than", "1s", "--status", "failed")
    assert shell.refused(*rule) == (
        "error: runs delete: 1 runs match (older than 1s, status failed); add --yes to delete "
        "them, or --dry-run to list them"
    )
    assert _ids(workspace) == [failed, kept], "nothing was deleted unasked"
    deleted = shell(*rule, "--yes")
    assert deleted.exit_code == 0, deleted.stderr
    assert f"deleted cli-ret/{failed} (failed)" in deleted.stdout
    assert _ids(workspace) == [kept]

    would = json.loads(shell("gc", "--dry-run", "--grace", "0s", "--json").stdout)
    assert would["dry_run"] and would["objects"] >= 1 and would["bytes"] > 0
    done = shell("gc", "--grace", "0s")
    assert done.exit_code == 0, done.stderr
    assert done.stdout.startswith(f"removed {would['objects']} unreferenced object")
    assert "cannot read 'later' as a duration" in shell.refused("gc", "--grace", "later")
