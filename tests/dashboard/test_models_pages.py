"""The model registry's pages (models, one model, approvals) over HTTP against a real store
(SQLite and PostgreSQL): what they list, the 404 page, and that user text is escaped."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from html import unescape
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import pipetrail as pt
from pipetrail.client import Run
from pipetrail.dashboard import create_router
from pipetrail.dashboard.models import describe_event
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.storage.metadata.governance import (
    GovernanceEvent,
    ModelVersionRecord,
    NewModelVersion,
)
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

TRAIN = """
@pt.step
def model(k: int = 2):
    pt.log_metric("accuracy", 0.5 + k / 100)
    pt.log_metric("loss", 1.0 / k)
    return {"weights": [k]}

pipeline = pt.Pipeline("trainer", [model])
"""

#: User text that would run if a page did not escape it.
SCRIPT = "<script>alert('x')</script>"
#: A model name that needs quoting in a URL and escaping in HTML.
ODD = "team/<b>churn</b> & co"
#: What an empty cell shows.
DASH = "\N{EN DASH}"


def train(ws: Workspace, flow_file: FlowWriter, *ks: int) -> list[Run]:
    """Runs of a one-step pipeline whose output artifact ``model`` is the thing to register."""
    pipeline = load_pipeline_file(flow_file(TRAIN, name="trainer_flow"))
    return [pt.run(pipeline, {"k": k}, executor="inline", workspace=ws) for k in ks]


def register(ws: Workspace, name: str, run: Run, actor: str) -> ModelVersionRecord:
    """The next version of ``name``: run's ``model`` output, recorded through the store."""
    (link,) = [link for link in ws.store.links(run.id) if link.direction == "output"]
    return ws.store.register_model_version(
        NewModelVersion(
            model=name,
            run_id=run.id,
            task_id=link.task_id,
            artifact_name=link.name,
            artifact_key=link.artifact.key,
            actor=actor,
            description=f"k={run.params['k']}",
        )
    )


@dataclass(frozen=True)
class Seeded:
    runs: list[Run]
    versions: list[ModelVersionRecord]
    approved: int
    rejected: int
    pending: int


@pytest.fixture
def seeded(workspace: Workspace, flow_file: FlowWriter) -> Seeded:
    """``churn`` v1..v3 (production needs one approval): a request approved (production → v2),
    one rejected, one pending; ``staging`` moved at once; ``ODD`` v1 with a request pending."""
    ws = workspace
    store = ws.store
    runs = train(ws, flow_file, 2, 3, 4)
    versions = [register(ws, "churn", r, "alice") for r in runs]
    store.set_model_policy("churn", "production", 1, "admin")
    store.move_alias("churn", "production", 1, "alice", "first model")
    store.move_alias("churn", "staging", 3, "alice", "try the newest")
    approved = store.open_promotion("churn", 2, "production", "better accuracy", "alice", 1)
    store.decide_promotion(approved.id, "approved", "bob", "looks good")
    rejected = store.open_promotion("churn", 3, "production", "newest", "alice", 1)
    store.decide_promotion(rejected.id, "rejected", "bob", "loss too high")
    pending = store.open_promotion("churn", 3, "production", SCRIPT, "carol", 1)
    register(ws, ODD, runs[0], "dave")
    store.set_model_policy(ODD, "production", 2, "admin")
    store.open_promotion(ODD, 1, "production", "first one", "dave", 2)
    return Seeded(runs, versions, approved.id, rejected.id, pending.id)


@pytest.fixture
def client(workspace: Workspace) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(create_router(workspace, csrf_for=lambda request: "token-123"))
    with TestClient(app) as test_client:
        yield test_client


def _rows(html: str, table: str, key: str) -> dict[str, str]:
    """The rows of the table ``data-role=table``, by their ``data-<key>`` (unescaped)."""
    body = html.split(f'data-role="{table}"', 1)[1].split("</table>", 1)[0]
    return {
        unescape(m.group(1)): m.group(0)
        for m in re.finditer(rf'<tr data-{key}="([^"]*)".*?</tr>', body, flags=re.S)
    }


def _cell(row: str, role: str) -> str:
    """The text of the cell ``data-role=role`` in ``row``, tags dropped, spaces squeezed."""
    inner = row.split(f'data-role="{role}"', 1)[1].split(">", 1)[1].split("</td>", 1)[0]
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", inner)).split())


# -- /models ------------------------------------------------------------------------------------


