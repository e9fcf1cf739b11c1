"""Metric routes: names and latest values, exact histories, and envelopes that keep spikes."""

from __future__ import annotations

import itertools
import math

from fastapi.testclient import TestClient

from pipetrail.core.model import MetricPoint
from pipetrail.core.series import envelope
from pipetrail.workspace import Workspace
from tests.api.conftest import Seeded, error_of, record
from tests.conftest import FlowWriter

LONG = """
import math

@pt.step
def train(points: int = 100000, spike_at: int = 54321):
    for i in range(points):
        value = 1000.0 if i == spike_at else 1.0 + math.sin(i / 500.0) * 0.1
        pt.log_metric("loss", value, step=i)
    pt.log_metric("short", 3.0, step=0)

pipeline = pt.Pipeline("long", [train])
"""


def test_metric_names_and_exact_history(client: TestClient, seeded: Seeded) -> None:
    run_id = seeded.first.id
    metrics = client.get(f"/api/pipeline_runs/{run_id}/metrics").json()["metrics"]
    assert {m["name"]: m["latest"] for m in metrics} == {
        "accuracy": 0.9,
        "loss": 0.02,
        "val/loss": 0.5,
    }
    history = client.get(f"/api/pipeline_runs/{run_id}/metrics/loss").json()
    assert history["mode"] == "exact" and history["total"] == 5
    assert [p["step"] for p in history["points"]] == [0, 1, 2, 3, 4]
    assert [p["value"] for p in history["points"]] == [0.1 / (e + 1) for e in range(5)]
    assert history["buckets"] == [] and history["next_cursor"] is None
    # A name with a slash is one path.
    slashed = client.get(f"/api/pipeline_runs/{run_id}/metrics/val/loss").json()
    assert slashed["name"] == "val/loss" and slashed["points"][0]["value"] == 0.5

    error = error_of(client.get(f"/api/pipeline_runs/{run_id}/metrics/nope"), 404)
    assert "accuracy" in error["message"]
    error_of(client.get("/api/pipeline_runs/999999/metrics"), 404)
    error_of(client.get("/api/pipeline_runs/999999/metrics/loss"), 404)
    error_of(client.get(f"/api/pipeline_runs/{run_id}/metrics/loss?points=0"), 422)


def test_a_long_history_comes_as_envelopes_that_keep_the_spike(
    client: TestClient, workspace: Workspace, flow_file: FlowWriter
) -> None:
    run = record(workspace, flow_file(LONG))
    url = f"/api/pipeline_runs/{run.id}/metrics/loss"

    body = client.get(url, params={"points": 200}).json()
    assert body["mode"] == "envelope" and body["total"] == 100_000
    buckets = body["buckets"]
    assert len(buckets) == 200 and body["points"] == []
    assert sum(b["count"] for b in buckets) == 100_000
    assert buckets[0]["start_index"] == 0 and buckets[-1]["end_index"] == 99_999
    assert all(a["end_index"] + 1 == b["start_index"] for a, b in itertools.pairwise(buckets))
    spiky = [b for b in buckets if b["max"] == 1000.0]
    assert len(spiky) == 1
    assert spiky[0]["start_index"] <= 54321 <= spiky[0]["end_index"]
    assert spiky[0]["step_start"] <= 54321 <= spiky[0]["step_end"]
    assert all(b["min"] <= b["last"] <= b["max"] for b in buckets)
    assert buckets[-1]["last"] == 1.0 + math.sin(99_999 / 500.0) * 0.1

    # A short series under the width is exact.
    short = client.get(f"/api/pipeline_runs/{run.id}/metrics/short", params={"points": 200})
    assert short.json()["mode"] == "exact" and len(short.json()["points"]) == 1

    # exact=true: every point, in pages.
    first = client.get(url, params={"exact": "true", "limit": 60_000}).json()
    assert first["mode"] == "exact" and len(first["points"]) == 60_000
    assert first["points"][0]["index"] == 0 and first["next_cursor"]
    rest = client.get(
        url, params={"exact": "true", "limit": 60_000, "cursor": first["next_cursor"]}
    ).json()
    assert len(rest["points"]) == 40_000 and rest["next_cursor"] is None
    values = [p["value"] for p in first["points"] + rest["points"]]
    assert values[54321] == 1000.0 and len(values) == 100_000
    error_of(client.get(url, params={"exact": "true", "cursor": "nope"}), 422)


def test_envelope_buckets_cover_every_point_once() -> None:
    from datetime import UTC, datetime

    at = datetime(2024, 1, 1, tzinfo=UTC)
    for total in (1, 2, 7, 199, 200, 201, 1000):
        points = [MetricPoint("m", float(i), i, at) for i in range(total)]
        for width in (1, 3, 200):
            buckets = envelope(points, width)
            assert len(buckets) == min(width, total)
            covered = [i for b in buckets for i in range(b.start_index, b.end_index + 1)]
            assert covered == list(range(total))
            sizes = {b.count for b in buckets}
            assert max(sizes) - min(sizes) <= 1
            assert max(b.max for b in buckets) == total - 1
