"""``pipetrail triggers`` for real: ``python -m pipetrail.cli`` in subprocesses on a store of its own.

Each test starts from a fresh ``PIPETRAIL_HOME`` (and one from an emptied PostgreSQL database),
types the commands a person would, and reads the results back through ``--json``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_control_cli import Cli

#: A two-step pipeline named ``toy`` with one parameter; it finishes at once.
FLOW = """import pipetrail as pt

@pt.step
def load(rows: int = 10):
    return list(range(rows))

@pt.step
def total(load):
    return sum(load)

pipeline = pt.Pipeline("toy", [load, total])
"""


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    shell = Cli(tmp_path)
    (tmp_path / "flow.py").write_text(FLOW)
    try:
        yield shell
    finally:
        shell.cleanup()


def ok(cli: Cli, *args: str) -> str:
    done = cli(*args)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def as_json(cli: Cli, *args: str) -> Any:
    return json.loads(ok(cli, *args, "--json"))


def names(cli: Cli) -> list[str]:
    return [t["name"] for t in as_json(cli, "triggers", "list")]


def refused(cli: Cli, *args: str) -> str:
    """The command's one line on stderr; it must exit 2."""
    done = cli(*args)
    assert done.returncode == 2, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def create_and_read_back(cli: Cli) -> None:
    made = as_json(
        cli,
        *("triggers", "create", "nightly", "flow.py:toy", "--cron", "0 2 * * *"),
        *("--timezone", "Europe/Paris", "-p", "rows=5", "--sla", "30m", "--tag", "nightly"),
    )
    assert made["name"] == "nightly"
    assert made["kind"] == "cron"
    ok(cli, "triggers", "create", "often", "flow.py", "--every", "10m", "--overlap", "skip")

    listed = {t["name"]: t for t in as_json(cli, "triggers", "list")}
    assert sorted(listed) == ["nightly", "often"]
    nightly, often = listed["nightly"], listed["often"]
    assert nightly["kind"] == "cron"
    assert nightly["pipeline"] == "toy"
    assert "Europe/Paris" in nightly["schedule"]
    assert nightly["paused"] is False
    assert nightly["last_run"] is None
    # 02:00 in Paris is 01:00 UTC in winter and 00:00 UTC in summer.
    next_at = datetime.fromisoformat(nightly["next_at"])
    assert next_at > datetime.now(UTC)
    assert (next_at.hour, next_at.minute) in ((1, 0), (0, 0))
    assert often["kind"] == "interval"
    assert often["definition"]["every"] == "10m"
    assert often["definition"]["overlap"] == "skip"

    shown = as_json(cli, "triggers", "show", "nightly")
    definition = shown["definition"]
    assert definition["cron"] == "0 2 * * *"
    assert definition["timezone"] == "Europe/Paris"
    assert definition["params"] == {"rows": 5}
    assert definition["sla"] == "30m"
    assert definition["tags"] == ["nightly"]
    assert definition["pipeline"].endswith("flow.py:toy")
    upcoming = [datetime.fromisoformat(at) for at in shown["upcoming"]]
    assert upcoming[0] == next_at
    assert upcoming == sorted(upcoming)
    assert all(b - a >= timedelta(hours=23) for a, b in itertools.pairwise(upcoming))
    assert shown["ticks"] == []


def test_create_then_list_and_show(cli: Cli) -> None:
    create_and_read_back(cli)


def test_create_list_show_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    from pipetrail.config import Settings
    from pipetrail.workspace import Workspace

    ws = Workspace(Settings.for_home(tmp_path / "pg-home", db_url=pg_url))
    ws.store.delete_everything()
    ws.close()
    shell = Cli(tmp_path)
    shell.env["PIPETRAIL_DB"] = pg_url
    (tmp_path / "flow.py").write_text(FLOW)
    try:
        create_and_read_back(shell)
        # The triggers are in PostgreSQL, not in a SQLite file under the home.
        ws = Workspace(Settings.for_home(tmp_path / "other-home", db_url=pg_url))
        try:
            from pipetrail.scheduling.service import TriggerService

            assert sorted(r.name for r in TriggerService(ws.store).all()) == ["nightly", "often"]
        finally:
            ws.close()
    finally:
        shell.cleanup()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--cron", "0 2 * *"], "'0 2 * *'"),
        (["--cron", "61 * * * *"], "minute '61' is not 0-59"),
        (["--cron", "0 2 * * *", "--timezone", "Mars/Olympus"], "'Mars/Olympus'"),
        (["--every", "0s"], "0s"),
        (["--once-at", "2020-01-01T00:00:00Z"], "2020-01-01"),
        (["--after", "toy"], "'toy'"),
        ([], "cron"),
        (["--cron", "0 2 * * *", "--every", "1h"], "every"),
    ],
    ids=[
        "malformed-cron",
        "cron-out-of-range",
        "unknown-timezone",
        "every-zero",
        "once-at-past",
        "after-own-pipeline",
        "no-kind",
        "two-kinds",
    ],
)
def test_bad_definitions_exit_2_and_write_nothing(cli: Cli, options: list[str], named: str) -> None:
    line = refused(cli, "triggers", "create", "bad", "flow.py", *options)
    assert named in line, line
    assert names(cli) == []