def test_models_page_lists_each_model_with_aliases_and_pending(
    client: TestClient, seeded: Seeded
) -> None:
    response = client.get("/models")
    assert response.status_code == 200, response.text
    html = response.text
    rows = _rows(html, "models-table", "model")
    assert list(rows) == ["churn", ODD]
    churn = rows["churn"]
    assert _cell(churn, "latest") == "v3"
    assert _cell(churn, "aliases") == "production → v2 staging → v3"
    assert _cell(churn, "pending") == "1"
    assert "alice" in churn and "<time datetime=" in churn
    assert f'href="/models/{quote(ODD, safe="")}"' in rows[ODD]
    assert _cell(rows[ODD], "aliases") == "none" and _cell(rows[ODD], "pending") == "1"
    assert "<b>churn</b>" not in html and "team/&lt;b&gt;churn&lt;/b&gt; &amp; co" in html
    assert 'href="/models" aria-current="page"' in html
    assert 'href="/approvals"' in html


def test_models_page_without_models(client: TestClient) -> None:
    response = client.get("/models")
    assert response.status_code == 200
    assert "No models yet" in response.text


# -- /models/{name} -----------------------------------------------------------------------------


def test_model_page_shows_versions_with_runs_metrics_and_aliases(
    client: TestClient, seeded: Seeded
) -> None:
    response = client.get("/models/churn")
    assert response.status_code == 200, response.text
    html = response.text
    versions = _rows(html, "versions-table", "version")
    assert list(versions) == ["3", "2", "1"]
    v1, v2, v3 = (versions[str(n)] for n in (1, 2, 3))
    run = seeded.runs[0]
    assert f'href="/pipelines/trainer/runs/{run.id}"' in v1
    assert _cell(v1, "run") == f"trainer #{run.id} completed step model"
    key = seeded.versions[0].artifact_key
    assert _cell(v1, "artifact") == f"model {key[:12]}" and f'title="{key}"' in v1
    assert _cell(v1, "metrics") == "accuracy 0.52 loss 0.5"
    assert _cell(v3, "metrics") == "accuracy 0.54 loss 0.25"
    assert _cell(v2, "version-aliases") == "production"
    assert _cell(v3, "version-aliases") == "staging"
    assert _cell(v1, "version-aliases") == DASH
    assert "k=2" in v1 and "alice" in v1
    policies = _rows(html, "policies", "alias")
    assert list(policies) == ["production"] and ">1</td>" in policies["production"]
    pending = _rows(html, "pending-table", "request")
    assert list(pending) == [str(seeded.pending)]
    assert _cell(pending[str(seeded.pending)], "promotion") == "production → v3 now v2"
    assert _cell(pending[str(seeded.pending)], "approvals") == "0 / 1"
    assert 'href="/models" aria-current="page"' in html


