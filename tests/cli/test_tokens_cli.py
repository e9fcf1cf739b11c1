"""``pipetrail tokens`` and the acting user of ``runs`` commands, for real: ``python -m
pipetrail.cli`` in subprocesses on a store of their own."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from pipetrail.config import Settings
from pipetrail.governance.identity import hash_token
from pipetrail.storage.metadata.sql.tables import api_token
from pipetrail.workspace import Workspace
from tests.e2e.test_control_cli import Cli

FLOW = """import pipetrail as pt

@pt.step
def load(rows: int = 3):
    return list(range(rows))

pipeline = pt.Pipeline("toy", [load])
"""


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    shell = Cli(tmp_path)
    shell.env.pop("PIPETRAIL_TOKEN", None)
    (tmp_path / "flow.py").write_text(FLOW)
    try:
        yield shell
    finally:
        shell.cleanup()


def run(cli: Cli, *args: str, token: str | None = None) -> tuple[int, str, str]:
    cli.env.pop("PIPETRAIL_TOKEN", None)
    if token is not None:
        cli.env["PIPETRAIL_TOKEN"] = token
    done = cli(*args)
    cli.env.pop("PIPETRAIL_TOKEN", None)
    return done.returncode, done.stdout, done.stderr


def ok(cli: Cli, *args: str, token: str | None = None) -> str:
    code, out, err = run(cli, *args, token=token)
    assert code == 0, f"{args}: exit {code}\n{out}\n{err}"
    return out


def refused(cli: Cli, *args: str, token: str | None = None) -> str:
    """The command's one line on stderr; it must exit 2."""
    code, out, err = run(cli, *args, token=token)
    assert code == 2, f"{args}: exit {code}\n{out}\n{err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def listed(cli: Cli) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(ok(cli, "tokens", "list", "--json"))
    return rows


def test_create_list_revoke_and_who_may(cli: Cli) -> None:
    assert ok(cli, "tokens", "list").strip() == "no tokens"
    # The first token needs no token; it is printed once, alone on stdout.
    code, out, err = run(cli, "tokens", "create", "root", "--role", "admin")
    assert code == 0, err
    root = out.strip()
    assert len(root) >= 40 and "\n" not in root and "shown only now" in err
    ws = Workspace(Settings.for_home(cli.home))
    try:
        with ws.store.engine.connect() as conn:
            hashes = conn.execute(select(api_token.c.token_hash)).scalars().all()
    finally:
        ws.close()
    assert hashes == [hash_token(root)]

    line = refused(cli, "tokens", "create", "bob", "--role", "viewer")
    assert "needs a token with the admin role" in line
    made = json.loads(ok(cli, "tokens", "create", "ed", "--role", "editor", "--json", token=root))
    editor = made["token"]
    assert made["name"] == "ed" and made["created_by"] == "root"
    line = refused(cli, "tokens", "create", "x", "--role", "viewer", token=editor)
    assert "needs the admin role; token 'ed'" in line
    assert "not a token of this store" in refused(
        cli, "tokens", "create", "x", "--role", "viewer", token="guess"
    )
    # Bad input: one line, exit 2, nothing written.
    assert "exists already" in refused(
        cli, "tokens", "create", "ed", "--role", "viewer", token=root
    )
    refused(cli, "tokens", "create", "y", "--role", "owner", token=root)
    assert [t["name"] for t in listed(cli)] == ["root", "ed"]

    table = ok(cli, "tokens", "list")
    assert "root" in table and "editor" in table and root not in table and editor not in table
    assert all(root not in json.dumps(t) for t in listed(cli))

    assert "admin role" in refused(cli, "tokens", "revoke", "ed", token=editor)
    assert "no token named 'zed'" in refused(cli, "tokens", "revoke", "zed", token=root)
    assert "last active admin" in refused(cli, "tokens", "revoke", "root", token=root)
    assert "revoked" in ok(cli, "tokens", "revoke", "ed", token=root)
    rows = {t["name"]: t for t in listed(cli)}
    assert rows["ed"]["active"] is False and rows["ed"]["revoked_at"] is not None


def test_runs_commands_act_as_the_token_owner(cli: Cli) -> None:
    ok(cli, "run", "flow.py", "-q")
    out = ok(cli, "tokens", "create", "erin", "--role", "editor")
    erin = out.strip()
    ok(cli, "runs", "tag", "1", "--add", "reviewed", token=erin)
    ok(cli, "runs", "retry", "1", "-q", "--executor", "inline", token=erin)
    shown = json.loads(ok(cli, "runs", "show", "1", "--json"))
    tagged = [e for e in shown["events"] if e["kind"] == "tags"]
    assert [(e["actor"], e["message"]) for e in tagged] == [("erin", "+reviewed")]
    assert "erin" in ok(cli, "runs", "show", "1")
    retried = json.loads(ok(cli, "runs", "show", "2", "--json"))
    assert "user:erin" in retried["system_tags"]
    # A token that is not the store's is refused, not silently the local user.
    assert "not a token of this store" in refused(
        cli, "runs", "tag", "1", "--add", "x", token="guess"
    )
    # Protecting a run from deletion, and lifting that, are governance events by the owner.
    ok(cli, "runs", "tag", "1", "--add", "keep", token=erin)
    ok(cli, "runs", "tag", "1", "--remove", "keep", token=erin)
    ws = Workspace(Settings.for_home(cli.home))
    try:
        events = ws.store.governance_events(run_id=1)
    finally:
        ws.close()
    kept = [(e.action, e.actor) for e in events if e.action.startswith("run_")]
    assert kept == [("run_kept", "erin"), ("run_unkept", "erin")]


def _get(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_the_server_wants_named_tokens_off_loopback(cli: Cli) -> None:
    admin = ok(cli, "tokens", "create", "ada", "--role", "admin").strip()
    viewer = ok(cli, "tokens", "create", "vic", "--role", "viewer", token=admin).strip()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["ui", "--host", "0.0.0.0", "--port", str(port), "--no-scheduler"]
    with subprocess.Popen(
        [sys.executable, "-m", "pipetrail.cli", *args],
        cwd=cli.cwd,
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as server:
        try:
            assert server.stdout is not None
            lines = [server.stdout.readline() for _ in range(4)]
            assert lines[3].strip() == "access: named tokens (2 active), each with its role", lines
            base = f"http://127.0.0.1:{port}/api"
            deadline = time.monotonic() + 30
            while True:  # the lines are printed before uvicorn listens
                try:
                    status = _get(f"{base}/pipelines", None)
                    break
                except urllib.error.URLError:
                    assert time.monotonic() < deadline, "the server did not start"
                    time.sleep(0.1)
            assert status == 401
            assert _get(f"{base}/pipelines", viewer) == 200
            assert _get(f"{base}/tokens", viewer) == 403
            assert _get(f"{base}/tokens", admin) == 200
            ok(cli, "tokens", "revoke", "vic", token=admin)
            assert _get(f"{base}/pipelines", viewer) == 401
        finally:
            server.terminate()
            server.wait(30)