def test_a_taken_name_and_unknown_triggers_are_refused(cli: Cli) -> None:
    ok(cli, "triggers", "create", "hourly", "flow.py", "--every", "1h")
    before = as_json(cli, "triggers", "show", "hourly")

    line = refused(cli, "triggers", "create", "hourly", "flow.py", "--cron", "0 3 * * *")
    assert "'hourly'" in line
    after = as_json(cli, "triggers", "show", "hourly")
    assert after["definition"] == before["definition"]
    assert after["updated_at"] == before["updated_at"]

    for command in ("show", "pause", "resume", "delete", "run"):
        line = refused(cli, "triggers", command, "nope")
        assert "'nope'" in line, (command, line)
    assert names(cli) == ["hourly"]
    assert as_json(cli, "runs", "list") == []


def test_pause_resume_delete(cli: Cli) -> None:
    ok(cli, "triggers", "create", "hourly", "flow.py", "--every", "1h")
    assert as_json(cli, "triggers", "show", "hourly")["paused"] is False

    ok(cli, "triggers", "pause", "hourly")
    paused = as_json(cli, "triggers", "show", "hourly")
    assert paused["paused"] is True
    assert paused["next_at"] is None
    assert [u["trigger"] for u in as_json(cli, "triggers", "upcoming")] == []
    # A paused trigger does not fire by hand either.
    refused(cli, "triggers", "run", "hourly")
    assert as_json(cli, "runs", "list") == []

    ok(cli, "triggers", "resume", "hourly")
    resumed = as_json(cli, "triggers", "show", "hourly")
    assert resumed["paused"] is False
    assert datetime.fromisoformat(resumed["next_at"]) > datetime.now(UTC)
    upcoming = as_json(cli, "triggers", "upcoming", "--limit", "3")
    assert [u["trigger"] for u in upcoming] == ["hourly"] * 3

    ok(cli, "triggers", "delete", "hourly")
    assert names(cli) == []
    refused(cli, "triggers", "show", "hourly")


def test_created_paused_is_paused(cli: Cli) -> None:
    ok(cli, "triggers", "create", "later", "flow.py", "--cron", "0 2 * * *", "--paused")
    assert as_json(cli, "triggers", "show", "later")["paused"] is True


def test_run_fires_once_and_records_the_trigger(cli: Cli) -> None:
    ok(cli, "triggers", "create", "nightly", "flow.py", "--cron", "0 2 * * *", "-p", "rows=4")
    before = datetime.now(UTC)
    done = cli("triggers", "run", "nightly", "-p", "rows=6", "--var", "env=test", "--quiet")
    assert done.returncode == 0, done.stderr
    runs = as_json(cli, "runs", "list")
    assert len(runs) == 1
    record = cli.show(runs[0]["pathspec"] if "pathspec" in runs[0] else f"toy/{runs[0]['id']}")

    assert record["status"] == "completed"
    trigger = record["trigger"]
    assert trigger["kind"] == "manual"
    assert trigger["name"] == "nightly"
    assert trigger["upstream"] is None
    scheduled = datetime.fromisoformat(trigger["scheduled_at"])
    assert scheduled >= before - timedelta(seconds=1)
    assert record["variables"]["scheduled_at"] == trigger["scheduled_at"]
    assert record["variables"]["env"] == "test"
    params = record["params"]
    rows = params["rows"]["value"] if isinstance(params["rows"], dict) else params["rows"]
    assert rows == 6

    # The run is the trigger's: listed under it, and as its last run.
    by_trigger = as_json(cli, "runs", "list", "--trigger", "nightly")
    assert [r["id"] for r in by_trigger] == [runs[0]["id"]]
    shown = as_json(cli, "triggers", "show", "nightly")
    assert shown["last_run"] is not None
    assert len(shown["ticks"]) == 1
    # The trigger's own parameters are unchanged by the one-off -p.
    assert shown["definition"]["params"] == {"rows": 4}


def test_run_json_prints_the_finished_run(cli: Cli) -> None:
    ok(cli, "triggers", "create", "ci", "flow.py", "--api")
    run = as_json(cli, "triggers", "run", "ci")
    assert run["status"] == "completed"
    assert run["trigger"]["name"] == "ci"


TRIGGERS_YAML = """
triggers:
  - name: nightly-train
    pipeline: flow.py:toy
    cron: "0 2 * * *"
    timezone: Europe/Paris
    params: {rows: 50}
    sla: 30m
  - name: report
    pipeline: flow.py
    after: other
    "on": any
"""


def apply(cli: Cli, *options: str) -> dict[str, Any]:
    report: dict[str, Any] = as_json(cli, "triggers", "apply", "triggers.yaml", *options)
    return report


