"""The Triggers pages in a real browser: the list with schedules in words and next runs, pause
and resume from the buttons, run now, and the Upcoming runs view."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Page, expect

from pipetrail.scheduling.service import TriggerService
from pipetrail.scheduling.spec import definition_from
from pipetrail.storage.metadata.base import RunQuery
from tests.conftest import FlowWriter
from tests.dashboard.conftest import LiveServer

Shot = Callable[..., Path]

ADD = """
@pt.step
def add(x: int = 1, y: int = 2):
    pt.log_metric("sum", x + y)
    return x + y

pipeline = pt.Pipeline("adder", [add])
"""

#: A name that needs quoting in URLs (the API's and the page's) and escaping in HTML.
ODD = "team/nightly <b>&</b> co"


@pytest.fixture
def triggers(server: LiveServer, flow_file: FlowWriter, tmp_path: Path) -> TriggerService:
    """A daily cron trigger, a 15-minute interval one (odd name), and an api one."""
    flow_file(ADD, name="adder_flow")
    service = TriggerService(server.workspace.store)
    for fields in (
        {"name": "nightly", "cron": "0 2 * * *", "sla": "1h"},
        {"name": ODD, "every": "15m"},
        {"name": "hook", "api": True},
    ):
        service.create(definition_from({"pipeline": "adder_flow.py", **fields}, base_dir=tmp_path))
    return service


def test_triggers_page_lists_schedules_in_words_and_next_runs(
    server: LiveServer, page: Page, triggers: TriggerService, screenshot: Shot
) -> None:
    page.goto(f"{server.url}/pipeline-runs")
    page.get_by_role("link", name="Triggers", exact=True).click()
    page.wait_for_url(f"{server.url}/triggers")
    rows = page.locator("table.triggers tbody tr[data-trigger]")
    expect(rows).to_have_count(3)
    nightly = page.locator('tr[data-trigger="nightly"]')
    expect(nightly.locator('[data-role="schedule"]')).to_have_text("every day at 02:00 (UTC)")
    expect(nightly.locator('[data-role="next"] time')).to_have_count(1)
    expect(nightly.locator('[data-role="next"]')).to_contain_text(re.compile(r"in \d+ (min|h)"))
    odd = rows.filter(has_text=ODD)
    expect(odd.locator('[data-role="schedule"]')).to_have_text("every 15m")
    expect(page.locator('tr[data-trigger="hook"] [data-role="next"]')).not_to_contain_text("in ")
    expect(page.locator('[data-role="no-scheduler"]')).to_contain_text(
        "No scheduler is running: start pipetrail scheduler or pipetrail ui."
    )
    screenshot(page, "triggers")

    odd.locator("a.trigger-link").click()
    page.wait_for_url(f"{server.url}/triggers/{quote(ODD, safe='')}")
    expect(page.locator('[data-role="trigger-name"]')).to_have_text(ODD)
    expect(page.locator("#trigger-upcoming li")).to_have_count(10)
    screenshot(page, "trigger")

    page.goto(f"{server.url}/pipeline-runs")
    page.click('[data-role="upcoming-tab"]')
    page.wait_for_url(f"{server.url}/pipeline-runs/upcoming")
    upcoming = page.locator('[data-role="upcoming-table"] tbody tr[data-trigger]')
    expect(upcoming).to_have_count(20)
    expect(upcoming.first.locator('[data-role="relative"]')).to_have_text(
        re.compile(r"^(now|in \d+ (min|h|d)( \d\d min)?)$")
    )
    screenshot(page, "upcoming-runs")


def test_pause_then_resume_from_the_buttons(
    server: LiveServer, page: Page, triggers: TriggerService, screenshot: Shot
) -> None:
    server.require_api()
    page.goto(f"{server.url}/triggers")
    row = page.locator("table.triggers tbody tr[data-trigger]").filter(has_text=ODD)
    expect(row).to_have_attribute("data-state", "active")
    row.get_by_role("button", name="Pause").click()
    expect(page.locator(".toast")).to_contain_text(f"{ODD} paused")
    expect(row).to_have_attribute("data-state", "paused")
    expect(row.locator('[data-role="state"]')).to_have_text("paused")
    expect(row.locator('[data-role="next"]')).to_have_text("paused")
    expect(row.get_by_role("button", name="Run now")).to_be_disabled()
    assert triggers.get(ODD).paused
    screenshot(page, "trigger-paused")

    row.get_by_role("button", name="Resume").click()
    expect(row).to_have_attribute("data-state", "active")
    expect(row.locator('[data-role="next"] time')).to_have_count(1)
    assert not triggers.get(ODD).paused


def test_run_now_creates_a_run_that_appears_on_the_trigger_page(
    server: LiveServer, page: Page, triggers: TriggerService, screenshot: Shot
) -> None:
    server.require_api()
    page.goto(f"{server.url}/triggers/nightly")
    expect(page.locator('[data-role="trigger-runs"] tbody tr[data-run-id]')).to_have_count(0)
    page.get_by_role("button", name="Run now").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text("Run nightly now?")
    dialog.get_by_role("button", name="Run now").click()
    expect(page.locator(".toast")).to_contain_text(re.compile(r"Started run #\d+"))
    runs = page.locator('[data-role="trigger-runs"] tbody tr[data-run-id]')
    expect(runs).to_have_count(1)
    recorded = server.workspace.store.list_runs(RunQuery(trigger="nightly"))
    assert len(recorded) == 1
    expect(runs.first).to_have_attribute("data-run-id", str(recorded[0].id))
    expect(page.locator('[data-role="ticks"] tr[data-outcome="run"]')).to_have_count(1)
    screenshot(page, "trigger-run-now")

    runs.first.locator("a").first.click()
    page.wait_for_url(re.compile(rf"/pipelines/adder/runs/{recorded[0].id}$"))
    trigger = page.locator('[data-role="trigger"]')
    expect(trigger).to_contain_text("nightly")
    expect(trigger).to_contain_text("manual")
    expect(page.locator('[data-role="sla"]')).to_contain_text("due")
    status = page.locator('[data-role="run-status"] .badge')
    expect(status).to_have_attribute("data-status", "completed", timeout=30_000)
    screenshot(page, "run-triggered")
    trigger.get_by_role("link", name="nightly").click()
    page.wait_for_url(f"{server.url}/triggers/nightly")

    # The runs list filters by the trigger from its menu, and links the trigger.
    page.goto(f"{server.url}/pipeline-runs")
    page.select_option('select[name="trigger"]', "nightly")
    page.wait_for_url(re.compile(r"/pipeline-runs\?trigger=nightly$"))
    rows = page.locator("table.runs tbody tr[data-run-id]")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("a.trigger-link")).to_have_text("nightly")
    page.select_option('select[name="trigger"]', "hook")
    page.wait_for_url(re.compile(r"/pipeline-runs\?trigger=hook$"))
    expect(page.locator("table.runs tbody tr.empty")).to_contain_text("No runs match")
    screenshot(page, "runs-by-trigger")


def test_run_now_that_cannot_start_says_why(
    server: LiveServer, page: Page, triggers: TriggerService, tmp_path: Path
) -> None:
    server.require_api()
    (tmp_path / "adder_flow.py").unlink()
    page.goto(f"{server.url}/triggers")
    page.locator('tr[data-trigger="hook"]').get_by_role("button", name="Run now").click()
    page.locator("#confirm-dialog").get_by_role("button", name="Run now").click()
    toast = page.locator(".toast.error")
    expect(toast).to_contain_text("Could not run hook:")
    expect(toast).to_contain_text("adder_flow.py")
    assert server.workspace.store.list_runs(RunQuery(trigger="hook")) == []
