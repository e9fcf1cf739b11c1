"""The ``pipetrail`` command as a user types it: exit codes, messages, and what lands in the store."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FlowWriter

FLOW = """
@pt.step
def load(n: int = 3):
    print("rows:", n)
    return list(range(n))

@pt.step
def train(load, lr: float = 0.1, epochs: int = 3):
    for epoch in range(epochs):
        pt.log_metric("loss", 1.0 / (epoch + 1), step=epoch)
    return sum(load) * lr

pipeline = pt.Pipeline("cli_flow", [load, train])
"""

BROKEN = """
@pt.step
def load():
    return 1

@pt.step
def train(load):
    raise RuntimeError("model diverged")

pipeline = pt.Pipeline("broken", [load, train])
"""


def pipetrail(
    *args: str, home: Path, cwd: Path, db: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIPETRAIL_HOME": str(home), "COLUMNS": "200"}
    env.pop("PIPETRAIL_DB", None)
    if db:
        env["PIPETRAIL_DB"] = db
    return subprocess.run(
        [sys.executable, "-m", "pipetrail.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_url")
    from pipetrail.storage.metadata.sql.store import SqlMetadataStore

    store = SqlMetadataStore(url)
    store.delete_everything()
    store.close()
    return url


def test_run_show_list_logs(flow_file: FlowWriter, tmp_path: Path, db: str | None) -> None:
    home = tmp_path / "home"
    file = flow_file(FLOW, "flow")
    done = pipetrail(
        "run", f"{file}:cli_flow", "-p", "lr=0.5", "-p", "epochs=4",
        "--tag", "phase:experiment", "--var", "env=dev", home=home, cwd=tmp_path, db=db,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    assert "cli_flow/" in done.stdout and "completed" in done.stdout
    assert "pipetrail runs show cli_flow/" in done.stdout
    run_id = re.search(r"cli_flow/(\d+) completed", done.stdout).group(1)  # type: ignore[union-attr]

    shown = pipetrail("runs", "show", run_id, "--json", home=home, cwd=tmp_path, db=db)
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["status"] == "completed"
    assert record["params"] == {"n": 3, "lr": 0.5, "epochs": 4}
    assert record["param_types"] == {"n": "int", "lr": "float", "epochs": "int"}
    assert record["variables"] == {"env": "dev"}
    assert record["user_tags"] == ["phase:experiment"]
    assert record["trigger"]["kind"] == "cli"
    assert record["metrics"] == {"loss": 0.25}
    assert [s["name"] for s in record["steps"]] == ["load", "train"]
    load, train = record["steps"]
    assert (
        load["started_at"] and load["finished_at"] and load["finished_at"] <= train["finished_at"]
    )
    [produced] = load["tasks"][0]["outputs"]
    [consumed] = train["tasks"][0]["inputs"]
    assert consumed["hash"] == produced["hash"] and "key" not in produced
    assert consumed["producer_task_id"] == load["tasks"][0]["id"]
    assert record["code_files"] == ["flow.py"]
    assert record["environment"]["packages"]["click"]

    text = pipetrail("runs", "show", f"cli_flow/{run_id}", home=home, cwd=tmp_path, db=db)
    assert text.returncode == 0 and "phase:experiment" in text.stdout and "loss" in text.stdout

    listed = pipetrail(
        "runs", "list", "--json", "--status", "completed", home=home, cwd=tmp_path, db=db
    )
    assert [r["pathspec"] for r in json.loads(listed.stdout)] == [f"cli_flow/{run_id}"]
    none = pipetrail("runs", "list", "--json", "--tag", "nope", home=home, cwd=tmp_path, db=db)
    assert json.loads(none.stdout) == []

    logs = pipetrail("logs", run_id, "load", home=home, cwd=tmp_path, db=db)
    assert logs.returncode == 0 and "rows: 3" in logs.stdout


def test_failed_run_exits_1_and_explains(flow_file: FlowWriter, tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = pipetrail("run", str(flow_file(BROKEN)), home=home, cwd=tmp_path)
    assert done.returncode == 1
    assert "step 'train' failed" in done.stdout
    assert "RuntimeError: model diverged" in done.stdout
    assert "pipetrail logs broken/1 train" in done.stdout
    # The user's frame is shown, pipetrail's own are not.
    assert 'raise RuntimeError("model diverged")' in done.stdout
    assert "pipetrail/runtime" not in done.stdout


def test_a_run_into_a_pipe_prints_each_step_and_quiet_stays_quiet(
    flow_file: FlowWriter, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    file = str(flow_file(BROKEN))
    done = pipetrail("run", file, home=home, cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0] == "broken/1 started: 2 step(s)"
    assert re.fullmatch(r"broken/1 load: completed in \S+ m?s \(attempt 0\)", lines[1]), lines
    assert re.fullmatch(r"broken/1 train: failed in \S+ m?s \(attempt 0\)", lines[2]), lines
    assert lines[3] == "broken/1 failed: steps 1 completed, 1 failed"
    assert lines[4].startswith("broken/1 failed in ")

    quiet = pipetrail("run", file, "--quiet", home=home, cwd=tmp_path)
    assert quiet.returncode == 1
    assert quiet.stdout.startswith("broken/2 failed in "), quiet.stdout
    assert "broken/2 load:" not in quiet.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.py"], "no such file: 'missing.py'"),
        (["run", "{flow}:nope"], "no pipeline 'nope'"),
        (["run", "{flow}", "-p", "lr"], "-p/--param expects NAME=VALUE, got 'lr'"),
        (
            ["run", "{flow}", "-p", "lr=fast"],
            "parameter 'lr' of step 'train' expects a finite number, got 'fast'",
        ),
        (["run", "{flow}", "-p", "learning_rate=1"], "unknown parameter 'learning_rate'"),
        (["run", "{flow}", "--var", "oops"], "--var expects NAME=VALUE"),
        (["run", "{bad_def}"], "argument 'trian' of step 'evaluate' names no step or output"),
        (["run", "{flow}", "--timeout", "nan"], "--timeout: 'nan' is not a usable duration"),
        (["run", "{flow}", "--timeout", "inf"], "--timeout: 'inf' is not a usable duration"),
        (["run", "{flow}", "--timeout", "1e400m"], "--timeout: '1e400m' is not a usable duration"),
        (["run", "{flow}", "--timeout", "0"], "--timeout: must be positive, got '0'"),
        (["run", "{exits}"], "exits.py' called sys.exit(3) at line 3"),
        (["runs", "list", "--limit", str(10**20)], "Invalid value for '--limit'"),
        (["runs", "list", "--limit", "10^20"], "Invalid value for '--limit'"),
        (["runs", "list", "--since", "99999999999d"], "'99999999999d' is not a usable duration"),
        (["runs", "list", "--since", "yesterday"], "or give an ISO date such as 2026-01-31"),
        (["runs", "list", "--since", "0001-01-01"], "--since: time '0001-01-01T00:00:00+00:00'"),
        (["runs", "list", "--nope"], "No such option '--nope'"),
        (["runs", "show", "PIPE/999999"], "no run 'PIPE/999999': no runs recorded yet"),
        (["logs", "PIPE/999999"], "no run 'PIPE/999999': no runs recorded yet"),
        (["runs", "retry", "PIPE/999999"], "no run 'PIPE/999999': no runs recorded yet"),
        (["lineage", "PIPE/999999"], "no run or artifact 'PIPE/999999': no runs recorded yet"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    flow_file: FlowWriter, tmp_path: Path, args: list[str], message: str
) -> None:
    flow = flow_file(FLOW)
    bad_def = flow_file(
        "@pt.step\ndef train():\n    return 1\n\n@pt.step\ndef evaluate(trian):\n    return 1\n\n"
        "pipeline = pt.Pipeline('bad', [train, evaluate])\n"
    )
    home = tmp_path / "home"
    exits = flow_file("import sys\nsys.exit(3)\n", "exits")
    argv = [a.format(flow=flow, bad_def=bad_def, exits=exits) for a in args]
    done = pipetrail(*argv, home=home, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert not home.exists(), "bad input must not create or touch the store"


def test_reading_commands_never_create_a_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    listed = pipetrail("runs", "list", home=home, cwd=tmp_path)
    assert listed.returncode == 0 and "No runs yet" in listed.stdout
    shown = pipetrail("runs", "show", "3", home=home, cwd=tmp_path)
    assert shown.returncode == 2 and "no runs recorded yet" in shown.stderr
    assert not home.exists()


def test_unknown_run_and_step_are_clear_errors(flow_file: FlowWriter, tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert pipetrail("run", str(flow_file(FLOW)), "-q", home=home, cwd=tmp_path).returncode == 0
    cases = [
        (["runs", "show", "99"], "no run with id 99"),
        (["runs", "show", "other/1"], "run 1 is cli_flow/1, not a run of 'other'"),
        (["runs", "show", "cli_flow/1/nostep"], "has no step 'nostep'; steps: load, train"),
        (["runs", "show", "99999999999999999999999"], "invalid run address"),
        (["logs", "cli_flow/1/nostep"], "has no step 'nostep'"),
        (["runs", "cancel", "1"], "has already ended (completed); nothing to cancel"),
    ]
    for args, message in cases:
        done = pipetrail(*args, home=home, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    logs = pipetrail("logs", "cli_flow/1/load", home=home, cwd=tmp_path)
    assert logs.returncode == 0 and "rows: 3" in logs.stdout


def test_help_lists_commands(tmp_path: Path) -> None:
    done = pipetrail("--help", home=tmp_path / "home", cwd=tmp_path)
    assert done.returncode == 0
    for command in ("run", "runs", "logs"):
        assert command in done.stdout


def test_diff_lineage_and_search_from_the_shell(flow_file: FlowWriter, tmp_path: Path) -> None:
    home = tmp_path / "home"
    file = str(flow_file(FLOW, "flow"))
    for lr in ("0.1", "0.5"):
        assert (
            pipetrail("run", file, "-q", "-p", f"lr={lr}", home=home, cwd=tmp_path).returncode == 0
        )
    diff = pipetrail("runs", "diff", "1", "2", "--json", home=home, cwd=tmp_path)
    assert diff.returncode == 0, diff.stderr
    params = {p["name"]: p for p in json.loads(diff.stdout)["params"]}
    assert params["lr"]["differs"] and params["lr"]["values"] == [0.1, 0.5]
    text = pipetrail("runs", "diff", "1", "2", home=home, cwd=tmp_path)
    assert "Parameters" in text.stdout and "lr" in text.stdout
    lonely = pipetrail("runs", "diff", "1", home=home, cwd=tmp_path)
    assert lonely.returncode == 2 and "at least two runs" in lonely.stderr
    for fmt, marker in (
        ("tree", "cli_flow/2/train/0"),
        ("mermaid", "flowchart"),
        ("dot", "digraph"),
    ):
        shown = pipetrail("lineage", "cli_flow/2", "--format", fmt, home=home, cwd=tmp_path)
        assert shown.returncode == 0 and marker in shown.stdout, (fmt, shown.stdout, shown.stderr)
    graph = json.loads(
        pipetrail("lineage", "2", "--format", "json", home=home, cwd=tmp_path).stdout
    )
    assert graph["direction"] == "up" and graph["tasks"]
    found = pipetrail(
        "runs", "list", "--json", "--filter", "params.lr > 0.2", home=home, cwd=tmp_path
    )
    assert found.returncode == 0, found.stderr
    assert [r["pathspec"] for r in json.loads(found.stdout)] == ["cli_flow/2"]
    bad = pipetrail("runs", "list", "--filter", "params.lr >", home=home, cwd=tmp_path)
    assert bad.returncode == 2 and "filter" in bad.stderr and "Traceback" not in bad.stderr


def _request(url: str, body: dict[str, object] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_ui_serves_pipeline_files_from_its_project_dir(
    flow_file: FlowWriter, tmp_path: Path
) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "flow.py").write_text(flow_file(FLOW).read_text())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PIPETRAIL_HOME": str(tmp_path / "home")}
    env.pop("PIPETRAIL_DB", None)
    with subprocess.Popen(
        [sys.executable, "-m", "pipetrail.cli", "ui", "--port", str(port), "--project-dir",
         "../project"],
        cwd=elsewhere, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ) as server:  # fmt: skip
        try:
            assert server.stdout is not None
            assert "pipetrail dashboard:" in server.stdout.readline()
            assert server.stdout.readline().strip() == f"pipeline files from: {project.resolve()}"
            base = f"http://127.0.0.1:{port}/api"
            for _ in range(300):  # the address is printed before uvicorn listens
                try:
                    _request(f"{base}/pipelines")
                    break
                except urllib.error.URLError:
                    time.sleep(0.1)
            # A relative file is taken from the project directory, not the server's working one.
            status, body = _request(
                f"{base}/pipelines/cli_flow/runs", {"file": "flow.py", "executor": "inline"}
            )
            assert status == 201, body
            run_id = body["pipeline_run"]["id"]
            for _ in range(600):
                status, body = _request(f"{base}/pipeline_runs/{run_id}")
                if body["pipeline_run"]["status"] in ("completed", "failed"):
                    break
                time.sleep(0.1)
            assert body["pipeline_run"]["status"] == "completed", body
        finally:
            server.terminate()
            server.wait(30)


def test_ui_refuses_a_project_dir_that_is_not_a_folder(tmp_path: Path) -> None:
    done = pipetrail("ui", "--project-dir", "missing", home=tmp_path / "home", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: Invalid value for '--project-dir': Directory 'missing' does not exist. "
        "(see: pipetrail ui --help)"
    ]


def test_since_takes_a_duration_or_a_date(flow_file: FlowWriter, tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert pipetrail("run", str(flow_file(FLOW)), "-q", home=home, cwd=tmp_path).returncode == 0
    for since, expected in (("1h", ["cli_flow/1"]), ("1w", ["cli_flow/1"]), ("2100-01-01", [])):
        listed = pipetrail("runs", "list", "--json", "--since", since, home=home, cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert [r["pathspec"] for r in json.loads(listed.stdout)] == expected, since
