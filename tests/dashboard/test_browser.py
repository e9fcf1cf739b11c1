"""The dashboard in a real browser: list and filter runs, open one (DAG, charts, root cause),
retry and cancel from the UI behind the confirmation dialog, compare runs."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, Route, expect

import pipetrail as pt
from pipetrail.client import Run
from pipetrail.core.status import RunStatus, TaskStatus
from pipetrail.runtime.loader import load_pipeline_file
from tests.conftest import FlowWriter
from tests.dashboard.conftest import LiveServer

Shot = Callable[..., Path]

#: train fails once when the marker file exists (the failing run removes it): a retry passes.
FLOW = """
from pathlib import Path

HERE = Path(__file__).parent

@pt.step
def load(n: int = 5):
    print("loading", n, "items")
    return list(range(n))

@pt.step
def train(load, lr: float = 0.1):
    for i in range(60):
        pt.log_metric("loss", 1.0 / (1.0 + i * lr) + (0.8 if i == 30 else 0.0), step=i)
    marker = HERE / "fail_train_once"
    if marker.exists():
        marker.unlink()
        raise RuntimeError("training diverged at step 30")
    pt.log_metric("accuracy", 0.8 + lr / 10)
    return sum(load) * lr

@pt.step
def evaluate(train):
    return {"score": train}

@pt.step
def report(evaluate, load):
    return f"score {evaluate['score']} over {len(load)} items"

pipeline = pt.Pipeline("demo_flow", [load, train, evaluate, report])
"""

SLOW = """
import time

@pt.step
def start():
    return 1

@pt.step
def wait(start):
    time.sleep(60)
    return start

@pt.step
def finish(wait):
    return wait

