"""Actions: trigger, retry and cancel, one run and in batches, and their errors."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from pipetrail.workspace import Workspace
from tests.api.conftest import Seeded, chain_source, error_of, record, wait_status
from tests.conftest import FlowWriter

_ENDED = ("completed", "failed", "cancelled")


def test_trigger_returns_at_once_and_the_run_completes(client: TestClient, seeded: Seeded) -> None:
    started = time.monotonic()
    response = client.post(
        "/api/pipelines/rich/runs",
        json={
            "parameters": {"rows": 12, "lr": 0.25},
            "variables": {"env": "test"},
            "tags": ["from-api"],
            "executor": "inline",
        },
    )
    assert response.status_code == 201, response.text
    run = response.json()["pipeline_run"]
    assert time.monotonic() - started < 5
    assert run["status"] in ("initial", "running")
    assert run["trigger"]["kind"] == "api" and run["params"]["rows"] == 12
    assert response.headers["location"] == f"/api/pipeline_runs/{run['id']}"

    done = wait_status(client, run["id"], _ENDED)
    assert done["status"] == "completed", done["error"]
    assert done["tags"] == ["from-api"] and done["variables"] == {"env": "test"}
    assert done["params"] == {"rows": 12, "source": "iris", "lr": 0.25, "epochs": 5}
    assert done["metrics"]["loss"] == 0.25 / 5


def test_trigger_from_a_file_and_its_errors(
    client: TestClient, workspace: Workspace, flow_file: FlowWriter
) -> None:
    file = flow_file(chain_source(2), name="chain_flow")
    response = client.post(
        "/api/pipelines/chain/runs",
        json={"file": str(file), "parameters": {"pause": 0.0}, "executor": "inline"},
    )
    assert response.status_code == 201, response.text
    run_id = response.json()["pipeline_run"]["id"]
    assert wait_status(client, run_id, _ENDED)["status"] == "completed"

    # Unknown pipeline with no run to find its file: 404.
    error = error_of(client.post("/api/pipelines/ghost/runs", json={}), 404)
    assert "'ghost'" in error["message"] and "file" in error["message"]
    # Bad parameters: 422 naming them.
    error = error_of(
        client.post("/api/pipelines/chain/runs", json={"parameters": {"nope": 1}}), 422
    )
    assert error["type"] == "ParameterError" and "'nope'" in error["message"]
    error = error_of(
        client.post("/api/pipelines/chain/runs", json={"parameters": {"pause": "slow"}}), 422
    )
    assert error["type"] == "ParameterError"
    # A file that is not there, a system tag, an unknown executor, an unknown field.
    missing = error_of(client.post("/api/pipelines/chain/runs", json={"file": "/no/such.py"}), 403)
    assert missing["type"] == "ForbiddenFileError"
    assert (
        error_of(client.post("/api/pipelines/chain/runs", json={"tags": ["user:mallory"]}), 422)[
            "type"
        ]
        == "UsageError"
    )
    error_of(client.post("/api/pipelines/chain/runs", json={"executor": "dask"}), 422)
    error_of(client.post("/api/pipelines/chain/runs", json={"colour": "red"}), 422)
    error_of(client.post("/api/pipelines/chain/runs", content=b"{not json"), 422)
    error_of(client.post("/api/pipelines/chain/runs", json={"variables": {"a": "\x00"}}), 422)


def test_retry_reuses_what_completed(client: TestClient, seeded: Seeded) -> None:
    failed = seeded.failed.id
    response = client.post(
        f"/api/pipeline_runs/{failed}/retry",
        json={"parameters": {"fail": False}, "executor": "inline"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    new = body["pipeline_run"]
    assert new["origin_run_id"] == failed and new["trigger"]["kind"] == "retry"
    assert new["origin_pathspec"] == f"failing/{failed}"
    assert {p["step"]: p["action"] for p in body["plan"]} == {
        "root": "reuse",
        "boom": "run",
        "after": "run",
    }
    done = wait_status(client, new["id"], _ENDED)
    assert done["status"] == "completed" and done["params"] == {"fail": False}
    tasks = client.get(f"/api/pipeline_runs/{new['id']}/block_runs").json()["block_runs"]
    root = next(t for t in tasks if t["step"] == "root")
    assert root["reused_from_block_run_id"] is not None
    # The origin is not changed.
    origin = client.get(f"/api/pipeline_runs/{failed}").json()["pipeline_run"]
    assert origin["status"] == "failed"

    again = client.post(
        f"/api/pipeline_runs/{seeded.first.id}/retry",
        json={"from_step": "train", "executor": "inline"},
    )
    assert again.status_code == 201, again.text
    assert {p["step"]: p["action"] for p in again.json()["plan"]}["train"] == "run"
    wait_status(client, again.json()["pipeline_run"]["id"], _ENDED)

    error_of(client.post("/api/pipeline_runs/999999/retry", json={}), 404)
    error = error_of(
        client.post(f"/api/pipeline_runs/{failed}/retry", json={"from_step": "nope"}), 422
    )
    assert "'nope'" in error["message"]
    error_of(
        client.post(f"/api/pipeline_runs/{failed}/retry", json={"parameters": {"zzz": 1}}), 422
    )


def test_cancel_a_running_run_and_a_finished_one(
    client: TestClient, workspace: Workspace, flow_file: FlowWriter
) -> None:
    file = flow_file(chain_source(12), name="chain_flow")
    response = client.post(
        "/api/pipelines/chain/runs", json={"file": str(file), "executor": "inline"}
    )
    run_id = response.json()["pipeline_run"]["id"]
    wait_status(client, run_id, ("running",))
    cancelled = client.post(
        f"/api/pipeline_runs/{run_id}/cancel", json={"reason": "enough", "wait_s": 20}
    )
    assert cancelled.status_code == 200, cancelled.text
    run = cancelled.json()["pipeline_run"]
    assert run["status"] == "cancelled" and run["cancel_requested_at"] is not None
    assert "enough" in (run["error"] or "")
    kinds = [e["kind"] for e in run["events"]]
    assert "cancel_requested" in kinds
    tasks = client.get(f"/api/pipeline_runs/{run_id}/block_runs").json()["block_runs"]
    assert any(t["status"] == "cancelled" for t in tasks)
    assert tasks[-1]["status"] != "completed"

    error = error_of(client.post(f"/api/pipeline_runs/{run_id}/cancel"), 409)
    assert error["type"] == "InvalidTransitionError" and "already ended" in error["message"]
    error_of(client.post("/api/pipeline_runs/999999/cancel"), 404)
    error_of(client.post(f"/api/pipeline_runs/{run_id}/cancel", json={"wait_s": -1}), 422)


def test_retry_of_a_running_run_is_a_conflict(
    client: TestClient, workspace: Workspace, flow_file: FlowWriter
) -> None:
    file = flow_file(chain_source(6), name="chain_flow")
    run_id = client.post(
        "/api/pipelines/chain/runs", json={"file": str(file), "executor": "inline"}
    ).json()["pipeline_run"]["id"]
    error = error_of(client.post(f"/api/pipeline_runs/{run_id}/retry", json={}), 409)
    assert "still" in error["message"]
    client.post(f"/api/pipeline_runs/{run_id}/cancel", json={"wait_s": 20})
    assert wait_status(client, run_id, _ENDED)["status"] == "cancelled"


def test_batch_cancel_by_filter_and_batch_retry_by_ids(
    client: TestClient, workspace: Workspace, flow_file: FlowWriter
) -> None:
    file = flow_file(chain_source(10), name="chain_flow")
    finished = record(workspace, file, {"pause": 0.0})
    started = [
        client.post(
            "/api/pipelines/chain/runs", json={"file": str(file), "executor": "inline"}
        ).json()["pipeline_run"]["id"]
        for _ in range(2)
    ]
    for run_id in started:
        wait_status(client, run_id, ("running",))
    # "Cancel all running of pipeline chain".
    response = client.post(
        "/api/pipeline_runs/cancel",
        json={"filter": {"pipeline": "chain", "status": ["running"]}, "wait_s": 20},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["matched"] == 2 and body["succeeded"] == 2
    assert sorted(r["id"] for r in body["results"]) == sorted(started)
    assert all(r["pipeline_run"]["status"] == "cancelled" for r in body["results"])

    # Retry by ids: the cancelled ones start again; the unknown one is reported, not raised.
    response = client.post(
        "/api/pipeline_runs/retry",
        json={"ids": [*started, 999999], "executor": "inline", "from_step": "s8"},
    )
    body = response.json()
    assert response.status_code == 200 and body["matched"] == 3 and body["succeeded"] == 2
    results = {r["id"]: r for r in body["results"]}
    assert results[999999]["ok"] is False
    assert results[999999]["error"]["type"] == "NotFoundError"
    for run_id in started:
        new = results[run_id]["pipeline_run"]
        assert new["origin_run_id"] == run_id
        assert wait_status(client, new["id"], _ENDED)["status"] == "completed"

    # Cancel by ids of a finished run: a per-run conflict.
    body = client.post("/api/pipeline_runs/cancel", json={"ids": [finished.id]}).json()
    assert body["results"][0]["error"]["type"] == "InvalidTransitionError"
    # Filter defaults: retry selects failed and cancelled runs; nothing to cancel now.
    nothing = client.post("/api/pipeline_runs/cancel", json={"filter": {"pipeline": "chain"}})
    assert nothing.json() == {"matched": 0, "succeeded": 0, "results": []}

    error_of(client.post("/api/pipeline_runs/cancel", json={}), 422)
    error_of(client.post("/api/pipeline_runs/cancel", json={"ids": [1], "filter": {}}), 422)
    error_of(client.post("/api/pipeline_runs/retry", json={"ids": [0]}), 422)
    error_of(
        client.post("/api/pipeline_runs/retry", json={"filter": {"status": ["sleeping"]}}), 422
    )
