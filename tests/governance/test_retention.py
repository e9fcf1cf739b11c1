"""Retention rules (parsed, selected, applied by the scheduler) and garbage collection on a
local folder and on the S3 test server, including under a run that is writing right now."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import pipetrail as pt
from pipetrail.config import Settings, load_settings
from pipetrail.core.status import RunStatus, TaskStatus
from pipetrail.errors import ConfigError, UsageError
from pipetrail.governance.gc import collect_garbage
from pipetrail.governance.retention import (
    RetentionRule,
    apply_rules,
    delete_runs,
    parse_rules,
    retention_job,
    select_runs,
)
from pipetrail.provenance.environment import current_user
from pipetrail.scheduling.launcher import LaunchOrder
from pipetrail.scheduling.scheduler import Scheduler
from pipetrail.storage.artifacts.serializers import load_from_store
from pipetrail.storage.metadata.base import ImportedRun, ImportedTask, NewRun, RunQuery
from pipetrail.workspace import Workspace

NOW = datetime.now(UTC)
GATE: dict[str, Any] = {}


@pt.step
def make(rows: int = 3) -> list[int]:
    return list(range(rows))


@pt.step
def report(make: list[int]) -> int:
    pt.log_artifact({"report": make}, "report")
    gate = GATE.get("gate")
    if gate is not None:
        # Stored in the artifact store, not linked in the metadata store until the task ends.
        GATE["key"] = pt.log_artifact({"in flight": GATE["tag"]}, "inflight").key
        GATE["stored"].set()
        assert gate.wait(30), "the test never opened the gate"
    return len(make)


FLOW = pt.Pipeline("gc-flow", [make, report])
OTHER = pt.Pipeline("gc-other", [make])


# -- rules ---------------------------------------------------------------------------------------


def test_rules_parse_and_say_what_they_select() -> None:
    rules = parse_rules(
        [
            {"older_than": "90d"},
            {"pipeline": "etl", "older_than": "12h", "status": ["failed", "cancelled"]},
            {"older_than": 3600, "status": "failed", "keep_last": 5},
        ],
        "PIPETRAIL_RETENTION",
    )
    assert rules == (
        RetentionRule(90 * 86400),
        RetentionRule(12 * 3600, "etl", (RunStatus.FAILED, RunStatus.CANCELLED)),
        RetentionRule(3600, None, (RunStatus.FAILED,), 5),
    )
    assert rules[1].describe() == "pipeline 'etl', older than 12h, status failed/cancelled"
    assert rules[2].describe() == "older than 1h, status failed, keeping the newest 5"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"older_than": "1d"}, "S must be a list of rules"),
        (["90d"], "S: rule 1 must be a table/object, got str"),
        ([{"status": ["failed"]}], "S: rule 1: older_than is required"),
        ([{"older_than": "1d"}, {"older_than": "soon"}], "S: rule 2: older_than: cannot read"),
        ([{"older_than": "0s"}], "S: rule 1: older_than: must be positive, got '0s'"),
        (
            [{"older_than": "1d", "status": ["running"]}],
            "S: rule 1: status 'running' is not a status of an ended run",
        ),
        ([{"older_than": "1d", "keep_last": -1}], "S: rule 1: keep_last must be a whole number"),
        ([{"older_than": "1d", "keep_last": True}], "S: rule 1: keep_last must be a whole number"),
        ([{"older_than": "1d", "pipeline": ""}], "S: rule 1: pipeline must be a pipeline's name"),
        ([{"older_than": "1d", "olderthan": 1}], "S: rule 1: unknown field 'olderthan'"),
    ],
)
def test_bad_rules_are_one_error_naming_the_rule_and_field(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        parse_rules(raw, "S")


def test_settings_take_rules_from_the_environment_or_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[[tool.pipetrail.retention]]\npipeline = "etl"\nolder_than = "30d"\n'
        '[[tool.pipetrail.retention]]\nolder_than = "7d"\nstatus = ["failed"]\nkeep_last = 2\n'
    )
    settings = load_settings({}, cwd=tmp_path)
    assert settings.retention == (
        {"pipeline": "etl", "older_than": "30d"},
        {"older_than": "7d", "status": ["failed"], "keep_last": 2},
    )
    env = {"PIPETRAIL_RETENTION": '[{"older_than": "1d"}]'}
    assert load_settings(env, cwd=tmp_path).retention == ({"older_than": "1d"},)
    with pytest.raises(ConfigError, match=r"^PIPETRAIL_RETENTION is not valid JSON"):
        load_settings({"PIPETRAIL_RETENTION": "[{"}, cwd=tmp_path)
    (tmp_path / "pyproject.toml").write_text(
        '[[tool.pipetrail.retention]]\nolder_than = "30d"\nkeep = 1\n'
    )
    with pytest.raises(ConfigError, match=r"\[\[tool.pipetrail.retention\]\] in .*: rule 1: "):
        load_settings({}, cwd=tmp_path)


def _imported(ws: Workspace, pipeline: pt.Pipeline, days_ago: int, status: RunStatus) -> int:
    created = NOW - timedelta(days=days_ago)
    ended = created + timedelta(seconds=5) if status != RunStatus.RUNNING else None
    [run_id] = ws.store.import_runs(
        [
            ImportedRun(
                new=NewRun(pipeline.spec, {}, {}, {}, "u", "h", "cron"),
                status=status,
                created_at=created,
                started_at=created,
                finished_at=ended,
                tasks=[ImportedTask("make", TaskStatus(status.value), started_at=created)],
            )
        ]
    )
    return run_id


def test_rules_select_by_age_status_and_pipeline_keeping_the_newest(
    sqlite_workspace: Workspace,
) -> None:
    ws = sqlite_workspace
    f100 = _imported(ws, FLOW, 100, RunStatus.FAILED)
    c100 = _imported(ws, FLOW, 100, RunStatus.COMPLETED)
    f95 = _imported(ws, FLOW, 95, RunStatus.FAILED)
    f10 = _imported(ws, FLOW, 10, RunStatus.FAILED)
    r100 = _imported(ws, FLOW, 100, RunStatus.RUNNING)
    o100 = _imported(ws, OTHER, 100, RunStatus.FAILED)
    failed_90d = RetentionRule(90 * 86400, statuses=(RunStatus.FAILED,))
    assert select_runs(ws.store, failed_90d, NOW) == [f100, f95, o100]
    assert select_runs(ws.store, RetentionRule(90 * 86400, "gc-flow"), NOW) == [f100, c100, f95]
    # The newest failed run of each pipeline stays: f10 for gc-flow, o100 for gc-other.
    keep = RetentionRule(90 * 86400, statuses=(RunStatus.FAILED,), keep_last=1)
    assert select_runs(ws.store, keep, NOW) == [f100, f95]
    assert r100 not in select_runs(ws.store, RetentionRule(1), NOW), "a running run is not picked"

    one = apply_rules(ws.store, [failed_90d], NOW, dry_run=True, limit=1)
    assert [o.facts.run_id for o in one.outcomes] == [f100], "the oldest first, up to the limit"
    ws.store.change_tags(f95, add=["keep"])
    done = apply_rules(ws.store, [failed_90d, RetentionRule(90 * 86400, "gc-flow")], NOW)
    assert sorted(o.facts.run_id for o in done.deleted) == [f100, c100, o100]
    assert [o.facts.run_id for o in done.refused] == [f95]
    events = ws.store.governance_events(action="run_deleted")
    assert {e.actor for e in events} == {"retention"} and len(events) == 3
    assert {e.message for e in events} >= {
        "retention rule: older than 90d, status failed",
        "retention rule: pipeline 'gc-flow', older than 90d",
    }
    assert {r.id for r in ws.store.list_runs(_all())} == {f95, f10, r100}


def _all() -> RunQuery:
    return RunQuery(limit=None)


class _NoLaunch:
    """A launcher for a scheduler with no triggers: it is never asked to start anything."""

    def launch(self, order: LaunchOrder) -> int:
        raise AssertionError(f"nothing should launch: {order}")

    def alive(self, pid: int) -> bool:
        return False

    def reap(self) -> None:
        return None


def test_the_scheduler_applies_the_rules_once_per_period_of_all_schedulers(
    sqlite_workspace: Workspace,
) -> None:
    ws = sqlite_workspace
    old = [_imported(ws, FLOW, 100, RunStatus.FAILED) for _ in range(3)]
    young = _imported(ws, FLOW, 1, RunStatus.FAILED)
    job = retention_job(ws.store, [{"older_than": "90d", "status": ["failed"]}])
    clock = {"now": NOW}
    first, second = (
        Scheduler(ws.store, _NoLaunch(), retention=job, clock=lambda: clock["now"])
        for _ in range(2)
    )
    first.run_pass()
    assert {r.id for r in ws.store.list_runs(_all())} == {young}
    again = _imported(ws, FLOW, 100, RunStatus.FAILED)
    second.run_pass()  # the period is claimed by the first: nothing more this hour
    assert {r.id for r in ws.store.list_runs(_all())} == {young, again}
    clock["now"] = NOW + timedelta(hours=1, minutes=1)
    second._retention_check_at = 0.0  # it looks at the claim once a minute; now, not later
    second.run_pass()
    assert {r.id for r in ws.store.list_runs(_all())} == {young}
    deleted = ws.store.governance_events(action="run_deleted")
    assert sorted(e.run_id or 0 for e in deleted) == sorted([*old, again])


def _keeps(ws: Workspace, run_id: int) -> list[tuple[str, str]]:
    return [
        (e.action, e.actor)
        for e in ws.store.governance_events(run_id=run_id)
        if e.action in ("run_kept", "run_unkept")
    ]


def test_keeping_a_run_and_unkeeping_it_are_governance_events(workspace: Workspace) -> None:
    ws = workspace
    run = pt.run(OTHER, {"rows": 1}, executor="inline", workspace=ws).id
    ws.store.change_tags(run, add=["keep", "x"], actor="ana")
    ws.store.change_tags(run, add=["keep"], actor="ana")  # kept already: no change, no event
    ws.store.change_tags(run, remove=["keep"], add=["y"], actor="bo")
    ws.store.change_tags(run, remove=["keep"], actor="bo")  # not kept: nothing to record
    ws.store.change_tags(run, add=["z"], actor="bo")  # another tag: no governance event
    assert _keeps(ws, run) == [("run_kept", "ana"), ("run_unkept", "bo")]
    kept = ws.store.governance_events(run_id=run, action="run_kept")[0]
    assert kept.message == f"kept run gc-other/{run}: tag 'keep' added, so no deletion removes it"
    assert kept.detail == {"pathspec": f"gc-other/{run}", "status": "completed", "tag": "keep"}
    assert set(ws.store.get_run(run).user_tags) == {"x", "y", "z"}
    tags = [(e.actor, e.message) for e in ws.store.events(run) if e.kind == "tags"]
    assert tags == [
        ("ana", "+keep +x"),
        ("ana", "+keep"),
        ("bo", "+y -keep"),
        ("bo", "-keep"),
        ("bo", "+z"),
    ]

    # A refused change writes nothing: no tag, no event.
    system = sorted(ws.store.get_run(run).system_tags)[0]
    with pytest.raises(UsageError, match="cannot remove system tag"):
        ws.store.change_tags(run, add=["keep"], remove=[system], actor="ana")
    assert "keep" not in ws.store.get_run(run).user_tags and len(_keeps(ws, run)) == 2
    # Without an actor (Run.add_tag from Python) the local user is named.
    ws.store.change_tags(run, add=["keep"])
    assert _keeps(ws, run)[-1] == ("run_kept", current_user())


# -- garbage collection ------------------------------------------------------------------------


@pytest.fixture
def s3_workspace(tmp_path: Path, s3_artifacts: str) -> Iterator[Workspace]:
    ws = Workspace(Settings.for_home(tmp_path / "home", artifacts_url=s3_artifacts))
    try:
        yield ws
    finally:
        ws.close()


def _later() -> float:
    """Two hours from now: every object is past a one-hour grace."""
    return time.time() + 7200


def _check_gc(ws: Workspace) -> None:
    store, cas = ws.store, ws.cas
    gone = pt.run(FLOW, {"rows": 4}, executor="inline", workspace=ws)
    kept = pt.run(FLOW, {"rows": 5}, executor="inline", workspace=ws)
    stray = cas.put_bytes(b"stored by a task that crashed before it linked anything")
    delete_runs(store, [gone.id], actor="ana")
    listing = {key: size for key, size, _ in cas.objects()}
    referenced = store.referenced_keys()
    garbage = {k: s for k, s in listing.items() if k not in referenced}
    assert stray.key in garbage and len(garbage) >= 3
    assert all(
        k in listing for k in referenced if k in {x.artifact.key for x in store.links(kept.id)}
    )

    dry = collect_garbage(store, cas, actor="ana", dry_run=True, clock=_later)
    assert (dry.objects, dry.bytes, set(dry.keys)) == (
        len(garbage),
        sum(garbage.values()),
        set(garbage),
    )
    assert {key for key, _, _ in cas.objects()} == set(listing), "a dry run removes nothing"
    # With the real clock everything is younger than the grace: nothing goes.
    fresh = collect_garbage(store, cas, actor="ana")
    assert (fresh.objects, fresh.young) == (0, len(garbage))

    done = collect_garbage(store, cas, actor="ana", clock=_later)

    assert done.objects == len(garbage) and done.bytes == sum(garbage.values())
    assert done.referenced == len(listing) - len(garbage)
    assert done.rows.artifacts >= 1, "the deleted run's artifact rows went too"
    assert {key for key, _, _ in cas.objects()} == set(listing) - set(garbage)
    values = {
        link.name: load_from_store(cas, link.artifact.key, link.artifact.serializer, verify=True)
        for link in store.links(kept.id)
        if link.direction == "output"
    }
    assert values["report"] == {"report": [0, 1, 2, 3, 4]} and values["make"] == [0, 1, 2, 3, 4]
    code = store.get_run(kept.id).code_key
    assert code is not None and cas.get_bytes(code, verify=True)
    events = store.governance_events(action="gc")
    assert len(events) == 2 and {e.actor for e in events} == {"ana"}
    assert sorted(e.detail["bytes"] for e in events) == [0, done.bytes]
    assert collect_garbage(store, cas, actor="ana", clock=_later).objects == 0


def test_gc_on_a_local_folder_frees_what_nothing_references(sqlite_workspace: Workspace) -> None:
    _check_gc(sqlite_workspace)
    cas = sqlite_workspace.cas
    tmp = Path(cas.url) / "tmp"
    tmp.mkdir(exist_ok=True)
    (tmp / "left-by-a-crash").write_bytes(b"x" * 10)
    os.utime(tmp / "left-by-a-crash", (time.time() - 7200, time.time() - 7200))
    (tmp / "being-written").write_bytes(b"y" * 3)
    done = collect_garbage(sqlite_workspace.store, cas, actor="ana")
    assert (done.temporaries, done.temporary_bytes) == (1, 10)
    assert sorted(p.name for p in tmp.iterdir()) == ["being-written"]


def test_gc_on_s3_frees_what_nothing_references(s3_workspace: Workspace) -> None:
    _check_gc(s3_workspace)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_gc_never_removes_what_a_running_task_wrote_and_has_not_linked_yet(
    where: str, request: pytest.FixtureRequest
) -> None:
    ws: Workspace = request.getfixturevalue(
        "sqlite_workspace" if where == "local" else "s3_workspace"
    )
    results: dict[str, Any] = {}

    def writing(tag: str) -> None:
        GATE.update(gate=threading.Event(), stored=threading.Event(), tag=tag)
        thread = threading.Thread(
            target=lambda: results.update(
                run=pt.run(FLOW, {"rows": 6}, executor="inline", workspace=ws)
            )
        )
        thread.start()
        assert GATE["stored"].wait(30), "the task never stored its value"
        results["thread"] = thread

    def finish() -> pt.Run:
        GATE["gate"].set()
        results["thread"].join(30)
        GATE.clear()
        run: pt.Run = results["run"]
        return run

    try:
        writing("first")
        key = GATE["key"]
        assert key not in ws.store.referenced_keys(), "stored, not linked yet"
        during = collect_garbage(ws.store, ws.cas, actor="ana")  # the default grace: 1 h
        assert key not in during.keys and during.young >= 1
        run = finish()
        assert run.successful
        link = next(k for k in ws.store.links(run.id) if k.name == "inflight")
        assert link.artifact.key == key and ws.cas.verify(key) == link.artifact.size

        # What the grace protects against: with none, the same moment loses the value.
        writing("second")
        key = GATE["key"]
        unsafe = collect_garbage(ws.store, ws.cas, actor="ana", grace_s=0)
        assert key in unsafe.keys and not ws.cas.exists(key)
        finish()
    finally:
        if "gate" in GATE:
            GATE["gate"].set()
        GATE.clear()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_gc_keeps_an_old_unreferenced_object_a_running_task_stores_again(
    where: str, request: pytest.FixtureRequest
) -> None:
    ws: Workspace = request.getfixturevalue(
        "sqlite_workspace" if where == "local" else "s3_workspace"
    )
    results: dict[str, Any] = {}

    def start() -> None:
        GATE.update(gate=threading.Event(), stored=threading.Event(), tag="same again")
        thread = threading.Thread(
            target=lambda: results.update(
                run=pt.run(FLOW, {"rows": 6}, executor="inline", workspace=ws)
            )
        )
        thread.start()
        assert GATE["stored"].wait(30), "the task never stored its value"
        results["thread"] = thread

    def finish() -> pt.Run:
        GATE["gate"].set()
        results["thread"].join(30)
        run: pt.Run = results["run"]
        return run

    try:
        start()
        first = finish()
        key = GATE["key"]
        delete_runs(ws.store, [first.id], actor="ana")
        assert key not in ws.store.referenced_keys(), "its only run is deleted: garbage"
        stray = ws.cas.put_bytes(b"garbage that nobody stores again").key
        if where == "local":
            old = time.time() - 7200
            for aged in (key, stray):
                os.utime(ws.cas.path_of(aged), (old, old))
            cutoff = time.time() - 3600
        else:
            # An S3 object's time cannot be set back and is read to the second: let it age.
            stored = time.time()
            time.sleep(2.5)
            cutoff = stored + 1.2
        # The object's time is before the cutoff, the new put after it, however long gc takes.
        at_cutoff = cutoff + 3600

        start()  # stores the same value again: its key is stored, so nothing is uploaded
        assert GATE["key"] == key and key not in ws.store.referenced_keys()
        during = collect_garbage(ws.store, ws.cas, actor="ana", clock=lambda: at_cutoff)
        assert key not in during.keys, "an old object a running task stored again was removed"
        assert stray in during.keys and not ws.cas.exists(stray), "old garbage still goes"
        second = finish()
        assert second.successful
        link = next(k for k in ws.store.links(second.id) if k.name == "inflight")
        assert link.artifact.key == key and ws.cas.verify(key) == link.artifact.size
    finally:
        if "gate" in GATE:
            GATE["gate"].set()
        GATE.clear()


def test_the_workspace_scheduler_applies_the_retention_setting(tmp_path: Path) -> None:
    settings = Settings.for_home(
        tmp_path / "home", retention=({"older_than": "30d", "status": ["cancelled"]},)
    )
    ws = Workspace(settings)
    try:
        old = _imported(ws, FLOW, 31, RunStatus.CANCELLED)
        other = _imported(ws, FLOW, 31, RunStatus.COMPLETED)
        ws.scheduler(cwd=tmp_path).run_pass()
        assert {r.id for r in ws.store.list_runs(_all())} == {other}
        [event] = ws.store.governance_events(action="run_deleted")
        assert (event.run_id, event.actor) == (old, "retention")
    finally:
        ws.close()