pipeline = pt.Pipeline("slow_flow", [start, wait, finish])
"""


@dataclass(frozen=True)
class Seeded:
    ok_low: int
    ok_high: int
    failed: int


@pytest.fixture
def seeded(server: LiveServer, flow_file: FlowWriter) -> Seeded:
    """Three runs of demo_flow: two that completed (lr 0.1 and 0.5) and one that failed."""
    path = flow_file(FLOW, name="demo_flow")
    pipeline = load_pipeline_file(path)
    ws = server.workspace
    low = pt.run(pipeline, {"lr": 0.1}, executor="inline", workspace=ws, tags=["exp"])
    high = pt.run(pipeline, {"lr": 0.5}, executor="inline", workspace=ws, tags=["exp"])
    (path.parent / "fail_train_once").touch()
    failed = pt.run(pipeline, {"lr": 0.3}, executor="inline", workspace=ws)
    assert failed.status == "failed"
    return Seeded(low.id, high.id, failed.id)


def painted(page: Page, selector: str) -> bool:
    """Whether some canvas inside ``selector`` has a pixel drawn on it."""
    result = page.evaluate(
        """(selector) => [...document.querySelectorAll(selector + ' canvas')].some((c) => {
            if (!c.width || !c.height) return false;
            const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) return true;
            return false;
        })""",
        selector,
    )
    return bool(result)


def test_runs_list_filters_and_search(
    server: LiveServer, page: Page, seeded: Seeded, screenshot: Shot
) -> None:
    page.goto(f"{server.url}/pipeline-runs")
    rows = page.locator("table.runs tbody tr[data-run-id]")
    expect(rows).to_have_count(3)
    expect(rows.first).to_have_attribute("data-run-id", str(seeded.failed))  # newest first
    expect(page.locator('[data-stat="success-rate"]')).to_have_text("67%")
    expect(page.locator('[data-stat="last-24h"]')).to_have_text("3")
    expect(page.locator('[data-stat="running"]')).to_have_text("0")
    screenshot(page, "runs-list")

    page.locator("label.chip", has_text="failed").click()
    page.wait_for_url(re.compile(r"/pipeline-runs\?status=failed$"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-status", "failed")
    expect(page.locator('input[name="status"][value="failed"]')).to_be_checked()
    screenshot(page, "runs-filtered")

    page.goto(f"{server.url}/pipeline-runs")
    page.fill('input[name="q"]', "diverged")
    page.press('input[name="q"]', "Enter")
    page.wait_for_url(re.compile(r"q=diverged"))
    expect(rows).to_have_count(1)
    page.goto(f"{server.url}/pipeline-runs?tag=exp")
    expect(rows).to_have_count(2)


def test_failed_run_opens_on_its_root_cause_with_dag_timeline_and_charts(
    server: LiveServer, page: Page, seeded: Seeded, screenshot: Shot
) -> None:
    page.goto(f"{server.url}/pipeline-runs")
    page.click(f'tr[data-run-id="{seeded.failed}"] .run-id a')
    page.wait_for_url(f"**/pipelines/demo_flow/runs/{seeded.failed}**")

    cause = page.locator("#root-cause")
    expect(cause).to_contain_text("Failed at step train")
    expect(cause).to_contain_text("RuntimeError: training diverged at step 30")
    expect(cause.locator(".traceback")).to_contain_text("Traceback")
    consequences = cause.locator(".consequences")
    expect(consequences).to_contain_text("evaluate")
    expect(consequences).to_contain_text("report")
    expect(consequences).not_to_contain_text("load")
    expect(page.locator('.step-panel[data-step="train"]')).to_be_visible()
    expect(page.locator('.step-panel[data-step="load"]')).to_be_hidden()

    dag = page.locator("#dag")
    expect(dag).to_have_attribute("data-nodes", "4")
    expect(dag).to_have_attribute("data-edges", "4")
    assert painted(page, "#dag"), "the DAG canvas is blank"
    assert page.locator(".gantt .bar").count() >= 2

    chart = page.locator('.chart-box[data-metric="loss"]')
    expect(chart.locator("canvas")).to_have_count(1)
    assert painted(page, '.chart-box[data-metric="loss"]'), "the metric chart is blank"
    chart.get_by_role("button", name="Table").click()
    expect(chart.locator('[data-role="table"] tbody tr')).to_have_count(60)
    screenshot(page, "run-failed")

    page.click('.step-list [data-step="load"]')
    load = page.locator('.step-panel[data-step="load"]')
    expect(load).to_be_visible()
    expect(load.locator("pre.log")).to_contain_text("loading 5 items")

    page.goto(f"{server.url}/pipelines/demo_flow/runs/{seeded.ok_high}")
    expect(page.locator("#root-cause")).to_have_count(0)
    expect(page.locator('[data-metric-value="accuracy"]')).to_contain_text("0.85")
    assert painted(page, '.chart-box[data-metric="loss"]')
    screenshot(page, "run-completed")


def test_retry_a_failed_run_from_its_page(
    server: LiveServer, page: Page, seeded: Seeded, screenshot: Shot
) -> None:
    server.require_api()
    page.goto(f"{server.url}/pipelines/demo_flow/runs/{seeded.failed}")
    page.click('[data-action="retry-run"]')
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"Retry run #{seeded.failed}?")
    screenshot(page, "retry-confirm")
    dialog.get_by_role("button", name="Retry").click()

    page.wait_for_url(re.compile(rf"/pipelines/demo_flow/runs/(?!{seeded.failed}\b)\d+(#.*)?$"))
    found = re.search(r"/runs/(\d+)", page.url)
    assert found is not None
    new_id = int(found.group(1))
    # The page follows the new run live and reloads when it ends.
    status = page.locator('[data-role="run-status"] .badge')
    expect(status).to_have_attribute("data-status", "completed", timeout=30_000)
    retried = Run(new_id, reader=server.workspace.reader())
    assert retried.record.origin_run_id == seeded.failed
    expect(page.locator("#lineage")).to_contain_text(f"retry of demo_flow/{seeded.failed}")
    screenshot(page, "run-retried")


def test_retry_selected_from_the_pipeline_page(
    server: LiveServer, page: Page, seeded: Seeded, screenshot: Shot
) -> None:
    server.require_api()
    page.goto(f"{server.url}/pipelines/demo_flow/runs")
    rows = page.locator("table.runs tbody tr[data-run-id]")
    expect(rows).to_have_count(3)
    page.check(f'input[name="run"][value="{seeded.failed}"]')
    expect(page.locator('[data-role="selection"]')).to_have_text("1 selected")
    page.click('[data-role="actions"] summary')
    page.click('[data-action="retry-selected"]')
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text("Retry 1 run?")
    screenshot(page, "pipeline-retry-confirm")
    dialog.get_by_role("button", name="Retry").click()
    expect(page.locator(".toast")).to_contain_text("Retried 1 of 1")
    expect(rows).to_have_count(4)
    expect(rows.first.locator(".run-id")).to_contain_text(f"↻ {seeded.failed}")
    screenshot(page, "pipeline-runs")


@pytest.fixture
def slow_runs(server: LiveServer, flow_file: FlowWriter) -> Iterator[list[int]]:
    """Two runs of slow_flow going at once (process executor), stopped at the end."""
    pipeline = load_pipeline_file(flow_file(SLOW, name="slow_flow"))
    ws = server.workspace
    threads = [
        threading.Thread(
            target=pt.run, args=(pipeline,), kwargs={"executor": "process", "workspace": ws}
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while True:
        runs = pt.client.list_runs(pipeline="slow_flow", all_namespaces=True, reader=ws.reader())
        waiting = [
            r
            for r in runs
            if any(
                t.status is TaskStatus.RUNNING and t.step == "wait" for t in ws.store.tasks(r.id)
            )
        ]
        if len(waiting) == 2:
            break
        assert time.monotonic() < deadline, "the slow runs did not start within 30 s"
        time.sleep(0.1)
    try:
        yield sorted(r.id for r in waiting)
    finally:
        for run_id in sorted(r.id for r in waiting):
            if ws.store.get_run(run_id).status not in (RunStatus.CANCELLED, RunStatus.FAILED):
                pt.workspace.cancel(run_id, workspace=ws)
        for thread in threads:
            thread.join(30)


def test_cancel_running_runs_from_the_ui(
    server: LiveServer, page: Page, slow_runs: list[int], screenshot: Shot
) -> None:
    server.require_api()
    first, second = slow_runs
    page.goto(f"{server.url}/pipelines/slow_flow/runs")
    expect(page.locator("#runs-live")).to_have_attribute("data-live", "1")
    expect(page.locator('[data-stat="running"]')).to_have_text("2")
    screenshot(page, "runs-live")

    page.check(f'input[name="run"][value="{first}"]')
    page.click('[data-role="actions"] summary')
    page.click('[data-action="cancel-selected"]')
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text("Cancel 1 running run?")
    dialog.get_by_role("button", name="Cancel runs").click()
    expect(page.locator(".toast")).to_contain_text("Cancelled 1 of 1", timeout=30_000)
    expect(page.locator(f'tr[data-run-id="{first}"]')).to_have_attribute(
        "data-status", "cancelled", timeout=15_000
    )
    expect(page.locator(f'tr[data-run-id="{second}"]')).to_have_attribute("data-status", "running")

    page.goto(f"{server.url}/pipelines/slow_flow/runs/{second}")
    expect(page.locator("#dag")).to_have_attribute("data-nodes", "3")
    expect(page.locator('.step-list [data-step="wait"] .dot')).to_have_class(
        re.compile("st-running")
    )
    screenshot(page, "run-running")
    page.click('[data-action="cancel-run"]')
    expect(dialog).to_contain_text(f"Cancel run #{second}?")
    dialog.get_by_role("button", name="Cancel run").click()
    status = page.locator('[data-role="run-status"] .badge')
    expect(status).to_have_attribute("data-status", "cancelled", timeout=30_000)
    screenshot(page, "run-cancelled")


def test_compare_runs(server: LiveServer, page: Page, seeded: Seeded, screenshot: Shot) -> None:
    page.goto(f"{server.url}/pipeline-runs")
    compare = page.locator('[data-action="compare"]')
    expect(compare).to_be_disabled()
    page.check(f'input[name="run"][value="{seeded.ok_low}"]')
    page.check(f'input[name="run"][value="{seeded.ok_high}"]')
    compare.click()
    page.wait_for_url(re.compile(r"/compare\?runs=\d+,\d+$"))

    params = page.locator("#compare-params")
    expect(params.locator("tr.differs")).to_have_count(1)
    expect(params.locator("tr.differs")).to_contain_text("lr")
    expect(params.locator("tr.same", has_text="n")).to_have_count(1)
    metrics = page.locator("#compare-metrics")
    expect(metrics.locator("tr.differs", has_text="accuracy")).to_have_count(1)
    history = page.locator("#compare-histories .chart-box canvas")
    expect(history).to_have_count(1)
    assert painted(page, "#compare-histories"), "the overlaid histories are blank"
    page.check('[data-role="only-diff"]')
    expect(params.locator("tr.same").first).to_be_hidden()
    screenshot(page, "compare")

    ids = f"{seeded.ok_low},{seeded.ok_high},{seeded.failed}"
    page.goto(f"{server.url}/compare?runs={ids}")
    assert painted(page, "#parallel"), "the parallel coordinates are blank"
    screenshot(page, "compare-three")


def test_api_docs_render_offline(server: LiveServer, page: Page, screenshot: Shot) -> None:
    server.require_api()
    foreign: list[str] = []

    def only_local(route: Route) -> None:
        # Offline: anything not from this server fails, as it would with no network.
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(f"{server.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("pipetrail")
    expect(
        page.locator(".opblock-summary-path", has_text="/api/pipeline_runs").first
    ).to_be_visible()
    screenshot(page, "api-docs")
    page.goto(f"{server.url}/redoc")
    expect(page.locator("h1", has_text="pipetrail").first).to_be_visible()
    expect(page.get_by_text("List pipeline runs").first).to_be_attached()
    # ReDoc's "API docs by Redocly" credit tries its logo from Redocly's site and hides it when
    # that fails; it is an image, not a script or style the page needs.
    assert [u for u in foreign if not u.endswith("/redoc/logo-mini.svg")] == [], foreign
