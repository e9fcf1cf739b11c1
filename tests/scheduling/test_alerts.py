"""Alerts end to end: the scheduler raises them into the store's outbox, real notifiers carry
them to a real local HTTP server and a real SMTP server, with retries when a receiver is down."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import pipetrail as pt
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.scheduling.alerts import AlertCenter, Backoff
from pipetrail.scheduling.notify import build_notifiers
from pipetrail.scheduling.scheduler import Scheduler, SchedulerOptions
from pipetrail.scheduling.service import TriggerService
from pipetrail.scheduling.spec import check_pipeline, definition_from
from pipetrail.storage.metadata.base import RunQuery
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter
from tests.scheduling.support import FLOW, T0, Clock, InProcessLauncher
from tests.scheduling.test_notify import HttpReceiver, SmtpReceiver

BASE = "http://dash.example:8765"
FAST = Backoff(first_s=0.05, most_s=0.2, attempts=4)


def _until(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true in time")
        time.sleep(0.05)


@pytest.fixture
def flow(flow_file: FlowWriter) -> Path:
    return flow_file(FLOW, "flows")


def _center(workspace: Workspace, *entries: dict[str, Any]) -> AlertCenter:
    return AlertCenter(workspace.store, build_notifiers(list(entries)), backoff=FAST)


def _scheduler(workspace: Workspace, center: AlertCenter, clock: Any = None) -> Scheduler:
    extra = {"clock": clock} if clock is not None else {}
    return Scheduler(
        workspace.store,
        InProcessLauncher(workspace),
        alerts=center,
        base_url=BASE,
        options=SchedulerOptions(grace_s=5.0),
        **extra,
    )


def test_a_failed_run_and_the_recovery_after_it_reach_webhook_and_email(
    workspace: Workspace, flow: Path, receiver: HttpReceiver, smtp: SmtpReceiver
) -> None:
    center = _center(
        workspace,
        {"kind": "webhook", "name": "hook", "url": f"{receiver.url}/hook"},
        {
            "kind": "email",
            "name": "mail",
            "host": "127.0.0.1",
            "port": smtp.port,
            "from": "pt@example.org",
            "to": "ops@example.org",
            "events": ["run_failed"],
        },
    )
    scheduler = _scheduler(workspace, center)
    scheduler.run_pass()  # starts watching run endings from now
    pipeline = load_pipeline_file(flow, "work")
    failed = pt.run(pipeline, {"fail": True}, executor="inline", workspace=workspace)
    ok = pt.run(pipeline, executor="inline", workspace=workspace)
    assert scheduler.run_pass().alerts == 3  # failed: hook + mail; recovered: hook only
    assert scheduler.run_pass().alerts == 0  # the look-back reads them again: nothing twice
    while center.deliver_due():
        pass
    bodies = [r.json() for r in receiver.requests]
    assert [(b["event"], b["run"]) for b in bodies] == [
        ("run_failed", failed.pathspec),
        ("run_recovered", ok.pathspec),
    ]
    first = bodies[0]
    assert first["status"] == "failed" and "asked to fail" in first["message"]
    assert first["link"] == f"{BASE}/pipelines/work/runs/{failed.id}"
    mail = smtp.handler.mail(0)
    assert failed.pathspec in str(mail["Subject"]) and len(smtp.handler.envelopes) == 1
    states = {(a.event, a.notifier): a.state for a in workspace.store.alerts()}
    assert set(states.values()) == {"delivered"}
    history = [e.message or "" for e in workspace.store.events(failed.id) if e.kind == "alert"]
    assert sorted(history) == [
        "alert run_failed delivered to hook",
        "alert run_failed delivered to mail",
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_a_notifier_that_is_down_is_retried_with_backoff_then_given_up(
    workspace: Workspace, flow: Path
) -> None:
    down = f"http://127.0.0.1:{_free_port()}/hook"
    center = _center(workspace, {"kind": "webhook", "name": "down", "url": down, "timeout": 1})
    scheduler = _scheduler(workspace, center)
    scheduler.run_pass()
    pipeline = load_pipeline_file(flow, "work")
    failed = pt.run(pipeline, {"fail": True}, executor="inline", workspace=workspace)
    scheduler.run_pass()
    center.deliver_due()
    (pending,) = workspace.store.alerts()
    assert pending.state == "pending" and pending.attempts == 1
    assert pending.last_error is not None and "127.0.0.1" in pending.last_error
    assert pending.next_attempt_at > pending.created_at  # backed off, not hammered

    def gave_up() -> bool:
        center.deliver_due()
        return workspace.store.alerts()[0].state == "failed"

    _until(gave_up)
    final = workspace.store.alerts()[0]
    assert final.attempts == FAST.attempts
    (event,) = [e for e in workspace.store.events(failed.id) if e.kind == "alert"]
    assert event.message is not None and "not delivered to down after 4 attempts" in event.message


def test_a_receiver_back_up_gets_the_alert_on_a_later_attempt(
    workspace: Workspace, flow: Path, receiver: HttpReceiver
) -> None:
    receiver.status = 503
    center = _center(workspace, {"kind": "webhook", "name": "hook", "url": receiver.url})
    scheduler = _scheduler(workspace, center)
    scheduler.run_pass()
    pt.run(load_pipeline_file(flow, "work"), {"fail": True}, executor="inline", workspace=workspace)
    scheduler.run_pass()
    center.deliver_due()
    assert workspace.store.alerts()[0].last_error is not None
    receiver.status = 200

    def delivered() -> bool:
        center.deliver_due()
        return workspace.store.alerts()[0].state == "delivered"

    _until(delivered)
    assert len(receiver.requests) >= 2 and receiver.requests[-1].json()["event"] == "run_failed"


def test_an_sla_miss_is_alerted_with_the_trigger(
    workspace: Workspace, flow: Path, receiver: HttpReceiver
) -> None:
    center = _center(
        workspace,
        {"kind": "webhook", "name": "hook", "url": receiver.url, "events": ["sla_missed"]},
    )
    clock = Clock(T0)
    TriggerService(workspace.store, clock=clock).create(
        check_pipeline(
            definition_from(
                {
                    "name": "nightly",
                    "pipeline": f"{flow}:work",
                    "every": "10s",
                    "start": (T0 + timedelta(seconds=10)).isoformat(),
                    "sla": "5s",
                }
            )
        )
    )
    scheduler = _scheduler(workspace, center, clock)
    launcher = scheduler.launcher
    assert isinstance(launcher, InProcessLauncher)
    launcher.hold = True  # the run is recorded and never finishes
    clock.at = T0 + timedelta(seconds=10, milliseconds=1)
    scheduler.run_pass()
    clock.at = T0 + timedelta(seconds=16)
    assert scheduler.run_pass().sla_missed == 1
    center.deliver_due()
    (body,) = [r.json() for r in receiver.requests]
    (run,) = workspace.store.list_runs(RunQuery(trigger="nightly"))
    assert body["event"] == "sla_missed" and body["trigger"] == "nightly"
    assert body["run"] == run.pathspec and body["status"] == "initial"
    assert "missed its SLA" in body["message"]
    assert [a.trigger_name for a in workspace.store.alerts(trigger_name="nightly")] == ["nightly"]


def test_a_notifier_that_hangs_holds_up_neither_the_scheduler_nor_the_runs(
    workspace: Workspace, flow: Path, silent_url: str
) -> None:
    center = _center(
        workspace, {"kind": "webhook", "name": "slow", "url": silent_url, "timeout": 3}
    )
    scheduler = _scheduler(workspace, center)
    scheduler.run_pass()
    center.start(interval_s=0.05)
    try:
        pipeline = load_pipeline_file(flow, "work")
        first = pt.run(pipeline, {"fail": True}, executor="inline", workspace=workspace)
        scheduler.run_pass()
        # The delivery thread is now stuck on the silent receiver; runs and passes go on.
        second = pt.run(pipeline, {"fail": True}, executor="inline", workspace=workspace)
        scheduler.run_pass()
        pending = {a.run_id: a.state for a in workspace.store.alerts()}
        assert pending == {first.id: "pending", second.id: "pending"}
    finally:
        center.stop()
