"""``pipetrail models`` over a real store (SQLite and PostgreSQL): exit codes, --json, refusals.

The commands run in this process (click's runner) with the environment a terminal would have:
``PIPETRAIL_HOME``/``PIPETRAIL_DB`` name the test's store, ``LOGNAME`` the local user, and
``PIPETRAIL_TOKEN`` a named token where a test makes some.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import pipetrail as pt
from pipetrail.cli.main import cli
from pipetrail.client import Run
from pipetrail.governance.identity import hash_token
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

FLOW = """
@pt.step
def train(lr: float = 0.1):
    pt.log_metric("auc", 0.8 + lr)
    pt.log_artifact({"weights": [lr]}, "model")
    return lr

@pt.step
def check(train, fail: bool = False):
    if fail:
        raise ValueError("check failed")
    pt.log_artifact({"checked": train}, "model")
    return train

pipeline = pt.Pipeline("churn", [train, check])
"""


class Shell:
    """``pipetrail`` typed by a user (``LOGNAME``) against the test's store."""

    def __init__(self, workspace: Workspace, folder: Path) -> None:
        self.env = {"PIPETRAIL_HOME": str(workspace.settings.home), "COLUMNS": "200"}
        self.env["PIPETRAIL_DB"] = workspace.settings.db_url
        self.folder = folder

    def __call__(self, *args: str, user: str = "ana", token: str | None = None) -> Result:
        env = {**self.env, "LOGNAME": user, "USER": user, "PIPETRAIL_TOKEN": token}
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    def ok(self, *args: str, **kwargs: Any) -> str:
        done = self(*args, **kwargs)
        assert done.exit_code == 0, f"{args}: exit {done.exit_code}\n{done.output}{done.stderr}"
        return done.stdout

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.ok(*args, "--json", **kwargs))

    def refused(self, *args: str, **kwargs: Any) -> str:
        """The one line on stderr of a command that must exit 2."""
        done = self(*args, **kwargs)
        assert done.exit_code == 2, f"{args}: exit {done.exit_code}\n{done.stdout}{done.stderr}"
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        return lines[0]


