"""The Python API of triggers (pt.create_trigger, pt.Trigger, pt.triggers, pt.apply_triggers)
against a real SQLite workspace of the test's own."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

import pipetrail as pt
from pipetrail.errors import NotFoundError, UsageError
from pipetrail.workspace import Workspace
from tests.cli.test_triggers_cli import FLOW


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    path = tmp_path / "flow.py"
    path.write_text(FLOW)
    return path


def test_create_read_pause_resume_delete(sqlite_workspace: Workspace, flow: Path) -> None:
    ws = sqlite_workspace
    nightly = pt.create_trigger(
        "nightly",
        f"{flow}:toy",
        cron="0 2 * * *",
        timezone="Europe/Paris",
        params={"rows": 5},
        sla="30m",
        workspace=ws,
    )
    assert nightly.name == "nightly"
    assert nightly.kind == "cron"
    assert "Europe/Paris" in nightly.schedule
    assert nightly.paused is False
    assert nightly.definition["params"] == {"rows": 5}
    next_at = nightly.next_at
    assert next_at is not None and next_at > datetime.now(UTC)
    assert nightly.upcoming(3)[0] == next_at
    assert len(nightly.upcoming(3)) == 3
    assert pt.Trigger("nightly", workspace=ws) == nightly
    assert [t.name for t in pt.triggers(workspace=ws)] == ["nightly"]

    assert nightly.pause().paused is True
    assert nightly.next_at is None
    assert nightly.resume().paused is False
    assert nightly.update(sla="1h").definition["sla"] == "1h"

    nightly.delete()
    assert pt.triggers(workspace=ws) == []
    with pytest.raises(NotFoundError):
        pt.Trigger("nightly", workspace=ws)


def test_bad_definitions_are_refused_and_nothing_stored(
    sqlite_workspace: Workspace, flow: Path
) -> None:
    ws = sqlite_workspace
    with pytest.raises(UsageError, match="0 2 \\* \\*"):
        pt.create_trigger("bad", str(flow), cron="0 2 * *", workspace=ws)
    with pytest.raises(UsageError, match="Mars/Olympus"):
        pt.create_trigger("bad", str(flow), cron="0 2 * * *", timezone="Mars/Olympus", workspace=ws)
    pt.create_trigger("hourly", str(flow), every="1h", workspace=ws)
    with pytest.raises(UsageError, match="hourly"):
        pt.create_trigger("hourly", str(flow), every="2h", workspace=ws)
    assert [t.name for t in pt.triggers(workspace=ws)] == ["hourly"]


def test_fire_returns_a_completed_manual_run(sqlite_workspace: Workspace, flow: Path) -> None:
    ws = sqlite_workspace
    trigger = pt.create_trigger("nightly", str(flow), cron="0 2 * * *", workspace=ws)
    run = trigger.fire({"rows": 4}, executor="inline")
    assert run.successful
    assert run.trigger.kind == "manual"
    assert run.trigger.name == "nightly"
    assert run.trigger.upstream is None
    scheduled = run.trigger.scheduled_at
    assert scheduled is not None
    assert run.variables["scheduled_at"] == scheduled.isoformat()
    assert [r.id for r in trigger.runs] == [run.id]
    assert run.data.total == sum(range(4))


def test_apply_triggers_is_idempotent(sqlite_workspace: Workspace, flow: Path) -> None:
    ws = sqlite_workspace
    yaml = flow.parent / "triggers.yaml"
    yaml.write_text('triggers:\n  - name: n\n    pipeline: flow.py\n    cron: "0 2 * * *"\n')
    pt.create_trigger("extra", str(flow), every="1h", workspace=ws)
    first = pt.apply_triggers(yaml, workspace=ws)
    assert list(first.created) == ["n"]
    assert list(first.missing) == ["extra"]
    second = pt.apply_triggers(yaml, workspace=ws)
    assert list(second.unchanged) == ["n"] and not second.created and not second.updated
    pt.apply_triggers(yaml, prune=True, dry_run=True, workspace=ws)
    assert sorted(t.name for t in pt.triggers(workspace=ws)) == ["extra", "n"]
    pruned = pt.apply_triggers(yaml, prune=True, workspace=ws)
    assert list(pruned.deleted) == ["extra"]
    assert [t.name for t in pt.triggers(workspace=ws)] == ["n"]
