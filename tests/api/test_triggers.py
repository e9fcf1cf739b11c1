"""Triggers over REST: define, list, change, pause, fire and delete; runs with their trigger and SLA."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from pipetrail.core.model import RunRecord
from pipetrail.core.status import RunStatus
from pipetrail.scheduling.fire import fire_now
from pipetrail.scheduling.service import TriggerService
from pipetrail.scheduling.spec import definition_from
from pipetrail.server import create_app
from pipetrail.storage.metadata.base import NewAlert, RunQuery
from pipetrail.workspace import Workspace
from tests.api.conftest import error_of, wait_status
from tests.conftest import FlowWriter

_ENDED = ("completed", "failed", "cancelled")

ADD = """
@pt.step
def add(x: int = 1, y: int = 2):
    pt.log_metric("sum", x + y)
    return x + y

pipeline = pt.Pipeline("adder", [add])
"""

MARKER = "imported_outside.txt"
OUTSIDE = f"""
from pathlib import Path

Path(__file__).with_name({MARKER!r}).write_text("imported")

@pt.step
def one():
    return 1

pipeline = pt.Pipeline("outsider", [one])
"""


@pytest.fixture
def api(sqlite_workspace: Workspace, tmp_path: Path) -> Iterator[TestClient]:
    """A local-mode app over a SQLite store whose project directory is ``tmp_path``."""
    app = create_app(sqlite_workspace, project_dir=tmp_path)
    with TestClient(app) as test_client:
        yield test_client
    assert app.state.pipetrail.launcher.wait(30)


@pytest.fixture
def adder(flow_file: FlowWriter) -> Path:
    return flow_file(ADD, name="adder_flow")


def _create(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = client.post("/api/triggers", json=fields)
    assert response.status_code == 201, response.text
    trigger: dict[str, Any] = response.json()["trigger"]
    assert response.headers["location"] == f"/api/triggers/{quote(fields['name'], safe='')}"
    return trigger


def _names(client: TestClient) -> list[str]:
    response = client.get("/api/triggers")
    assert response.status_code == 200, response.text
    return [t["name"] for t in response.json()["triggers"]]


def _run_count(ws: Workspace) -> int:
    return len(ws.store.list_runs(RunQuery(limit=1000)))


def test_create_list_fire_and_read_the_run(
    client: TestClient, workspace: Workspace, adder: Path
) -> None:
    """The create / list / fire path on SQLite and PostgreSQL."""
    made = _create(
        client,
        name="nightly adder",
        pipeline="adder_flow.py",  # relative: from the project directory
        cron="0 2 * * *",
        params={"x": 5},
        tags=["nightly"],
        sla="1h",
    )
    assert made["definition"] == {
        "name": "nightly adder",
        "pipeline": f"{adder.resolve()}:adder",
        "cron": "0 2 * * *",
        "params": {"x": 5},
        "tags": ["nightly"],
        "sla": "1h",
    }
    assert made["kind"] == "cron" and made["paused"] is False
    assert made["schedule"] and made["last_run"] is None and made["sla_missed"] == 0
    next_at = datetime.fromisoformat(made["next_at"])
    assert next_at > datetime.now(UTC) and (next_at.hour, next_at.minute) == (2, 0)
    assert made["runs_url"] == "/api/triggers/nightly%20adder/runs"

    listed = client.get("/api/triggers").json()["triggers"]
    assert [t["name"] for t in listed] == ["nightly adder"]
    assert listed[0]["definition"] == made["definition"]

    fired = client.post(
        "/api/triggers/nightly adder/runs",
        json={"params": {"y": 10}, "variables": {"env": "test"}, "executor": "inline"},
    )
    assert fired.status_code == 201, fired.text
    run = fired.json()["pipeline_run"]
    assert fired.headers["location"] == f"/api/pipeline_runs/{run['id']}"
    assert run["status"] in ("initial", "running")
    # Recorded before the answer, bound to a tick of its own, with its cause.
    stored = workspace.store.get_run(run["id"])
    assert stored.trigger == "manual" and stored.cause is not None
    assert stored.cause.trigger == "nightly adder"
    assert run["trigger"]["kind"] == "manual" and run["trigger"]["name"] == "nightly adder"
    assert run["trigger"]["upstream"] is None
    assert run["sla"] is not None and run["sla"]["state"] == "pending"

    done = wait_status(client, run["id"], _ENDED)
    assert done["status"] == "completed", done["error"]
    assert done["params"] == {"x": 5, "y": 10} and done["metrics"] == {"sum": 15.0}
    assert done["variables"]["env"] == "test" and "scheduled_at" in done["variables"]
    assert done["tags"] == ["nightly"]
    assert datetime.fromisoformat(done["trigger"]["scheduled_at"]) <= datetime.fromisoformat(
        done["created_at"]
    )

    runs = client.get("/api/triggers/nightly adder/runs").json()
    assert [r["id"] for r in runs["pipeline_runs"]] == [run["id"]] and runs["count"] == 1
    by_filter = client.get("/api/pipeline_runs", params={"trigger": "nightly adder"}).json()
    assert [r["id"] for r in by_filter["pipeline_runs"]] == [run["id"]]
    assert (
        client.get("/api/pipeline_runs", params={"trigger": "other"}).json()["pipeline_runs"] == []
    )

    detail = client.get("/api/triggers/nightly adder").json()["trigger"]
    assert detail["last_run"] == {
        "id": run["id"],
        "pathspec": run["pathspec"],
        "status": "completed",
    }
    assert len(detail["ticks"]) == 1
    tick = detail["ticks"][0]
    assert tick["run"]["id"] == run["id"] and tick["skip_reason"] is None
    assert tick["note"] == "fired: manual"
    assert detail["alerts"] == []
    assert len(detail["upcoming"]) == 10
    assert detail["upcoming"][0] == detail["next_at"]


def test_an_api_trigger_records_its_runs_as_api(api: TestClient, adder: Path) -> None:
    made = _create(api, name="hook", pipeline=str(adder), api=True)
    assert made["kind"] == "api" and made["next_at"] is None
    assert made["definition"]["api"] is True
    fired = api.post("/api/triggers/hook/runs", json={"executor": "inline"})
    assert fired.status_code == 201, fired.text
    run = fired.json()["pipeline_run"]
    assert run["trigger"]["kind"] == "api" and run["trigger"]["name"] == "hook"
    assert run["sla"] is None
    assert wait_status(api, run["id"], _ENDED)["status"] == "completed"
    # A fire without a body takes the trigger's own parameters.
    bare = api.post("/api/triggers/hook/runs")
    assert bare.status_code == 201, bare.text
    done = wait_status(api, bare.json()["pipeline_run"]["id"], _ENDED)
    assert done["params"] == {"x": 1, "y": 2}


def test_refused_creates_write_nothing(
    api: TestClient, sqlite_workspace: Workspace, adder: Path, tmp_path: Path
) -> None:
    outside_dir = tmp_path.parent / f"{tmp_path.name}_outside"
    outside_dir.mkdir()
    outside = outside_dir / "outsider.py"
    outside.write_text("import pipetrail as pt\n" + OUTSIDE)
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        # A pipeline file outside the project directory: 403, and it is never imported.
        ({"pipeline": str(outside), "cron": "* * * * *"}, 403, "ForbiddenFileError", "outsider"),
        ({"pipeline": "../x.py", "cron": "* * * * *"}, 403, "ForbiddenFileError", "../x.py"),
        ({"pipeline": "missing.py", "every": "1h"}, 403, "ForbiddenFileError", "missing.py"),
        # Bad fields: one line naming the field.
        ({"pipeline": "adder_flow.py"}, 422, "UsageError", "exactly one of"),
        (
            {"pipeline": "adder_flow.py", "cron": "0 2 * * *", "every": "1h"},
            422,
            "UsageError",
            "cron, every",
        ),
        ({"pipeline": "adder_flow.py", "every": "soon"}, 422, "DefinitionError", "'soon'"),
        ({"pipeline": "adder_flow.py", "cron": "61 * * * *"}, 422, "UsageError", "61"),
        (
            {"pipeline": "adder_flow.py", "once_at": "2030-01-01T00:00:00"},
            422,
            "UsageError",
            "time zone",
        ),
        (
            {"pipeline": "adder_flow.py", "cron": "0 2 * * *", "start": "2030-01-01T00:00:00Z"},
            422,
            "UsageError",
            "'start'",
        ),
        (
            {"pipeline": "adder_flow.py", "cron": "0 2 * * *", "timezone": "Mars/Olympus"},
            422,
            "UsageError",
            "Mars/Olympus",
        ),
        (
            {"pipeline": "adder_flow.py:nope", "cron": "0 2 * * *"},
            422,
            "PipelineLoadError",
            "nope",
        ),
        # Schedules whose next ticks cannot be computed (stored, they would break listings).
        ({"pipeline": "adder_flow.py", "cron": "0 2 30 2 *"}, 422, "UsageError", "real date"),
        ({"pipeline": "adder_flow.py", "every": 1e-9}, 422, "UsageError", "at least 1s"),
        (
            {"pipeline": "adder_flow.py", "every": "1d", "start": "9999-12-31T00:00:00Z"},
            422,
            "UsageError",
            "9999",
        ),
        # Parameters the pipeline does not have, or of the wrong type.
        (
            {"pipeline": "adder_flow.py", "cron": "0 2 * * *", "params": {"z": 1}},
            422,
            "ParameterError",
            "'z'",
        ),
        (
            {"pipeline": "adder_flow.py", "cron": "0 2 * * *", "params": {"x": "many"}},
            422,
            "ParameterError",
            "x",
        ),
        # Refused by the schema.
        ({"pipeline": "adder_flow.py", "cron": "0 2 * * *", "colour": "red"}, 422, "", "colour"),
        ({"pipeline": "adder_flow.py", "cron": "0 2 * * *", "overlap": "queue"}, 422, "", ""),
        ({"pipeline": "adder_flow.py", "cron": "0 2 * * *", "max_concurrent": 0}, 422, "", ""),
        ({"cron": "0 2 * * *"}, 422, "ValidationError", "pipeline"),
    ]
    for fields, status, type_name, needle in cases:
        error = error_of(api.post("/api/triggers", json={"name": "bad", **fields}), status)
        if type_name:
            assert error["type"] == type_name, (fields, error)
        assert needle in error["message"], (fields, error)
        assert "\n" not in error["message"]
    error = error_of(api.post("/api/triggers", json={"name": "", "pipeline": "adder_flow.py"}), 422)
    assert "name" in error["message"]
    assert _names(api) == [] and sqlite_workspace.store.list_triggers() == []
    assert not (outside_dir / MARKER).exists()

    _create(api, name="taken", pipeline="adder_flow.py", every="1h")
    error = error_of(
        api.post(
            "/api/triggers",
            json={"name": "taken", "pipeline": "adder_flow.py", "cron": "* * * * *"},
        ),
        409,
    )
    assert "'taken'" in error["message"] and "exists" in error["message"]
    stored = sqlite_workspace.store.get_trigger("taken").definition
    assert stored.kind == "interval" and stored.cron is None


def test_patch_merges_onto_the_current_fields(
    api: TestClient, sqlite_workspace: Workspace, adder: Path
) -> None:
    _create(api, name="t", pipeline="adder_flow.py", cron="0 2 * * *", params={"x": 3})
    changed = api.patch("/api/triggers/t", json={"params": {"y": 4}, "sla": "30m"})
    assert changed.status_code == 200, changed.text
    definition = changed.json()["trigger"]["definition"]
    assert definition["cron"] == "0 2 * * *" and definition["params"] == {"y": 4}
    assert definition["sla"] == "30m"

    # Another kind replaces the kind; null goes back to the default.
    changed = api.patch(
        "/api/triggers/t", json={"every": "15m", "start": "2030-01-01T00:00:00Z", "sla": None}
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()["trigger"]
    assert body["kind"] == "interval" and "cron" not in body["definition"]
    assert body["definition"]["every"] == "15m" and "sla" not in body["definition"]
    assert datetime.fromisoformat(body["next_at"]) == datetime(2030, 1, 1, tzinfo=UTC)
    # And back to cron: every's start goes with it.
    changed = api.patch("/api/triggers/t", json={"cron": "30 6 * * 1"})
    assert changed.status_code == 200, changed.text
    assert set(changed.json()["trigger"]["definition"]) == {"name", "pipeline", "cron", "params"}

    before = sqlite_workspace.store.get_trigger("t")
    refusals: list[tuple[dict[str, Any], int, str]] = [
        ({"name": "renamed"}, 422, "cannot change"),
        ({"params": {"nope": 1}}, 422, "'nope'"),
        ({"cron": "not a cron"}, 422, "not a cron"),
        ({"pipeline": "/etc/passwd.py"}, 403, "/etc/passwd.py"),
        ({"on": "failed"}, 422, "'on'"),
        ({"colour": "red"}, 422, "colour"),
    ]
    for body_in, status, needle in refusals:
        error = error_of(api.patch("/api/triggers/t", json=body_in), status)
        assert needle in error["message"], (body_in, error)
    assert sqlite_workspace.store.get_trigger("t") == before
    # Naming itself is allowed.
    assert api.patch("/api/triggers/t", json={"name": "t"}).status_code == 200
    assert error_of(api.patch("/api/triggers/ghost", json={"sla": "1h"}), 404)["type"] == (
        "NotFoundError"
    )


def test_pause_resume_delete_and_a_paused_fire(
    api: TestClient, sqlite_workspace: Workspace, adder: Path
) -> None:
    _create(api, name="p", pipeline="adder_flow.py", every="1h")
    paused = api.post("/api/triggers/p/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["trigger"]["paused"] is True
    assert paused.json()["trigger"]["next_at"] is None

    error = error_of(api.post("/api/triggers/p/runs", json={"executor": "inline"}), 409)
    assert "paused" in error["message"] and "/api/triggers/p/resume" in error["message"]
    assert _run_count(sqlite_workspace) == 0
    record = sqlite_workspace.store.get_trigger("p")
    assert sqlite_workspace.store.ticks(record.id) == []

    resumed = api.post("/api/triggers/p/resume")
    assert resumed.status_code == 200 and resumed.json()["trigger"]["paused"] is False
    assert resumed.json()["trigger"]["next_at"] is not None

    deleted = api.delete("/api/triggers/p")
    assert deleted.status_code == 204 and deleted.content == b""
    assert _names(api) == []
    for method, path in [
        ("get", "/api/triggers/p"),
        ("delete", "/api/triggers/p"),
        ("post", "/api/triggers/p/pause"),
        ("post", "/api/triggers/p/resume"),
        ("post", "/api/triggers/p/runs"),
        ("get", "/api/triggers/p/runs"),
    ]:
        error = error_of(api.request(method, path), 404)
        assert "'p'" in error["message"], (method, path)


def test_a_fire_with_bad_params_records_nothing(
    api: TestClient, sqlite_workspace: Workspace, adder: Path
) -> None:
    _create(api, name="f", pipeline="adder_flow.py", api=True)
    record = sqlite_workspace.store.get_trigger("f")
    for params, needle in (({"nope": 1}, "'nope'"), ({"x": "many"}, "x")):
        error = error_of(api.post("/api/triggers/f/runs", json={"params": params}), 422)
        assert error["type"] == "ParameterError" and needle in error["message"]
    error_of(api.post("/api/triggers/f/runs", json={"executor": "dask"}), 422)
    error_of(api.post("/api/triggers/f/runs", json={"params": {}, "extra": 1}), 422)
    assert _run_count(sqlite_workspace) == 0
    assert sqlite_workspace.store.ticks(record.id) == []


def test_a_trigger_defined_outside_the_project_is_not_fired_or_changed(
    api: TestClient, sqlite_workspace: Workspace, tmp_path: Path
) -> None:
    # Defined by the CLI, from a folder the server does not serve.
    outside_dir = tmp_path.parent / f"{tmp_path.name}_elsewhere"
    outside_dir.mkdir()
    outside = outside_dir / "outsider.py"
    outside.write_text("import pipetrail as pt\n" + OUTSIDE)
    service = TriggerService(sqlite_workspace.store)
    service.create(definition_from({"name": "o", "pipeline": str(outside), "api": True}))
    (outside_dir / MARKER).unlink(missing_ok=True)

    error = error_of(api.post("/api/triggers/o/runs", json={}), 403)
    assert "'o'" in error["message"] and error["type"] == "ForbiddenFileError"
    error = error_of(api.patch("/api/triggers/o", json={"sla": "1h"}), 403)
    assert error["type"] == "ForbiddenFileError"
    assert not (outside_dir / MARKER).exists()
    assert _run_count(sqlite_workspace) == 0
    assert sqlite_workspace.store.get_trigger("o").definition.sla_s is None
    # Reading, pausing and deleting it load nothing and are allowed.
    assert api.get("/api/triggers/o").status_code == 200
    assert api.post("/api/triggers/o/pause").status_code == 200
    assert api.delete("/api/triggers/o").status_code == 204


def test_upcoming_fire_times_soonest_first(api: TestClient, adder: Path) -> None:
    _create(api, name="hourly", pipeline="adder_flow.py", cron="0 * * * *")
    _create(api, name="daily", pipeline="adder_flow.py", cron="30 3 * * *")
    _create(api, name="hook", pipeline="adder_flow.py", api=True)
    _create(api, name="off", pipeline="adder_flow.py", every="1m")
    assert api.post("/api/triggers/off/pause").status_code == 200

    response = api.get("/api/triggers/upcoming", params={"limit": 30})
    assert response.status_code == 200, response.text
    upcoming = response.json()["upcoming"]
    assert len(upcoming) == 30
    times = [datetime.fromisoformat(u["at"]) for u in upcoming]
    assert times == sorted(times)
    assert {u["trigger"] for u in upcoming} == {"hourly", "daily"}
    assert all(
        t.minute == 0 for u, t in zip(upcoming, times, strict=True) if u["trigger"] == "hourly"
    )
    assert times[0] - datetime.now(UTC) <= timedelta(hours=1)
    assert len(api.get("/api/triggers/upcoming").json()["upcoming"]) == 20
    error_of(api.get("/api/triggers/upcoming", params={"limit": 0}), 422)


def _seed_run(ws: Workspace, adder: Path, trigger: str, *, missed: bool) -> RunRecord:
    """A run of a trigger, ended, its SLA (if it has one) decided as the scheduler decides it."""
    record = ws.store.get_trigger(trigger)
    engine = ws.engine(executor="inline")
    run, request = fire_now(ws.store, engine, record)
    engine.execute(run, request)
    if run.sla_due_at is not None:
        assert ws.store.settle_sla(run.id, "missed" if missed else "met", datetime.now(UTC))
    return ws.store.get_run(run.id)


def test_run_listing_by_trigger_and_sla_missed(
    api: TestClient, sqlite_workspace: Workspace, adder: Path
) -> None:
    _create(api, name="a", pipeline="adder_flow.py", api=True, sla="1h")
    _create(api, name="b", pipeline="adder_flow.py", api=True)
    late = _seed_run(sqlite_workspace, adder, "a", missed=True)
    on_time = _seed_run(sqlite_workspace, adder, "a", missed=False)
    other = _seed_run(sqlite_workspace, adder, "b", missed=False)

    def ids(**params: Any) -> list[int]:
        response = api.get("/api/pipeline_runs", params=params)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["pipeline_runs"]]

    assert ids(trigger="a") == [on_time.id, late.id]
    assert ids(trigger="b") == [other.id]
    assert ids(sla_missed="true") == [late.id]
    assert ids(trigger="b", sla_missed="true") == []
    assert ids(sla_missed="false") == [other.id, on_time.id, late.id]
    error_of(api.get("/api/pipeline_runs", params={"sla_missed": "maybe"}), 422)

    shown = api.get(f"/api/pipeline_runs/{late.id}").json()["pipeline_run"]
    assert shown["sla"]["state"] == "missed" and shown["sla"]["missed_at"] is not None
    assert shown["trigger"] == {
        "kind": "api",  # an api trigger's runs say so, fired by whatever means
        "name": "a",
        "scheduled_at": shown["trigger"]["scheduled_at"],
        "upstream": None,
    }
    assert api.get("/api/triggers").json()["triggers"][0]["sla_missed"] == 1

    # Paged like the run listing.
    first = api.get("/api/triggers/a/runs", params={"limit": 1}).json()
    assert [r["id"] for r in first["pipeline_runs"]] == [on_time.id] and first["next_cursor"]
    second = api.get(
        "/api/triggers/a/runs", params={"limit": 1, "cursor": first["next_cursor"]}
    ).json()
    assert [r["id"] for r in second["pipeline_runs"]] == [late.id]
    assert second["next_cursor"] is None


def test_runs_not_started_by_a_trigger_say_what_started_them(
    api: TestClient, sqlite_workspace: Workspace, adder: Path
) -> None:
    response = api.post(
        "/api/pipelines/adder/runs", json={"file": "adder_flow.py", "executor": "inline"}
    )
    assert response.status_code == 201, response.text
    run = response.json()["pipeline_run"]
    assert run["trigger"] == {"kind": "api", "name": None, "scheduled_at": None, "upstream": None}
    assert run["sla"] is None
    wait_status(api, run["id"], _ENDED)
    assert sqlite_workspace.store.get_run(run["id"]).status is RunStatus.COMPLETED


def test_trigger_writes_need_the_token_off_loopback(
    sqlite_workspace: Workspace, tmp_path: Path, adder: Path
) -> None:
    app = create_app(sqlite_workspace, token="s3cret", host="0.0.0.0", project_dir=tmp_path)
    body = {"name": "t", "pipeline": "adder_flow.py", "api": True}
    with TestClient(app) as anonymous:
        assert error_of(anonymous.post("/api/triggers", json=body), 401)
        assert error_of(anonymous.get("/api/triggers"), 401)
    assert sqlite_workspace.store.list_triggers() == []
    with TestClient(app, headers={"Authorization": "Bearer s3cret"}) as allowed:
        assert allowed.post("/api/triggers", json=body).status_code == 201
    with TestClient(app) as anonymous:
        for method, path in [
            ("post", "/api/triggers/t/runs"),
            ("post", "/api/triggers/t/pause"),
            ("patch", "/api/triggers/t"),
            ("delete", "/api/triggers/t"),
        ]:
            error_of(anonymous.request(method, path, json={}), 401)
    assert sqlite_workspace.store.get_trigger("t").paused is False
    assert _run_count(sqlite_workspace) == 0


def test_a_cross_site_trigger_write_is_refused_in_local_mode(
    api: TestClient, sqlite_workspace: Workspace, adder: Path
) -> None:
    body = {"name": "t", "pipeline": "adder_flow.py", "api": True}
    error_of(api.post("/api/triggers", json=body, headers={"Origin": "https://evil.example"}), 403)
    error_of(api.post("/api/triggers", json=body, headers={"Sec-Fetch-Site": "cross-site"}), 403)
    assert sqlite_workspace.store.list_triggers() == []


def test_any_text_names_a_trigger(api: TestClient, adder: Path) -> None:
    made = _create(api, name="team/nightly?", pipeline="adder_flow.py", api=True)
    assert made["url"] == "/api/triggers/team%2Fnightly%3F"
    for path in (made["url"], "/api/triggers/team/nightly%3F"):
        response = api.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.json()["trigger"]["name"] == "team/nightly?"
    fired = api.post(f"{made['url']}/runs", json={"executor": "inline"})
    assert fired.status_code == 201, fired.text
    wait_status(api, fired.json()["pipeline_run"]["id"], _ENDED)
    runs = api.get(made["runs_url"]).json()["pipeline_runs"]
    assert [r["id"] for r in runs] == [fired.json()["pipeline_run"]["id"]]
    assert api.post(f"{made['url']}/pause").json()["trigger"]["paused"] is True
    # A trigger named like a route under another: each method finds its own.
    _create(api, name="x/pause", pipeline="adder_flow.py", api=True)
    assert api.get("/api/triggers/x/pause").json()["trigger"]["name"] == "x/pause"
    assert api.delete(made["url"]).status_code == 204
    assert _names(api) == ["x/pause"]


def test_detail_shows_skipped_ticks_and_alerts(
    api: TestClient, sqlite_workspace: Workspace, adder: Path
) -> None:
    _create(api, name="d", pipeline="adder_flow.py", every="1h", sla="5m")
    store = sqlite_workspace.store
    record = store.get_trigger("d")
    at = datetime(2026, 1, 2, 3, 0, tzinfo=UTC)
    assert store.claim_tick(record.id, at, note="catch-up", skip_reason="runs at max_concurrent")
    now = datetime.now(UTC)
    store.enqueue_alerts(
        [
            NewAlert(
                dedup_key="sla:1",
                event="sla_missed",
                notifier="ops-hook",
                payload={"trigger": "d"},
                trigger_name="d",
            )
        ],
        now,
    )
    [due] = store.due_alerts(now + timedelta(seconds=1), claim_s=60)
    store.alert_attempted(due.id, at=now, error="HTTP 500 from the hook", retry_at=None)

    detail = api.get("/api/triggers/d").json()["trigger"]
    assert detail["ticks"] == [
        {
            "scheduled_at": at.isoformat().replace("+00:00", "Z"),
            "claimed_at": detail["ticks"][0]["claimed_at"],
            "run": None,
            "skip_reason": "runs at max_concurrent",
            "note": "catch-up",
        }
    ]
    [alert] = detail["alerts"]
    assert alert["event"] == "sla_missed" and alert["notifier"] == "ops-hook"
    assert alert["state"] in ("failed", "pending") and alert["attempts"] == 1
    assert alert["last_error"] == "HTTP 500 from the hook" and alert["run_id"] is None
