"""Numbers and times at the API's edge: out-of-range values are a 422 naming them, never a 500."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import Seeded, error_of


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"cursor": _cursor(f"{10**30}:0")}, "cursor"),
        ({"cursor": _cursor(f"5:{10**30}"), "order_by": "created"}, "cursor"),
        ({"cursor": _cursor(f"{2**31}:0")}, "cursor"),
        ({"until": "9999-12-31T23:59:59-05:00"}, "until"),
        ({"until": "9999-12-31"}, "until"),
        ({"since": "0001-01-01T00:00:00+05:00"}, "since"),
        ({"since": "0001-01-01"}, "since"),
        ({"limit": str(10**20)}, "limit"),
        ({"filter": "params.rows > 1e308 or metrics.accuracy < -1e308"}, None),
        ({"filter": f"params.rows = {10**30}"}, "10000"),
        ({"filter": "created < '9999-12-31'"}, "9999-12-31"),
        ({"filter": "finished > '0001-01-01'"}, "0001-01-01"),
        ({"filter": "(" * 250 + "status = 'failed'" + ")" * 250}, "levels deep"),
    ],
)
def test_out_of_range_list_parameters(
    client: TestClient, seeded: Seeded, params: dict[str, str], named: str | None
) -> None:
    response = client.get("/api/pipeline_runs", params=params)
    if named is None:
        assert response.status_code == 200, response.text
        return
    error = error_of(response, 422)
    assert named in error["message"]
    assert "\n" not in error["message"].split(":\n")[0]


def test_huge_ids_in_paths(client: TestClient, seeded: Seeded) -> None:
    for path in (
        f"/api/pipeline_runs/{10**20}",
        f"/api/block_runs/{10**20}/logs",
        f"/api/pipeline_runs/{seeded.first.id}/metrics/loss?points={10**20}",
        f"/api/pipeline_runs/{seeded.first.id}/metrics/loss?exact=true&limit={10**20}",
        f"/api/pipeline_runs/{seeded.first.id}/metrics/loss?exact=true&cursor="
        + base64.urlsafe_b64encode(f"o:{10**30}".encode()).decode(),
    ):
        response = client.get(path)
        assert response.status_code in (404, 422), (path, response.text)
