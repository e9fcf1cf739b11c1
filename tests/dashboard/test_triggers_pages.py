"""The Triggers pages, the Upcoming runs view, run filters by trigger and SLA marks, over HTTP
against a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import pipetrail as pt
from pipetrail.core.model import RunRecord
from pipetrail.dashboard import create_router
from pipetrail.dashboard.listing import RunFilters
from pipetrail.dashboard.triggers import relative
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.scheduling.fire import fire_now
from pipetrail.scheduling.service import TriggerService
from pipetrail.scheduling.spec import definition_from
from pipetrail.storage.metadata.base import NewAlert, TriggerRecord
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

ADD = """
@pt.step
def add(x: int = 1, y: int = 2):
    return x + y

pipeline = pt.Pipeline("adder", [add])
"""

#: A name that needs quoting in a URL and escaping in HTML.
ODD = "team/<b>nightly</b> & co"


@pytest.fixture
def client(workspace: Workspace) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(create_router(workspace, csrf_for=lambda request: "token-123"))
    with TestClient(app) as test_client:
        yield test_client


@dataclass(frozen=True)
class Seeded:
    triggers: dict[str, TriggerRecord]
    late: RunRecord
    on_time: RunRecord
    plain: RunRecord


def _create(ws: Workspace, folder: Path, **fields: Any) -> TriggerRecord:
    definition = definition_from({"pipeline": "adder_flow.py", **fields}, base_dir=folder)
    return TriggerService(ws.store).create(definition)


def _fire(ws: Workspace, record: TriggerRecord, *, missed: bool | None = None) -> RunRecord:
    engine = ws.engine(executor="inline")
    run, request = fire_now(ws.store, engine, record)
    engine.execute(run, request)
    if missed is not None:
        assert ws.store.settle_sla(run.id, "missed" if missed else "met", datetime.now(UTC))
    return ws.store.get_run(run.id)


@pytest.fixture
def seeded(workspace: Workspace, flow_file: FlowWriter, tmp_path: Path) -> Seeded:
    """A trigger of every kind (one paused), runs with their SLA decided, ticks skipped and
    open, and alerts delivered, failed and pending."""
    flow_file(ADD, name="adder_flow")
    ws = workspace
    made = {
        "nightly": _create(ws, tmp_path, name="nightly", cron="0 2 * * *", sla="1h"),
        "every15": _create(ws, tmp_path, name="every15", every="15m"),
        "later": _create(ws, tmp_path, name="later", once_at="2099-01-01T00:00:00Z"),
        "forever": _create(ws, tmp_path, name="forever", always_on=True),
        "downstream": _create(ws, tmp_path, name="downstream", after="adder"),
        "hook": _create(ws, tmp_path, name="hook", api=True),
        ODD: _create(ws, tmp_path, name=ODD, every="1h"),
    }
    TriggerService(ws.store).pause("every15")
    late = _fire(ws, made["nightly"], missed=True)
    on_time = _fire(ws, made["nightly"], missed=False)
    plain = _fire(ws, made["hook"])
    store = ws.store
    past = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)
    assert store.claim_tick(
        made["nightly"].id, past, skip_reason="overlap skip: run 41 of it is still going"
    )
    assert store.claim_tick(made["nightly"].id, past + timedelta(days=1), note="backfill")
    now = datetime.now(UTC)
    queued = store.enqueue_alerts(
        [
            NewAlert("a1", "sla_missed", "ops-hook", {"m": 1}, late.id, "nightly"),
            NewAlert("a2", "run_failed", "mail <ops>", {"m": 2}, late.id, "nightly"),
            NewAlert("a3", "run_completed", "slack", {"m": 3}, on_time.id, "nightly"),
        ],
        now,
    )
    assert len(queued) == 3
    alerts = {a.notifier: a for a in store.alerts(trigger_name="nightly")}
    store.alert_attempted(alerts["ops-hook"].id, at=now, error=None, retry_at=None)
    store.alert_attempted(
        alerts["mail <ops>"].id, at=now, error="connection refused <smtp>", retry_at=None
    )
    return Seeded(made, late, on_time, plain)


def _rows(html: str, table: str) -> list[str]:
    body = html.split(f'data-role="{table}"', 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr[^>]*>.*?</tr>", body, flags=re.S)


def test_triggers_page_lists_every_kind(client: TestClient, seeded: Seeded) -> None:
    response = client.get("/triggers")
    assert response.status_code == 200, response.text
    html = response.text
    rows = {
        unescape(m.group(1)): m.group(0)
        for m in re.finditer(r'<tr data-trigger="([^"]*)".*?</tr>', html, flags=re.S)
    }
    assert sorted(rows) == sorted(seeded.triggers)
    assert "every day at 02:00 (UTC)" in rows["nightly"]
    assert 'data-state="paused"' in rows["every15"] and "Resume" in rows["every15"]
    assert "Run now" in rows["nightly"] and 'data-state="active"' in rows["nightly"]
    assert "once, at 2099-01-01T00:00:00+00:00" in rows["later"]
    assert (
        "always on" in rows["forever"] and "after each completed run of adder" in rows["downstream"]
    )
    assert "when called over the API" in rows["hook"]
    # Next run: a time for clock kinds that are active, none for the paused or unclocked.
    assert "<time" in rows["nightly"].split('data-role="next"', 1)[1].split("</td>", 1)[0]
    assert "in " in rows["later"]
    for name in ("every15", "forever", "hook"):
        assert "<time" not in rows[name].split('data-role="next"', 1)[1].split("</td>", 1)[0]
    # Last run and SLA misses.
    assert f"#{seeded.on_time.id}" in rows["nightly"]
    assert 'data-role="sla-missed"><a class="sla-missed"' in rows["nightly"]
    assert "no runs yet" in rows["forever"]
    # The name is escaped in the page and quoted whole in its link.
    assert "<b>nightly</b>" not in html
    assert "team/&lt;b&gt;nightly&lt;/b&gt; &amp; co" in html
    assert f'href="/triggers/{quote(ODD, safe="")}"' in html
    # No scheduler is running in this test: the banner says how to start one.
    assert (
        "No scheduler is running: start <code>pipetrail scheduler</code> or "
        "<code>pipetrail ui</code>. Ticks fire only while one runs." in html
    )
    assert 'href="/triggers" aria-current="page"' in html


def test_triggers_page_without_triggers(client: TestClient) -> None:
    response = client.get("/triggers")
    assert response.status_code == 200
    assert "No triggers yet" in response.text


def test_scheduler_banner_goes_when_a_scheduler_is_heard_from(
    client: TestClient, workspace: Workspace, seeded: Seeded
) -> None:
    instance = workspace.store.register_scheduler("here", 1234)
    workspace.store.scheduler_heartbeat(instance)
    assert 'data-role="no-scheduler"' not in client.get("/triggers").text
    workspace.store.scheduler_heartbeat(instance, stopped=True)


def test_trigger_page_shows_runs_ticks_alerts_and_upcoming(
    client: TestClient, seeded: Seeded
) -> None:
    response = client.get("/triggers/nightly")
    assert response.status_code == 200, response.text
    html = response.text
    runs = _rows(html, "trigger-runs")
    assert [re.search(r'data-run-id="(\d+)"', r).group(1) for r in runs[1:]] == [  # type: ignore[union-attr]
        str(seeded.on_time.id),
        str(seeded.late.id),
    ]
    assert "SLA missed" in runs[2] and "met" in runs[1]
    ticks = _rows(html, "ticks")[1:]
    outcomes = [re.search(r'data-outcome="(\w+)"', t).group(1) for t in ticks]  # type: ignore[union-attr]
    assert sorted(outcomes) == ["open", "run", "run", "skipped"]
    skipped = next(t for t in ticks if 'data-outcome="skipped"' in t)
    assert "overlap skip: run 41 of it is still going" in skipped
    opened = next(t for t in ticks if 'data-outcome="open"' in t)
    assert "backfill" in opened
    alerts = _rows(html, "alerts")[1:]
    states = sorted(re.search(r'data-state="(\w+)"', a).group(1) for a in alerts)  # type: ignore[union-attr]
    assert states == ["delivered", "failed", "pending"]
    assert "connection refused &lt;smtp&gt;" in html and "mail &lt;ops&gt;" in html
    upcoming = html.split('id="trigger-upcoming"', 1)[1].split("</section>", 1)[0]
    assert upcoming.count("<li>") == 10
    assert "every day at 02:00 (UTC)" in html
    assert 'data-action="pause-trigger"' in html and 'data-name="nightly"' in html


@pytest.mark.parametrize("name", ["every15", "later", "forever", "downstream", "hook", ODD])
def test_trigger_page_renders_for_every_kind_and_state(
    client: TestClient, seeded: Seeded, name: str
) -> None:
    response = client.get(f"/triggers/{quote(name, safe='')}")
    assert response.status_code == 200, response.text
    html = response.text
    assert "<b>nightly</b>" not in html
    if name == "every15":
        assert "Paused: nothing fires until it is resumed." in html
        assert 'data-action="resume-trigger"' in html
        assert 'data-action="run-trigger" disabled' in html
    if name == "hook":
        assert f'data-run-id="{seeded.plain.id}"' in html
        assert "no fire times by the clock" in html
        assert 'data-role="no-scheduler"' not in html  # api triggers need none
    if name == "later":
        assert html.split('id="trigger-upcoming"', 1)[1].count("<li>") == 1


def test_unknown_and_impossible_trigger_names(client: TestClient, seeded: Seeded) -> None:
    missing = client.get("/triggers/ghost")
    assert missing.status_code == 404
    assert "ghost" in missing.text and "Not found" in missing.text
    long = client.get(f"/triggers/{'x' * 201}")
    assert long.status_code == 400
    assert "names have 1 to 200 characters" in long.text
    assert client.get("/triggers/%00").status_code == 400
    bare = client.get("/triggers/", follow_redirects=False)
    assert bare.status_code == 307 and bare.headers["location"] == "/triggers"


def test_upcoming_runs_view(client: TestClient, seeded: Seeded) -> None:
    response = client.get("/pipeline-runs/upcoming")
    assert response.status_code == 200, response.text
    html = response.text
    rows = _rows(html, "upcoming-table")[1:]
    assert len(rows) == 20
    names = [unescape(re.search(r'data-trigger="([^"]*)"', r).group(1)) for r in rows]  # type: ignore[union-attr]
    # Active clock triggers only: not the paused one, nor the unclocked kinds.
    assert set(names) <= {"nightly", "later", ODD}
    assert ODD in names
    times = re.findall(r'<time datetime="([^"]+)"', "".join(rows))
    assert times == sorted(times)
    assert all("in " in r or ">now<" in r for r in rows)
    assert 'href="/pipeline-runs/upcoming" aria-current="page"' in html
    # The runs list links to the view.
    assert 'href="/pipeline-runs/upcoming"' in client.get("/pipeline-runs").text


def test_upcoming_runs_view_empty(client: TestClient) -> None:
    html = client.get("/pipeline-runs/upcoming").text
    assert "Nothing is scheduled" in html


def test_runs_list_filters_by_trigger_and_marks_sla_misses(
    client: TestClient, seeded: Seeded
) -> None:
    def ids(query: str) -> list[int]:
        response = client.get(f"/pipeline-runs?{query}")
        assert response.status_code == 200, response.text
        return [int(i) for i in re.findall(r'<tr data-run-id="(\d+)"', response.text)]

    assert ids("trigger=nightly") == [seeded.on_time.id, seeded.late.id]
    assert ids("trigger=hook") == [seeded.plain.id]
    assert ids("sla_missed=1") == [seeded.late.id]
    assert ids("trigger=hook&sla_missed=1") == []
    assert ids("trigger=ghost") == []
    html = client.get("/pipeline-runs").text
    late_row = html.split(f'<tr data-run-id="{seeded.late.id}"', 1)[1].split("</tr>", 1)[0]
    assert 'data-role="sla-missed"' in late_row
    assert 'href="/triggers/nightly"' in late_row
    on_time_row = html.split(f'<tr data-run-id="{seeded.on_time.id}"', 1)[1].split("</tr>", 1)[0]
    assert 'data-role="sla-missed"' not in on_time_row
    # The filter form offers the triggers, and keeps the choice.
    chosen = client.get("/pipeline-runs?trigger=nightly&sla_missed=1").text
    assert '<option value="nightly" selected>' in chosen
    assert 'name="sla_missed" value="1" data-autosubmit checked' in chosen
    # The live refresh keeps the filters.
    assert "/pipeline-runs/_table?trigger=nightly&amp;sla_missed=1" in chosen
    fragment = client.get("/pipeline-runs/_table?trigger=nightly&sla_missed=1")
    assert re.findall(r'<tr data-run-id="(\d+)"', fragment.text) == [str(seeded.late.id)]
    # A pipeline's page filters the same way.
    assert re.findall(
        r'<tr data-run-id="(\d+)"', client.get("/pipelines/adder/runs?trigger=hook").text
    ) == [str(seeded.plain.id)]


def test_bad_trigger_filters_are_a_notice(client: TestClient, seeded: Seeded) -> None:
    html = client.get("/pipeline-runs?sla_missed=maybe").text
    assert "sla_missed &#39;maybe&#39; is not yes or no; use 1 or 0" in html
    long = client.get(f"/pipeline-runs?trigger={'t' * 300}")
    assert long.status_code == 200
    assert "is longer than 200 characters" in long.text
    filters = RunFilters.from_query([("trigger", "a"), ("sla_missed", "true")])
    assert filters.active and filters.query() == "trigger=a&sla_missed=1"


def test_run_page_says_what_triggered_it_its_sla_and_alerts(
    client: TestClient, workspace: Workspace, seeded: Seeded, tmp_path: Path
) -> None:
    flow = tmp_path / "adder_flow.py"
    response = client.get(f"/pipelines/adder/runs/{seeded.late.id}")
    assert response.status_code == 200, response.text
    html = response.text
    trigger = html.split('data-role="trigger"', 1)[1].split("</dd>", 1)[0]
    assert 'href="/triggers/nightly"' in trigger and "manual" in trigger
    assert "<dt>Scheduled</dt>" in html
    sla = html.split('data-role="sla"', 1)[1].split("</dd>", 1)[0]
    assert "missed" in sla
    alerts = html.split('id="alerts"', 1)[1].split("</section>", 1)[0]
    assert "sla missed" in alerts and "delivered" in alerts and "failed" in alerts
    assert "connection refused &lt;smtp&gt;" in alerts
    on_time = client.get(f"/pipelines/adder/runs/{seeded.on_time.id}").text
    assert "met" in on_time.split('data-role="sla"', 1)[1].split("</dd>", 1)[0]
    assert 'id="alerts"' in on_time  # its run_completed alert, still pending
    # A run started from Python has no trigger link, SLA or alerts.
    by_hand = pt.run(load_pipeline_file(flow), {}, executor="inline", workspace=workspace)
    plain = client.get(f"/pipelines/adder/runs/{by_hand.id}").text
    said = plain.split('data-role="trigger"', 1)[1].split("</dd>", 1)[0]
    assert said == f">{by_hand.trigger}" and "href" not in said
    assert 'data-role="sla"' not in plain and 'id="alerts"' not in plain
    assert "<dt>Scheduled</dt>" not in plain


def test_run_page_of_an_after_run_links_its_upstream(
    client: TestClient, workspace: Workspace, seeded: Seeded
) -> None:
    from pipetrail.scheduling.fire import tick_request

    record = seeded.triggers["downstream"]
    at = datetime.now(UTC)
    assert workspace.store.claim_tick(record.id, at, cause_run_id=seeded.plain.id)
    engine = workspace.engine(executor="inline")
    request = tick_request(record, at, upstream=seeded.plain)
    run = engine.prepare(request)
    engine.execute(run, request)
    html = client.get(f"/pipelines/adder/runs/{run.id}").text
    upstream = html.split('data-role="upstream"', 1)[1].split("</dd>", 1)[0]
    assert f'href="/pipelines/adder/runs/{seeded.plain.id}"' in upstream
    assert f"adder/{seeded.plain.id}" in upstream
    ticks = client.get("/triggers/downstream").text
    assert f'data-run-id="{run.id}"' in ticks


def test_relative_times() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert relative(now + timedelta(minutes=5), now) == "in 5 min"
    assert relative(now - timedelta(hours=3), now) == "3 h ago"
    assert relative(now + timedelta(minutes=75), now) == "in 1 h 15 min"
    assert relative(now + timedelta(minutes=59, seconds=50), now) == "in 1 h"
    assert relative(now + timedelta(hours=20, minutes=10), now) == "in 20 h"
    assert relative(now + timedelta(seconds=10), now) == "now"
    assert relative(now + timedelta(days=10), now) == "in 10 d"
    assert relative(None, now) == ""
