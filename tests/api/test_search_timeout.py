"""On PostgreSQL a search runs under a statement timeout: a too costly regex is a 422, not a stall."""

from __future__ import annotations

import random

import pytest
from fastapi.testclient import TestClient

from pipetrail.workspace import Workspace
from tests.api.conftest import error_of, record
from tests.conftest import FlowWriter

FLOW = """
@pt.step
def only(text: str = ""):
    return len(text)

pipeline = pt.Pipeline("texts", [only])
"""
#: A DFA-hostile pattern: over a megabyte of a/b it costs PostgreSQL a good fraction of a second.
COSTLY = "params.text ~ '[ab]*a[ab]{20}c$'"


@pytest.fixture
def long_text_run(workspace: Workspace, flow_file: FlowWriter) -> int:
    if workspace.store.engine.dialect.name != "postgresql":
        pytest.skip("the statement timeout is PostgreSQL's; SQLite's regexes are RE2")
    text = "".join(random.Random(7).choice("ab") for _ in range(1_000_000)) + "a" + "b" * 20 + "c"
    return record(workspace, flow_file(FLOW), {"text": text}).id


def test_a_search_within_the_limit_answers(client: TestClient, long_text_run: int) -> None:
    response = client.get("/api/pipeline_runs", params={"filter": COSTLY})
    assert response.status_code == 200, response.text
    assert [r["id"] for r in response.json()["pipeline_runs"]] == [long_text_run]


def test_a_search_past_the_limit_is_stopped_with_a_clear_422(
    client: TestClient, workspace: Workspace, long_text_run: int
) -> None:
    from pipetrail.storage.metadata.sql.engine import SEARCH_TIMEOUT_OPTION

    store = workspace.store
    # A limit of 1 ms instead of 10 s: the same search now runs past it.
    store.engine = store.engine.execution_options(**{SEARCH_TIMEOUT_OPTION: 1})
    error = error_of(client.get("/api/pipeline_runs", params={"filter": COSTLY}), 422)
    assert error["type"] == "UsageError"
    assert error["message"].startswith("the search took longer than 0.001 s and was stopped")
    # The store is fine afterwards: other requests (and searches without a regex) answer.
    assert (
        client.get("/api/pipeline_runs", params={"filter": "status = 'completed'"}).json()["count"]
        == 1
    )