def test_apply_twice_changes_nothing_and_prune_deletes(cli: Cli) -> None:
    (cli.cwd / "triggers.yaml").write_text(TRIGGERS_YAML)
    ok(cli, "triggers", "create", "handmade", "flow.py", "--every", "1h")

    first = apply(cli)
    assert sorted(first["created"]) == ["nightly-train", "report"]
    assert first["missing"] == ["handmade"]
    assert first["deleted"] == []
    assert sorted(names(cli)) == ["handmade", "nightly-train", "report"]
    stored = as_json(cli, "triggers", "show", "nightly-train")

    second = apply(cli)
    assert second["created"] == [] and second["updated"] == []
    assert sorted(second["unchanged"]) == ["nightly-train", "report"]
    assert as_json(cli, "triggers", "show", "nightly-train")["updated_at"] == stored["updated_at"]

    (cli.cwd / "triggers.yaml").write_text(TRIGGERS_YAML.replace("sla: 30m", "sla: 1h"))
    dry = apply(cli, "--prune", "--dry-run")
    assert dry["updated"] == ["nightly-train"]
    assert dry["deleted"] == ["handmade"] or dry["missing"] == ["handmade"]
    assert sorted(names(cli)) == ["handmade", "nightly-train", "report"]
    assert as_json(cli, "triggers", "show", "nightly-train")["definition"]["sla"] == "30m"

    pruned = apply(cli, "--prune")
    assert pruned["updated"] == ["nightly-train"]
    assert pruned["deleted"] == ["handmade"]
    assert sorted(names(cli)) == ["nightly-train", "report"]
    assert as_json(cli, "triggers", "show", "nightly-train")["definition"]["sla"] == "1h"


def test_apply_reads_an_unquoted_on_key(cli: Cli) -> None:
    (cli.cwd / "triggers.yaml").write_text(
        "triggers:\n  - name: r\n    pipeline: flow.py\n    after: other\n    on: any\n"
    )
    assert apply(cli)["created"] == ["r"]


def test_apply_twice_leaves_an_interval_without_start_unchanged(cli: Cli) -> None:
    (cli.cwd / "triggers.yaml").write_text(
        "triggers:\n  - name: often\n    pipeline: flow.py\n    every: 10m\n"
    )
    assert apply(cli)["created"] == ["often"]
    assert apply(cli)["unchanged"] == ["often"]


def test_apply_refuses_a_bad_file_and_writes_nothing(cli: Cli) -> None:
    (cli.cwd / "triggers.yaml").write_text(
        TRIGGERS_YAML + "  - name: broken\n    pipeline: flow.py\n    cron: '0 2 * *'\n"
    )
    line = refused(cli, "triggers", "apply", "triggers.yaml")
    assert "0 2 * *" in line
    assert names(cli) == []


def test_backfill_queues_one_tick_per_missing_slot(cli: Cli) -> None:
    ok(cli, "triggers", "create", "nightly", "flow.py", "--cron", "0 2 * * *")
    window = ("--start", "2026-01-01T00:00:00Z", "--end", "2026-01-04T00:00:00Z")

    first = as_json(cli, "triggers", "backfill", "nightly", *window)
    assert first["trigger"] == "nightly"
    assert first["scheduler_running"] is False
    queued = sorted(datetime.fromisoformat(at) for at in first["queued"])
    assert queued == [datetime(2026, 1, day, 2, tzinfo=UTC) for day in (1, 2, 3)]

    ticks = as_json(cli, "triggers", "show", "nightly")["ticks"]
    assert sorted(datetime.fromisoformat(t["scheduled_at"]) for t in ticks) == queued
    assert all(t["run"] is None for t in ticks)

    # The same window again: every slot has its tick already.
    assert as_json(cli, "triggers", "backfill", "nightly", *window)["queued"] == []
    assert len(as_json(cli, "triggers", "show", "nightly")["ticks"]) == 3


def test_show_prints_queued_ticks(cli: Cli) -> None:
    ok(cli, "triggers", "create", "nightly", "flow.py", "--cron", "0 2 * * *")
    ok(
        cli,
        *("triggers", "backfill", "nightly"),
        *("--start", "2026-01-01T00:00:00Z", "--end", "2026-01-02T00:00:00Z"),
    )
    assert "2026-01-01" in ok(cli, "triggers", "show", "nightly")


def test_backfill_refuses_a_bad_window(cli: Cli) -> None:
    ok(cli, "triggers", "create", "nightly", "flow.py", "--cron", "0 2 * * *")
    line = refused(
        cli, "triggers", "backfill", "nightly", "--start", "yesterday", "--end", "2026-01-04"
    )
    assert "yesterday" in line
    refused(
        cli,
        *("triggers", "backfill", "nightly"),
        *("--start", "2026-01-04T00:00:00Z", "--end", "2026-01-01T00:00:00Z"),
    )
    assert as_json(cli, "triggers", "show", "nightly")["ticks"] == []
