"""The dashboard without a browser: routes, safe static paths, filters, chart envelopes."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import date

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import pipetrail as pt
from pipetrail.client import Run
from pipetrail.core.status import RunStatus
from pipetrail.dashboard import create_router
from pipetrail.dashboard.assets import STATIC, resolve_static
from pipetrail.dashboard.charts import envelope
from pipetrail.dashboard.comparison import parse_run_ids
from pipetrail.dashboard.formatting import format_bytes, format_duration
from pipetrail.dashboard.listing import RunFilters
from pipetrail.errors import UsageError
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

FLOW = """
@pt.step
def first(k: int = 2):
    pt.log_metric("score", k * 1.5)
    return k

@pt.step
def second(first):
    if first > 5:
        raise ValueError(f"too big: {first}")
    return first + 1

pipeline = pt.Pipeline("tiny", [first, second])
"""


@pytest.fixture
def client(sqlite_workspace: Workspace) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(create_router(sqlite_workspace, csrf_for=lambda request: "token-123"))
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def runs(sqlite_workspace: Workspace, flow_file: FlowWriter) -> list[Run]:
    pipeline = load_pipeline_file(flow_file(FLOW))
    ws = sqlite_workspace
    return [
        pt.run(pipeline, {"k": 2}, executor="inline", workspace=ws, tags=["a"]),
        pt.run(pipeline, {"k": 9}, executor="inline", workspace=ws),
    ]


# -- static files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "../pages.py",
        "js/../../pages.py",
        "/etc/passwd",
        "..",
        ".",
        "",
        "js/.hidden",
        "js\\common.js",
        "js/common.js\x00.png",
        "vendor/../../templates/base.html",
        "nope.js",
        "js",
    ],
)
def test_static_paths_that_name_nothing_under_static(path: str) -> None:
    assert resolve_static(path) is None


def test_static_files_are_served_with_their_type(client: TestClient) -> None:
    response = client.get("/static/js/common.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    css = client.get("/static/dashboard.css?v=whatever")
    assert css.headers["content-type"].startswith("text/css")
    for path in ("/static/../pages.py", "/static/%2e%2e/pages.py", "/static/js/%2e%2e/pages.py"):
        assert client.get(path).status_code == 404, path


def test_the_pages_link_their_assets_with_a_version_that_is_cached_long(
    client: TestClient,
) -> None:
    page = client.get("/pipeline-runs").text
    href = page.split('href="/static/dashboard.css?v=', 1)[1].split('"', 1)[0]
    response = client.get(f"/static/dashboard.css?v={href}")
    assert "immutable" in response.headers["cache-control"]


def test_the_vendored_libraries_are_built() -> None:
    manifest = STATIC / "vendor" / "manifest.json"
    assert manifest.is_file(), "run: npm ci --prefix web && npm run build --prefix web"
    packages = json.loads(manifest.read_text())["packages"]
    assert set(packages) == {"cytoscape", "cytoscape-dagre", "uplot", "swagger-ui-dist", "redoc"}
    for meta in packages.values():
        for name in meta["files"]:
            assert (STATIC / "vendor" / name).is_file(), name


# -- pages --------------------------------------------------------------------------------------


def test_runs_list_empty_store_and_csrf_meta(client: TestClient) -> None:
    response = client.get("/pipeline-runs")
    assert response.status_code == 200
    assert "No runs recorded yet" in response.text
    assert '<meta name="pipetrail-csrf" content="token-123">' in response.text
    assert client.get("/", follow_redirects=False).headers["location"] == "/pipeline-runs"


def test_runs_list_filters_stay_in_the_url(client: TestClient, runs: list[Run]) -> None:
    ok, failed = runs
    assert failed.status == "failed"
    page = client.get("/pipeline-runs?status=failed").text
    assert f'data-run-id="{failed.id}"' in page and f'data-run-id="{ok.id}"' not in page
    fragment = client.get("/pipeline-runs/_table?status=failed").text
    assert fragment.lstrip().startswith('<div id="runs-live"')
    assert 'data-refresh="/pipeline-runs/_table?status=failed"' in fragment
    found = client.get("/pipeline-runs?q=too+big").text
    assert f'data-run-id="{failed.id}"' in found and f'data-run-id="{ok.id}"' not in found
    tagged = client.get("/pipeline-runs?tag=a").text
    assert f'data-run-id="{ok.id}"' in tagged and f'data-run-id="{failed.id}"' not in tagged
    bad = client.get("/pipeline-runs?status=bogus&since=yesterday").text
    assert "unknown status &#39;bogus&#39;" in bad and "is not a date" in bad
    syntax = client.get("/pipeline-runs?filter=params.k+%3E%3E+2")
    assert syntax.status_code == 200 and "notice-error" in syntax.text
    pipeline_page = client.get("/pipelines/tiny/runs").text
    assert 'data-action="retry-selected"' in pipeline_page


def test_run_page_root_cause_and_errors(client: TestClient, runs: list[Run]) -> None:
    ok, failed = runs
    page = client.get(f"/pipelines/tiny/runs/{failed.id}").text
    assert 'id="root-cause"' in page and "Failed at step" in page
    assert "ValueError: too big: 9" in page
    data = page.split('<script type="application/json" id="page-data">', 1)[1].split("</script>")[0]
    parsed = json.loads(data)
    assert parsed["selected"] == "second"
    assert [n["data"]["status"] for n in parsed["dag"]["nodes"]] == ["completed", "failed"]
    assert parsed["metrics"][0]["name"] == "score"
    assert 'id="root-cause"' not in client.get(f"/pipelines/tiny/runs/{ok.id}").text
    moved = client.get(f"/pipelines/other/runs/{ok.id}", follow_redirects=False)
    assert moved.status_code == 307
    assert moved.headers["location"] == f"/pipelines/tiny/runs/{ok.id}"
    missing = client.get("/pipelines/tiny/runs/999")
    assert missing.status_code == 404 and "no run with id 999" in missing.text
    state = client.get(f"/pipelines/tiny/runs/{ok.id}/_state").json()
    assert state["status"] == "completed" and state["steps"] == {
        "first": "completed",
        "second": "completed",
    }


def test_compare_page(client: TestClient, runs: list[Run]) -> None:
    ok, failed = runs
    page = client.get(f"/compare?runs={ok.id},{failed.id}")
    assert page.status_code == 200
    assert 'class="differs"' in page.text
    assert client.get("/compare").status_code == 200
    assert client.get(f"/compare?runs={ok.id}").status_code == 400
    assert client.get(f"/compare?runs={ok.id},999").status_code == 404
    assert client.get("/compare?runs=a,b").status_code == 400


# -- pieces -------------------------------------------------------------------------------------


def test_envelope_keeps_every_spike_in_few_points() -> None:
    xs = [float(i) for i in range(100_000)]
    ys = [math.sin(i / 1000) for i in range(100_000)]
    ys[54_321] = 40.0
    ys[77_777] = -40.0
    x, lo, hi, last = envelope(xs, ys, 600)
    assert len(x) == len(lo) == len(hi) == len(last) == 600
    assert max(hi) == 40.0 and min(lo) == -40.0
    assert x == sorted(x) and x[-1] == 99_999.0
    assert envelope([1.0, 2.0], [3.0, math.nan], 10) == ([1.0], [3.0], [3.0], [3.0])


def test_filters_from_the_query_string() -> None:
    filters = RunFilters.from_query(
        [("status", "failed,running"), ("status", "failed"), ("since", "2024-05-01"), ("q", " x ")]
    )
    assert filters.statuses == (RunStatus.FAILED, RunStatus.RUNNING)
    assert filters.since == date(2024, 5, 1) and filters.q == "x"
    assert filters.query() == "status=failed&status=running&since=2024-05-01&q=x"
    assert filters.query(page=2).endswith("&page=2")
    fixed = RunFilters.from_query([("pipeline", "other")], pipeline="iris")
    assert fixed.pipeline == "iris" and fixed.query() == "" and not fixed.active


def test_run_ids_and_formats() -> None:
    assert parse_run_ids("3, iris/5,#7,3") == [3, 5, 7]
    with pytest.raises(UsageError, match="'x' is not a run id"):
        parse_run_ids("1,x")
    assert format_duration(0.0123) == "12 ms"
    assert format_duration(125) == "2 min 05 s"
    assert format_bytes(1536) == "1.5 KiB"
