"""The spec and the behaviour agree on the requests Schemathesis found them to differ on."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import Seeded, error_of


def _body_schema(spec: dict[str, Any], path: str) -> dict[str, Any]:
    schema: dict[str, Any] = spec["paths"][path]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    # Resolve the components the body refers to, as a validator of the whole spec would.
    return {**schema, "components": spec["components"]}


def _valid(schema: dict[str, Any], body: Any) -> bool:
    return bool(jsonschema_rs.Draft202012Validator(schema).is_valid(body))


@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_batch_routes_answer_options_with_post(client: TestClient, action: str) -> None:
    response = client.options(f"/api/pipeline_runs/{action}")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        ({}, False),
        ({"ids": [1], "filter": {}}, False),
        ({"ids": [1]}, True),
        ({"filter": {"pipeline": "nope"}}, True),
    ],
)
def test_batch_bodies_the_spec_allows_are_the_ones_accepted(
    client: TestClient, seeded: Seeded, body: dict[str, Any], accepted: bool
) -> None:
    spec = client.get("/openapi.json").json()
    schema = _body_schema(spec, "/api/pipeline_runs/cancel")
    assert _valid(schema, body) is accepted
    response = client.post("/api/pipeline_runs/cancel", json=body)
    assert (response.status_code == 200) is accepted, response.text


def test_an_empty_order_by_is_the_default_order(client: TestClient, seeded: Seeded) -> None:
    default = client.get("/api/pipeline_runs").json()["pipeline_runs"]
    for items in ([""], ["", "  "], ["", "created desc"]):
        response = client.get("/api/pipeline_runs", params={"order_by": items})
        assert response.status_code == 200, response.text
        assert [r["id"] for r in response.json()["pipeline_runs"]] == [r["id"] for r in default]


def test_a_cursor_the_spec_allows_is_one_the_api_could_have_made(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    params = spec["paths"]["/api/pipeline_runs"]["get"]["parameters"]
    cursor = next(p for p in params if p["name"] == "cursor")["schema"]
    text = next(s for s in cursor["anyOf"] if s.get("type") == "string")
    assert text["maxLength"] <= 64 and text["pattern"] == "^[A-Za-z0-9_-]*$"
    for bad in ("x" * 65, "not a cursor!"):
        error = error_of(client.get("/api/pipeline_runs", params={"cursor": bad}), 422)
        assert "cursor" in error["message"]