def test_model_page_alias_history_is_newest_first_with_who_and_why(
    client: TestClient, seeded: Seeded
) -> None:
    html = client.get("/models/churn").text
    body = html.split('data-role="history"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'<tr data-action="(\w+)".*?</tr>', body, flags=re.S)
    assert rows == [
        "promotion_requested",  # the pending one
        "promotion_rejected",
        "promotion_requested",
        "alias_moved",  # by the approval, in its transaction
        "promotion_approved",
        "promotion_requested",
        "alias_moved",  # staging
        "alias_moved",  # production, first
        "policy_set",
    ]
    lines = [
        (_cell(r, "actor"), _cell(r, "summary"), _cell(r, "message"))
        for r in re.findall(r"<tr data-action=.*?</tr>", body, flags=re.S)
    ]
    p, r, a = seeded.pending, seeded.rejected, seeded.approved
    assert lines == [
        ("carol", f"requested request #{p}: production → v3", SCRIPT),
        ("bob", f"rejected request #{r} rejected: production → v3", "loss too high"),
        ("alice", f"requested request #{r}: production → v3", "newest"),
        ("bob", "moved production → v2 (was v1)", "looks good"),
        ("bob", f"approved request #{a} approved: production → v2", "looks good"),
        ("alice", f"requested request #{a}: production → v2", "better accuracy"),
        ("alice", "moved staging → v3 (new alias)", "try the newest"),
        ("alice", "moved production → v1 (new alias)", "first model"),
        ("admin", "policy production needs 1 approval", DASH),
    ]


def test_unknown_model_is_the_dashboards_404_page(client: TestClient, seeded: Seeded) -> None:
    response = client.get("/models/nope")
    assert response.status_code == 404
    assert "<h1>Not found</h1>" in response.text and "nope" in response.text
    assert 'href="/pipeline-runs"' in response.text  # the page, not a JSON error
    odd = client.get("/models/" + quote("<b>gone</b>", safe=""))
    assert odd.status_code == 404 and "<b>gone</b>" not in odd.text
    assert client.get("/models/" + quote("a\x00b", safe="")).status_code == 400
    assert client.get("/models/" + "x" * 300).status_code == 400
    assert client.get("/models/", follow_redirects=False).headers["location"] == "/models"


def test_a_model_name_with_slashes_and_markup_opens_escaped(
    client: TestClient, seeded: Seeded
) -> None:
    response = client.get(f"/models/{quote(ODD, safe='')}")
    assert response.status_code == 200, response.text
    html = response.text
    assert "<b>churn</b>" not in html
    assert '<h1 data-role="model-name">team/&lt;b&gt;churn&lt;/b&gt; &amp; co</h1>' in html
    assert f'href="/api/models/{quote(ODD, safe="")}"' in html
    assert list(_rows(html, "versions-table", "version")) == ["1"]


# -- /approvals ---------------------------------------------------------------------------------


def test_approvals_page_lists_pending_requests_with_buttons(
    client: TestClient, seeded: Seeded
) -> None:
    response = client.get("/approvals")
    assert response.status_code == 200, response.text
    html = response.text
    rows = _rows(html, "pending-table", "request")
    assert len(rows) == 2
    first, second = rows.values()
    assert next(iter(rows)) == str(seeded.pending)  # oldest first
    assert _cell(first, "promotion") == "production → v3 now v2"
    assert _cell(first, "requester").startswith("carol ")
    assert _cell(first, "reason") == SCRIPT
    assert _cell(first, "approvals") == "0 / 1"
    assert _cell(second, "promotion") == "production → v1 new alias"
    assert _cell(second, "approvals") == "0 / 2"
    for row in rows.values():
        assert 'data-action="approve-promotion"' in row and 'data-action="reject-promotion"' in row
        assert 'name="comment"' in row
    assert f'href="/models/{quote(ODD, safe="")}"' in second
    # The buttons' script and the CSRF token it sends back.
    assert '<meta name="pipetrail-csrf" content="token-123">' in html
    assert re.search(r'<script src="/static/js/models\.js\?v=\w+">', html)
    assert 'id="approvals-list" data-refresh="list"' in html
    assert 'href="/approvals" aria-current="page"' in html


def test_decisions_show_on_the_approvals_page_until_the_request_closes(
    client: TestClient, workspace: Workspace, seeded: Seeded
) -> None:
    request = next(p for p in workspace.store.promotions(status="pending") if p.model == ODD)
    workspace.store.decide_promotion(request.id, "approved", "erin", SCRIPT)
    row = _rows(client.get("/approvals").text, "pending-table", "request")[str(request.id)]
    assert _cell(row, "approvals") == "1 / 2 approved by erin"
    workspace.store.decide_promotion(request.id, "approved", "frank", None)
    html = client.get("/approvals").text
    assert list(_rows(html, "pending-table", "request")) == [str(seeded.pending)]
    model = client.get(f"/models/{quote(ODD, safe='')}").text
    assert "No requests wait for approval." in model
    assert 'data-version="1"' in model.split('data-role="aliases"', 1)[1].split("</dd>", 1)[0]


def test_approvals_page_without_requests(client: TestClient) -> None:
    html = client.get("/approvals").text
    assert "No requests wait for approval." in html


def test_user_text_is_escaped_on_every_page(
    client: TestClient, workspace: Workspace, seeded: Seeded
) -> None:
    workspace.store.decide_promotion(seeded.pending, "rejected", "bob", SCRIPT + " no")
    for path in ("/models", "/models/churn", "/approvals", f"/models/{quote(ODD, safe='')}"):
        html = client.get(path).text
        assert "<script>alert" not in html, path
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; no" in client.get("/models/churn").text


# -- the history in words -----------------------------------------------------------------------

AT = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("action", "fields", "kind", "summary"),
    [
        ("alias_moved", {"version": 4, "detail": {"previous": 3}}, "moved", "prod → v4 (was v3)"),
        (
            "alias_moved",
            {"version": 1, "detail": {"previous": None}},
            "moved",
            "prod → v1 (new alias)",
        ),
        ("alias_removed", {"detail": {"previous": 2}}, "removed", "prod removed (was v2)"),
        ("policy_set", {"detail": {"approvers": 2}}, "policy", "prod needs 2 approvals"),
        ("policy_set", {"detail": {"approvers": 0}}, "policy", "prod moves without approval"),
        (
            "promotion_requested",
            {"version": 2, "request_id": 7},
            "requested",
            "request #7: prod → v2",
        ),
        (
            "promotion_approved",
            {"version": 2, "request_id": 7, "detail": {"status": "pending"}},
            "approved",
            "request #7 approved: prod → v2; it waits for more approvals",
        ),
        (
            "promotion_withdrawn",
            {"version": 2, "request_id": 7},
            "withdrawn",
            "request #7 withdrawn: prod → v2",
        ),
    ],
)
def test_history_entries_in_words(
    action: str, fields: dict[str, Any], kind: str, summary: str
) -> None:
    event = GovernanceEvent(
        id=1, at=AT, actor="a", action=action, model="m", alias="prod", **fields
    )
    entry = describe_event(event)
    assert (entry.kind, entry.summary) == (kind, summary)
