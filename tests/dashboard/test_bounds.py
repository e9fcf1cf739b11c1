"""Out-of-range numbers and dates in dashboard URLs: one line saying so, never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import pipetrail as pt
from pipetrail.client import Run
from pipetrail.dashboard import create_router
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

FLOW = """
@pt.step
def only(k: int = 2):
    return k

pipeline = pt.Pipeline("tiny", [only])
"""


@pytest.fixture
def client(workspace: Workspace) -> Iterator[TestClient]:
    """The dashboard over a real store, on SQLite and on PostgreSQL."""
    app = FastAPI()
    app.include_router(create_router(workspace, csrf_for=lambda request: "token-123"))
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def run(workspace: Workspace, flow_file: FlowWriter) -> Run:
    recorded = pt.run(
        load_pipeline_file(flow_file(FLOW)), {}, executor="inline", workspace=workspace
    )
    assert isinstance(recorded, Run)
    return recorded


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        (f"page={10**18}", f"page {10**18} is out of range"),
        ("until=9999-12-31", "until &#39;9999-12-31&#39; is out of range"),
        ("since=0001-01-01", "since &#39;0001-01-01&#39; is out of range"),
        ("since=1899-12-31T23:00:00", "is out of range; give a date from 1900-01-01"),
        ("filter=" + "(" * 250 + "status+%3D+%27completed%27" + ")" * 250, "levels deep"),
        ("filter=created+<+%279999-12-31%27", "is out of range"),
        (f"filter=params.k+%3D+{10**30}", "is too large"),
    ],
)
def test_out_of_range_list_parameters_are_a_notice(
    client: TestClient, run: Run, query: str, problem: str
) -> None:
    for path in ("/pipeline-runs", "/pipelines/tiny/runs"):
        response = client.get(f"{path}?{query}")
        assert response.status_code == 200, response.text
        assert problem in response.text, path
    # The live-refresh fragment has no notices; it must still answer.
    assert client.get(f"/pipeline-runs/_table?{query}").status_code == 200


def test_huge_run_ids_are_a_bad_request(client: TestClient, run: Run) -> None:
    for path in (
        f"/pipelines/tiny/runs/{10**20}",
        f"/pipelines/tiny/runs/{2**31}",
        f"/pipelines/tiny/runs/{10**20}/_state",
        f"/compare?runs={run.id},{10**20}",
    ):
        response = client.get(path)
        assert response.status_code == 400, (path, response.text)
        assert "is out of range; ids go from 1 to 2147483647" in response.text
