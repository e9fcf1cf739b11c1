"""The read routes on real runs: pipelines, runs with filters and pages, block runs, outputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from tests.api.conftest import Seeded, error_of


def test_pipelines_list_and_detail(client: TestClient, seeded: Seeded) -> None:
    body = client.get("/api/pipelines").json()
    by_name = {p["name"]: p for p in body["pipelines"]}
    assert list(by_name) == ["failing", "rich"]
    rich = by_name["rich"]
    assert rich["run_count"] == 2
    assert rich["run_counts"]["completed"] == 2 and rich["run_counts"]["failed"] == 0
    assert rich["latest_run_id"] == seeded.second.id
    assert by_name["failing"]["latest_status"] == "failed"

    detail = client.get("/api/pipelines/rich").json()["pipeline"]
    assert [s["name"] for s in detail["steps"]] == ["load", "features", "train"]
    assert detail["dag"] == {
        "nodes": ["load", "features", "train"],
        "edges": [
            {"source": "load", "target": "features"},
            {"source": "features", "target": "train"},
        ],
    }
    assert {p["name"]: p["default"] for p in detail["params"]} == {
        "rows": 150,
        "source": "iris",
        "lr": 0.1,
        "epochs": 5,
    }
    assert detail["file"] == str(seeded.rich_file.resolve())
    assert [v["version"] for v in detail["versions"]] == [seeded.first.version]
    assert detail["versions"][0]["run_count"] == 2

    error = error_of(client.get("/api/pipelines/nope"), 404)
    assert error["type"] == "NotFoundError" and "'nope'" in error["message"]
    error_of(client.get("/api/pipelines/bad%20name"), 422)


def test_run_list_filters(client: TestClient, seeded: Seeded) -> None:
    def ids(**params: Any) -> list[int]:
        response = client.get("/api/pipeline_runs", params=params)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["pipeline_runs"]]

    first, second, failed = seeded.first.id, seeded.second.id, seeded.failed.id
    assert ids() == [failed, second, first]
    assert ids(pipeline="rich") == [second, first]
    assert ids(status="failed") == [failed]
    assert ids(status=["failed", "completed"]) == [failed, second, first]
    assert ids(tag="exp") == [failed, first]
    assert ids(tag=["exp", "phase:one"]) == [first]
    assert ids(since=(seeded.second.created_at).isoformat()) == [failed, second]
    # A time without an offset is UTC; one far in the future selects nothing.
    future = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None).isoformat()
    assert ids(since=future) == []
    # q: pipeline name, tags, parameter values, error messages, ignoring case.
    assert ids(q="FAILING") == [failed]
    assert ids(q="penguins") == [second]
    assert ids(q="phase:") == [second, first]
    assert ids(q="row 7") == [failed]
    assert ids(q="rows") == [second, first]  # a parameter name
    assert ids(q="zebra") == []
    assert ids(q="exp", pipeline="rich") == [first]

    run = client.get("/api/pipeline_runs", params={"pipeline": "rich"}).json()["pipeline_runs"][1]
    assert run["pathspec"] == f"rich/{first}"
    assert run["params"] == {"rows": 150, "source": "iris", "lr": 0.1, "epochs": 5}
    assert run["tags"] == ["exp", "phase:one"]
    assert any(t.startswith("pipeline_version:") for t in run["system_tags"])
    assert run["status"] == "completed" and run["duration_s"] >= 0
    assert run["block_runs_url"] == f"/api/pipeline_runs/{first}/block_runs"

    error_of(client.get("/api/pipeline_runs", params={"status": "done"}), 422)
    error_of(client.get("/api/pipeline_runs", params={"since": "yesterday"}), 422)
    error_of(client.get("/api/pipeline_runs", params={"limit": 0}), 422)
    error_of(client.get("/api/pipeline_runs", params={"tag": "a\x00b"}), 422)


def test_run_list_pages_with_a_cursor(client: TestClient, seeded: Seeded) -> None:
    all_ids = [seeded.failed.id, seeded.second.id, seeded.first.id]
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 1}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/api/pipeline_runs", params=params).json()
        seen += [r["id"] for r in body["pipeline_runs"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == all_ids and pages == 3
    # Pages of a text search, and of a filtered listing.
    page = client.get("/api/pipeline_runs", params={"q": "rich", "limit": 1}).json()
    assert [r["id"] for r in page["pipeline_runs"]] == [seeded.second.id]
    rest = client.get(
        "/api/pipeline_runs", params={"q": "rich", "limit": 1, "cursor": page["next_cursor"]}
    ).json()
    assert [r["id"] for r in rest["pipeline_runs"]] == [seeded.first.id]
    assert rest["next_cursor"] is None
    error = error_of(client.get("/api/pipeline_runs", params={"cursor": "garbage!"}), 422)
    assert "cursor" in error["message"]


def test_run_list_passes_the_search_language_through(client: TestClient, seeded: Seeded) -> None:
    # The store's filter and order_by are being built; the route hands the text over as is,
    # and a filter the store rejects is a 4xx, never a 5xx.
    response = client.get(
        "/api/pipeline_runs",
        params={"filter": "params.lr = 0.5", "order_by": ["created desc"]},
    )
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        ids = [r["id"] for r in response.json()["pipeline_runs"]]
        assert seeded.second.id in ids
    broken = client.get("/api/pipeline_runs", params={"filter": "params.lr >>> ("})
    assert broken.status_code in (200, 422), broken.text


def test_one_run_with_metrics_and_history(client: TestClient, seeded: Seeded) -> None:
    run_id = seeded.first.id
    run = client.get(f"/api/pipeline_runs/{run_id}").json()["pipeline_run"]
    assert run["id"] == run_id and run["pipeline"] == "rich"
    assert run["metrics"] == {"accuracy": 0.9, "loss": 0.1 / 5, "val/loss": 0.5}
    assert [e["status"] for e in run["events"] if e["block_run_id"] is None] == [
        "initial",
        "running",
        "completed",
    ]
    assert run["dag"]["name"] == "rich"
    assert run["code_key"] and run["environment_hash"]

    failed = client.get(f"/api/pipeline_runs/{seeded.failed.id}").json()["pipeline_run"]
    assert failed["status"] == "failed" and "bad data in row 7" in failed["error"]

    error = error_of(client.get("/api/pipeline_runs/999999"), 404)
    assert error["type"] == "NotFoundError" and "999999" in error["message"]
    assert error_of(client.get("/api/pipeline_runs/abc"), 422)["type"] == "ValidationError"
    error_of(client.get("/api/pipeline_runs/0"), 422)
    error_of(client.get(f"/api/pipeline_runs/{2**40}"), 422)


def test_block_runs_of_a_run_and_one_block_run(client: TestClient, seeded: Seeded) -> None:
    body = client.get(f"/api/pipeline_runs/{seeded.failed.id}/block_runs").json()
    by_step = {b["step"]: b for b in body["block_runs"]}
    assert [b["step"] for b in body["block_runs"]] == ["root", "boom", "after"]
    boom = by_step["boom"]
    assert boom["status"] == "failed" and boom["exception_type"] == "ValueError"
    assert boom["exception_message"] == "bad data in row 7"
    assert boom["pathspec"] == f"failing/{seeded.failed.id}/boom/0"
    assert by_step["after"]["status"] == "upstream_failed"
    assert by_step["after"]["failed_upstream"] == "boom"
    assert by_step["root"]["resources"]["peak_memory_bytes"] > 0

    detail = client.get(f"/api/block_runs/{boom['id']}").json()["block_run"]
    assert "ValueError: bad data in row 7" in detail["traceback"]
    assert [i["name"] for i in detail["inputs"]] == ["root"]
    assert detail["inputs"][0]["producer_block_run_id"] == by_step["root"]["id"]
    assert detail["outputs"] == []
    root = client.get(f"/api/block_runs/{by_step['root']['id']}").json()["block_run"]
    [produced] = root["outputs"]
    assert "key" not in produced, "the content hash is named hash, as in the client and CLI"
    assert detail["inputs"][0]["hash"] == produced["hash"]
    assert produced["download_url"] == f"/api/artifacts/{produced['hash']}"

    logs = client.get(f"/api/block_runs/{boom['id']}/logs").json()
    assert logs == {"block_run_id": boom["id"], "stdout": "about to fail\n", "stderr": ""}

    error_of(client.get(f"/api/pipeline_runs/{2**31 - 1}/block_runs"), 404)
    error_of(client.get("/api/block_runs/999999"), 404)
    error_of(client.get("/api/block_runs/999999/logs"), 404)
    error_of(client.get("/api/block_runs/999999/outputs"), 404)


def test_logs_tail(client: TestClient, seeded: Seeded) -> None:
    tasks = client.get(f"/api/pipeline_runs/{seeded.first.id}/block_runs").json()["block_runs"]
    load = next(t for t in tasks if t["step"] == "load")
    full = client.get(f"/api/block_runs/{load['id']}/logs").json()["stdout"]
    assert full == "loading 150 rows from iris\nsecond line\n"
    tail = client.get(f"/api/block_runs/{load['id']}/logs", params={"tail": 1}).json()
    assert tail["stdout"] == "second line\n"


def test_output_previews(client: TestClient, seeded: Seeded) -> None:
    tasks = client.get(f"/api/pipeline_runs/{seeded.first.id}/block_runs").json()["block_runs"]
    ids = {t["step"]: t["id"] for t in tasks}

    table = client.get(f"/api/block_runs/{ids['load']}/outputs", params={"sample_count": 3})
    [load] = table.json()["outputs"]
    assert load["type"] == "table" and load["shape"] == [150, 3]
    assert load["sample_data"]["columns"] == ["x", "y", "label"]
    assert load["sample_data"]["rows"] == [
        {"x": 0, "y": 0.0, "label": "b"},
        {"x": 1, "y": 0.5, "label": "a"},
        {"x": 2, "y": 1.0, "label": "b"},
    ]
    assert load["truncated"] is True
    assert load["download_url"] == f"/api/artifacts/{load['hash']}"

    [array] = client.get(
        f"/api/block_runs/{ids['features']}/outputs", params={"sample_count": 2}
    ).json()["outputs"]
    assert array["type"] == "array" and array["shape"] == [150, 4]
    assert array["sample_data"] == [[0.0, 1.0], [4.0, 5.0]]

    outputs = client.get(f"/api/block_runs/{ids['train']}/outputs").json()["outputs"]
    by_name = {o["name"]: o for o in outputs}
    assert by_name["train"]["type"] == "object"
    assert by_name["train"]["sample_data"] == {"lr": 0.1, "epochs": 5, "weights": [0.1, 0.2]}
    report = by_name["report.txt"]
    assert report["type"] == "text" and report["content_type"] == "text/plain"
    assert report["sample_data"].startswith("line 0\nline 1\n")
    assert report["sample_data"].count("\n") == 100 and report["truncated"] is True
    assert by_name["plot.png"]["type"] == "image"
    assert by_name["plot.png"]["sample_data"] is None

    error_of(client.get(f"/api/block_runs/{ids['load']}/outputs?sample_count=0"), 422)


def test_artifacts_stream_with_their_content_type(client: TestClient, seeded: Seeded) -> None:
    tasks = client.get(f"/api/pipeline_runs/{seeded.first.id}/block_runs").json()["block_runs"]
    ids = {t["step"]: t["id"] for t in tasks}
    train = client.get(f"/api/block_runs/{ids['train']}").json()["block_run"]["outputs"]
    features = client.get(f"/api/block_runs/{ids['features']}").json()["block_run"]["outputs"]
    outputs = {o["name"]: o for o in train + features}

    text = client.get(outputs["report.txt"]["download_url"])
    assert text.status_code == 200
    assert text.headers["content-type"].startswith("text/plain")
    assert text.text.startswith("line 0\n") and len(text.content) == outputs["report.txt"]["size"]
    assert text.headers["x-content-type-options"] == "nosniff"
    assert 'filename="report.txt"' in text.headers["content-disposition"]

    png = client.get(outputs["plot.png"]["download_url"])
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")
    assert png.headers["content-disposition"].startswith("inline")

    npy = client.get(outputs["features"]["download_url"])
    assert npy.status_code == 200
    assert npy.headers["content-type"] == "application/octet-stream"
    assert npy.headers["content-disposition"].startswith("attachment")
    assert 'filename="features.npy"' in npy.headers["content-disposition"]
    assert npy.content.startswith(b"\x93NUMPY")

    forced = client.get(outputs["plot.png"]["download_url"], params={"download": "true"})
    assert forced.headers["content-disposition"].startswith("attachment")


def test_artifact_keys_cannot_leave_the_store(client: TestClient, seeded: Seeded) -> None:
    attempts = [
        "../../../etc/passwd",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "%2e%2e",
        "..",
        "..%5c..%5cwindows",
        "%252e%252e%252fetc",
        "/etc/passwd",
        "A" * 64,
        "a" * 63,
        "a" * 65,
        "0" * 62 + "/x",
        "0" * 64 + "%00",
    ]
    for attempt in attempts:
        response = client.get(f"/api/artifacts/{attempt}")
        assert response.status_code in (404, 422), (attempt, response.status_code)
        assert b"root:" not in response.content
        assert response.json()["error"]["type"] in ("NotFoundError", "ValidationError")
    # A well-formed key that the store never recorded.
    error = error_of(client.get("/api/artifacts/" + "0" * 64), 404)
    assert "0" * 64 in error["message"]


def test_unknown_routes_and_methods_use_the_envelope(client: TestClient) -> None:
    assert error_of(client.get("/api/nothing-here"), 404)["type"] == "NotFoundError"
    assert error_of(client.delete("/api/pipeline_runs/1"), 405)["type"] == "MethodNotAllowedError"
    spec = client.get("/openapi.json").json()
    assert "/api/pipeline_runs" in spec["paths"]
    assert client.get("/docs").status_code == 200