@pytest.fixture
def shell(workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Shell:
    monkeypatch.chdir(tmp_path)  # no pyproject.toml settings but the test's
    return Shell(workspace, tmp_path)


@pytest.fixture
def flow(flow_file: FlowWriter) -> Path:
    return flow_file(FLOW)


def _run(ws: Workspace, flow: Path, **params: object) -> Run:
    run = pt.run(load_pipeline_file(flow), params, executor="inline", workspace=ws)
    assert isinstance(run, Run)
    return run


def test_register_list_versions_and_refusals(
    shell: Shell, workspace: Workspace, flow: Path
) -> None:
    run = _run(workspace, flow)
    assert "output of steps check, train" in shell.refused(
        "models", "register", "churn", run.pathspec
    )
    assert "no run with id 424242" in shell.refused(
        "models", "register", "churn", "424242", "--step", "train"
    )
    assert "no output artifact 'nope'" in shell.refused(
        "models", "register", "churn", str(run.id), "--artifact", "nope"
    )
    assert "invalid model name" in shell.refused("models", "register", "a b", str(run.id))
    assert shell.json("models", "list") == [], "refusals wrote nothing"
    out = shell.ok("models", "register", "churn", run.pathspec, "--step", "train")
    assert out.startswith("Registered churn/1: artifact 'model'") and run.pathspec in out
    two = shell.json(
        "models", "register", "churn", f"{run.pathspec}/check/0", "--description", "checked"
    )
    assert two["version"] == 2 and two["step"] == "check" and two["created_by"] == "ana"
    assert [(m["name"], m["latest_version"]) for m in shell.json("models", "list")] == [
        ("churn", 2)
    ]
    versions = shell.json("models", "versions", "churn")
    assert [v["run"]["pathspec"] for v in versions] == [run.pathspec, run.pathspec]
    assert versions[0]["metrics"] == {"auc": pytest.approx(0.9)}
    table = shell.ok("models", "versions", "churn")
    assert "train.model" in table and "check.model" in table
    assert "no model named 'nope'" in shell.refused("models", "show", "nope")


def test_promotion_with_approval_by_another_user(
    shell: Shell, workspace: Workspace, flow: Path
) -> None:
    run, failed = _run(workspace, flow), _run(workspace, flow, fail=True)
    shell.ok("models", "register", "churn", run.pathspec, "--step", "train")
    shell.ok("models", "register", "churn", failed.pathspec, "--step", "train")
    moved = shell.json("models", "promote", "churn", "1", "--alias", "staging")
    assert moved["moved"] is True and moved["request"] is None
    assert "moves only after 1 approval(s)" in shell.ok(
        "models", "policy", "churn", "--alias", "production", "--approvers", "1"
    )
    out = shell.ok("models", "promote", "churn", "1", "--alias", "production", "--reason", "auc")
    assert out.startswith("Opened request ") and "churn@production → version 1" in out
    rid = out.split()[2].rstrip(":")
    refusal = shell.refused("models", "approve", rid, "--comment", "mine")
    assert f"'ana' requested promotion {rid} and may not approve it" in refusal
    assert "which is failed, not completed" in shell.refused(
        "models", "promote", "churn", "2", "--alias", "production"
    )
    assert [r["id"] for r in shell.json("models", "requests", "--status", "pending")] == [int(rid)]
    approved = shell.json("models", "approve", rid, "--comment", "checked", user="bo")
    assert approved["status"] == "approved" and approved["decisions"][0]["actor"] == "bo"
    assert shell.json("models", "requests", "--status", "pending") == []
    detail = shell.json("models", "show", "churn")
    assert detail["aliases"] == {"production": 1, "staging": 1}
    assert detail["policies"] == {"production": 1}
    history = [(e["alias"], e["actor"], e["request_id"]) for e in detail["alias_history"]]
    assert history == [("staging", "ana", None), ("production", "bo", int(rid))]
    shown = shell.ok("models", "show", "churn")
    assert f"production → 1 (was -) by bo (request {rid}): checked" in shown
    assert pt.load_model("churn@production", workspace=workspace) == {"weights": [0.1]}
    assert "is approved already" in shell.refused("models", "reject", rid, user="cy")
    assert "no alias 'canary'" in shell.refused("models", "unalias", "churn", "--alias", "canary")
    shell.ok("models", "unalias", "churn", "--alias", "staging")
    assert shell.json("models", "show", "churn")["aliases"] == {"production": 1}
    assert "no promotion request 999999" in shell.refused("models", "approve", "999999")


def test_reject_and_withdraw(shell: Shell, workspace: Workspace, flow: Path) -> None:
    run = _run(workspace, flow)
    shell.ok("models", "register", "churn", run.pathspec, "--step", "train")
    shell.ok("models", "policy", "churn", "--alias", "production", "--approvers", "1")
    first = str(
        shell.json("models", "promote", "churn", "1", "--alias", "production")["request"]["id"]
    )
    assert "may not reject it" in shell.refused("models", "reject", first)
    rejected = shell.ok("models", "reject", first, "--comment", "no", user="bo")
    assert rejected.startswith(f"Rejected request {first}")
    again = str(
        shell.json("models", "promote", "churn", "1", "--alias", "production")["request"]["id"]
    )
    assert "only 'ana', who requested it" in shell.refused("models", "withdraw", again, user="bo")
    assert shell.json("models", "withdraw", again)["status"] == "withdrawn"
    statuses = [r["status"] for r in shell.json("models", "requests", "--model", "churn")]
    assert statuses == ["rejected", "withdrawn"]
    assert shell.json("models", "show", "churn")["aliases"] == {}


def test_with_tokens_approving_needs_the_approver_role(
    shell: Shell, workspace: Workspace, flow: Path
) -> None:
    tokens = {}
    for name, role in (("ana", "editor"), ("bo", "approver"), ("ada", "admin")):
        tokens[name] = secrets.token_urlsafe(16)
        workspace.store.create_token(name, role, hash_token(tokens[name]), "setup")  # type: ignore[arg-type]
    run = _run(workspace, flow)
    shell.ok("models", "register", "churn", run.pathspec, "--step", "train", token=tokens["ana"])
    policy = ("models", "policy", "churn", "--alias", "production", "--approvers", "1")
    assert "needs the admin role" in shell.refused(*policy, token=tokens["bo"])
    shell.ok(*policy, token=tokens["ada"])
    request = shell.json(
        "models", "promote", "churn", "1", "--alias", "production", token=tokens["ana"]
    )["request"]
    assert request["requested_by"] == "ana", "the token's user, whoever is logged in"
    rid = str(request["id"])
    assert "needs the approver role" in shell.refused("models", "approve", rid, token=tokens["ana"])
    assert "needs a token with the approver role" in shell.refused("models", "approve", rid)
    assert shell.json("models", "requests", "--status", "pending")[0]["decisions"] == []
    done = shell.json("models", "approve", rid, user="root", token=tokens["bo"])
    assert done["status"] == "approved" and done["decisions"][0]["actor"] == "bo"
    unalias = ("models", "unalias", "churn", "--alias", "production", "--reason", "recall")
    assert "needs the admin role" in shell.refused(*unalias, token=tokens["ana"])
    assert shell.ok(*unalias, token=tokens["ada"]).startswith("Removed churn@production")
    removed = shell.json("models", "show", "churn")["alias_history"][-1]
    assert (removed["action"], removed["actor"], removed["message"]) == (
        "alias_removed",
        "ada",
        "recall",
    )


def test_nothing_recorded_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"PIPETRAIL_HOME": str(tmp_path / "none"), "PIPETRAIL_DB": None}
    listed = CliRunner().invoke(cli, ["models", "list"], env=env)
    assert listed.exit_code == 0 and "No models registered yet" in listed.stdout
    shown = CliRunner().invoke(cli, ["models", "show", "churn"], env=env)
    assert shown.exit_code == 2 and "nothing is registered yet" in shown.stderr
    assert not (tmp_path / "none").exists(), "no store is made by reading"
