"""Regular expressions in filters: RE2 on every store, so no pattern can stall the server."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from pipetrail.workspace import Workspace
from tests.api.conftest import Seeded, error_of, record


def test_a_catastrophic_pattern_answers_like_any_other(
    client: TestClient, seeded: Seeded, workspace: Workspace
) -> None:
    # Python's backtracking re needs seconds for this one (and held SQLite meanwhile).
    evil = record(workspace, seeded.rich_file, {"source": "a" * 28 + "!"})
    response = client.get("/api/pipeline_runs", params={"filter": "params.source ~ '^(a+)+$'"})
    assert response.status_code == 200, response.text
    assert response.json()["pipeline_runs"] == []
    response = client.get("/api/pipeline_runs", params={"filter": "params.source ~ '^(a+)+!$'"})
    assert [r["id"] for r in response.json()["pipeline_runs"]] == [evil.id]


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(a)\\\\1", "invalid escape sequence"),
        ("a(?=b)", "invalid perl operator: (?="),
        ("(?<!x)y", "invalid perl operator: (?<!"),
    ],
)
def test_patterns_re2_refuses_are_a_clear_422(
    client: TestClient, seeded: Seeded, pattern: str, reason: str
) -> None:
    response = client.get("/api/pipeline_runs", params={"filter": f"params.source ~ '{pattern}'"})
    error = error_of(response, 422)
    assert error["type"] == "QuerySyntaxError"
    assert reason in error["message"]
    assert "patterns are RE2: no backreferences or lookaround" in error["message"]
