"""The metadata store's model registry and governance log, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

import pipetrail as pt
from pipetrail.core.model import ArtifactLink
from pipetrail.errors import NotFoundError, UsageError
from pipetrail.storage.metadata.governance import GovernanceEvent, NewModelVersion
from pipetrail.storage.metadata.sql.store import SqlMetadataStore
from pipetrail.storage.metadata.sql.tables import governance_event, model_version
from pipetrail.workspace import Workspace


@pt.step
def train(lr: float = 0.1):  # type: ignore[no-untyped-def]
    pt.log_artifact({"weights": [lr, 2 * lr]}, "model")
    return lr


PIPELINE = pt.Pipeline("churn", [train])


def _model_link(ws: Workspace, lr: float = 0.1) -> ArtifactLink:
    run = pt.run(PIPELINE, {"lr": lr}, executor="inline", workspace=ws)
    return next(k for k in ws.store.links(run.id) if k.name == "model")


def _new(link: ArtifactLink, actor: str = "ana", model: str = "churn") -> NewModelVersion:
    return NewModelVersion(
        model=model,
        run_id=link.run_id,
        task_id=link.task_id,
        artifact_name=link.name,
        artifact_key=link.artifact.key,
        actor=actor,
        description="first try",
    )


def test_versions_are_numbered_from_one_and_read_back(workspace: Workspace) -> None:
    store = workspace.store
    link = _model_link(workspace)
    first = store.register_model_version(_new(link))
    second = store.register_model_version(_new(_model_link(workspace, 0.2), actor="bo"))
    assert (first.version, second.version) == (1, 2) and first.ref == "churn/1"
    assert first.artifact_key == link.artifact.key and first.task_id == link.task_id
    assert first.created_by == "ana" and first.created_at.tzinfo is not None
    model = store.get_model("churn")
    assert model.latest_version == 2 and model.created_by == "ana" and model.aliases == {}
    assert [m.name for m in store.list_models()] == ["churn"]
    assert [v.version for v in store.model_versions("churn")] == [1, 2]
    assert store.get_model_version("churn", 2) == second
    assert store.model_versions_of_runs([link.run_id]) == [first]
    assert store.model_versions_of_runs([]) == []
    events = store.governance_events(model="churn", action="model_registered")
    assert [(e.version, e.actor, e.run_id) for e in events] == [
        (1, "ana", link.run_id),
        (2, "bo", second.run_id),
    ]


def test_unknown_names_raise_not_found(workspace: Workspace) -> None:
    store = workspace.store
    with pytest.raises(NotFoundError, match="no model named 'nope'"):
        store.get_model("nope")
    store.register_model_version(_new(_model_link(workspace)))
    with pytest.raises(NotFoundError, match="'churn' has no version 7; its versions are 1 to 1"):
        store.get_model_version("churn", 7)
    with pytest.raises(NotFoundError, match="no promotion request 99"):
        store.get_promotion(99)
    link = _model_link(workspace)
    with pytest.raises(NotFoundError, match=f"run {link.run_id} has no task 12345"):
        store.register_model_version(
            NewModelVersion("other", link.run_id, 12345, "model", link.artifact.key, "ana")
        )
    assert [m.name for m in store.list_models()] == ["churn"], "nothing written"


def test_aliases_move_and_the_history_is_the_events(workspace: Workspace) -> None:
    store = workspace.store
    for lr in (0.1, 0.2):
        store.register_model_version(_new(_model_link(workspace, lr)))
    store.move_alias("churn", "production", 1, "ana", "first")
    store.move_alias("churn", "production", 2, "bo", "better")
    store.move_alias("churn", "staging", 2, "bo", None)
    assert store.get_model("churn").aliases == {"production": 2, "staging": 2}
    assert store.get_model_version("churn", 2).aliases == ("production", "staging")
    store.move_alias("churn", "staging", None, "bo", "retired")
    with pytest.raises(NotFoundError, match="no alias 'staging' to remove"):
        store.move_alias("churn", "staging", None, "bo", None)
    assert store.get_model("churn").aliases == {"production": 2}
    history = [
        (e.action, e.alias, e.version, e.actor, e.message, e.detail.get("previous"))
        for e in store.governance_events(model="churn")
        if e.action.startswith("alias_")
    ]
    assert history == [
        ("alias_moved", "production", 1, "ana", "first", None),
        ("alias_moved", "production", 2, "bo", "better", 1),
        ("alias_moved", "staging", 2, "bo", None, None),
        ("alias_removed", "staging", None, "bo", "retired", 2),
    ]


def test_an_approval_completes_the_request_and_moves_the_alias(workspace: Workspace) -> None:
    store = workspace.store
    store.register_model_version(_new(_model_link(workspace)))
    store.set_model_policy("churn", "production", 2, "admin")
    assert store.get_model("churn").policies == {"production": 2}
    request = store.open_promotion("churn", 1, "production", "auc 0.91", "ana", 2)
    assert request.status == "pending" and request.required == 2 and request.version == 1
    with pytest.raises(UsageError, match=f"request {request.id} .* is pending already"):
        store.open_promotion("churn", 1, "production", "again", "ana", 2)
    once = store.decide_promotion(request.id, "approved", "bo", "looks right")
    assert once.status == "pending" and [d.actor for d in once.decisions] == ["bo"]
    with pytest.raises(UsageError, match=r"'bo' approved request \d+ already"):
        store.decide_promotion(request.id, "approved", "bo", None)
    assert store.get_model("churn").aliases == {}
    done = store.decide_promotion(request.id, "approved", "cy", None)
    assert done.status == "approved" and done.closed_at is not None
    assert store.get_model("churn").aliases == {"production": 1}
    assert store.promotions(status="pending") == []
    assert store.promotions(model="churn") == [done] == [store.get_promotion(request.id)]
    with pytest.raises(UsageError, match="is approved already"):
        store.decide_promotion(request.id, "rejected", "dee", None)
    actions = [(e.action, e.actor, e.request_id) for e in store.governance_events(model="churn")]
    assert actions[1:] == [
        ("policy_set", "admin", None),
        ("promotion_requested", "ana", request.id),
        ("promotion_approved", "bo", request.id),
        ("promotion_approved", "cy", request.id),
        ("alias_moved", "cy", request.id),
    ]


def test_a_rejection_or_withdrawal_closes_the_request(workspace: Workspace) -> None:
    store = workspace.store
    store.register_model_version(_new(_model_link(workspace)))
    rejected = store.open_promotion("churn", 1, "production", None, "ana", 1)
    closed = store.decide_promotion(rejected.id, "rejected", "bo", "auc too low")
    assert closed.status == "rejected" and closed.decisions[0].comment == "auc too low"
    withdrawn = store.open_promotion("churn", 1, "production", None, "ana", 1)
    assert store.decide_promotion(withdrawn.id, "withdrawn", "ana", None).status == "withdrawn"
    assert store.get_model("churn").aliases == {}
    assert [r.status for r in store.promotions(model="churn")] == ["rejected", "withdrawn"]


def test_the_log_takes_events_of_other_parts(workspace: Workspace) -> None:
    store = workspace.store
    at = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    store.record_governance_event(
        GovernanceEvent(0, at, "admin", "run_deleted", run_id=41, detail={"bytes": 10})
    )
    store.record_governance_event(GovernanceEvent(0, at, "admin", "token_created", message="x"))
    deleted = store.governance_events(run_id=41)
    assert [(e.action, e.at, e.detail) for e in deleted] == [("run_deleted", at, {"bytes": 10})]
    assert [e.action for e in store.governance_events(limit=1)] == ["token_created"]
    with pytest.raises(NotFoundError):
        store.record_governance_event(GovernanceEvent(0, at, "a", "policy_set", model="nope"))
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(governance_event)).scalar() == 2


def test_concurrent_registrations_get_distinct_numbers(workspace: Workspace) -> None:
    link = _model_link(workspace)
    stores = [SqlMetadataStore(workspace.settings.db_url) for _ in range(6)]
    versions: list[int] = []
    failures: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def register(store: SqlMetadataStore) -> None:
        try:
            start.wait()
            for _ in range(3):
                versions.append(store.register_model_version(_new(link, model="race")).version)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=register, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert failures == []
    assert sorted(versions) == list(range(1, 19))
    with workspace.store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(model_version)).scalar() == 18


def test_concurrent_decisions_move_the_alias_once_each(workspace: Workspace) -> None:
    store = workspace.store
    for lr in (0.1, 0.2):
        store.register_model_version(_new(_model_link(workspace, lr)))
    store.set_model_policy("churn", "production", 1, "admin")
    store.set_model_policy("churn", "staging", 2, "admin")
    # Two requests for one alias, and one request that needs both approvers.
    one = store.open_promotion("churn", 1, "production", None, "ana", 1).id
    two = store.open_promotion("churn", 2, "production", None, "ana", 1).id
    both = store.open_promotion("churn", 2, "staging", None, "ana", 2).id
    jobs = [(one, "bo"), (two, "cy"), (both, "bo"), (both, "cy")]
    stores = [SqlMetadataStore(workspace.settings.db_url) for _ in jobs]
    failures: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def decide(store: SqlMetadataStore, request: int, actor: str) -> None:
        try:
            start.wait()
            store.decide_promotion(request, "approved", actor, None)
        except BaseException as exc:
            failures.append(exc)

    threads = [
        threading.Thread(target=decide, args=(s, r, a))
        for s, (r, a) in zip(stores, jobs, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for other in stores:
        other.close()
    assert failures == []
    assert [store.get_promotion(r).status for r in (one, two, both)] == ["approved"] * 3
    moves = store.governance_events(model="churn", action="alias_moved")
    production = [(e.version, e.detail["previous"]) for e in moves if e.alias == "production"]
    assert sorted(production) in ([(1, None), (2, 1)], [(1, 2), (2, None)]), production
    assert store.get_model("churn").aliases["production"] == production[-1][0]
    assert [(e.version, e.request_id) for e in moves if e.alias == "staging"] == [(2, both)]
