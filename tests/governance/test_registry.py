"""The registry's rules and its Python API, over real runs on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest

import pipetrail as pt
from pipetrail.client import Run
from pipetrail.errors import IntegrityError, NotFoundError, UsageError
from pipetrail.governance import registry
from pipetrail.provenance.environment import current_user
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter

FLOW = """
@pt.step
def train(lr: float = 0.1):
    pt.log_metric("auc", 0.8 + lr)
    pt.log_artifact({"weights": [lr, 2 * lr]}, "model")
    return lr

@pt.step
def calibrate(train):
    pt.log_artifact({"calibrated": train}, "model")
    return train

@pt.step(foreach="train_rows")
def shard(train, train_rows: list = [1, 2]):
    pt.log_artifact({"shard": train_rows}, "piece")
    return train_rows

@pt.step
def publish(calibrate, fail: bool = False):
    if fail:
        raise RuntimeError("publish failed")
    return calibrate

pipeline = pt.Pipeline("churn", [train, calibrate, shard, publish])
"""


@pytest.fixture
def flow(flow_file: FlowWriter) -> Path:
    return flow_file(FLOW)


def _run(ws: Workspace, flow: Path, **params: object) -> Run:
    run = pt.run(load_pipeline_file(flow), params, executor="inline", workspace=ws)
    assert isinstance(run, Run)
    return run


def test_register_and_load_by_alias_version_and_latest(workspace: Workspace, flow: Path) -> None:
    first, second = _run(workspace, flow, lr=0.1), _run(workspace, flow, lr=0.2)
    v1 = pt.register_model("churn", first, step="train")  # into the handle's stores
    v2 = pt.register_model(
        "churn", f"{second.pathspec}/train/0", description="lr 0.2", workspace=workspace
    )
    assert (v1.version, v2.version) == (1, 2) and v2.description == "lr 0.2"
    assert v1.run.pathspec == first.pathspec and v1.task.pathspec == f"{first.pathspec}/train/0"
    assert v1.hash == first["train"].task.outputs["model"].hash  # type: ignore[union-attr]
    assert v1.metrics == {"auc": pytest.approx(0.9)}
    assert v1.promote("production", reason="first") is None, "no policy: moved at once"
    assert v1.aliases == ("production",)
    assert pt.load_model("churn@production", workspace=workspace) == {"weights": [0.1, 0.2]}
    assert pt.load_model("churn/2", workspace=workspace) == {"weights": [0.2, 0.4]}
    assert pt.load_model("churn", workspace=workspace) == {"weights": [0.2, 0.4]}, "latest"
    handle = pt.ModelVersion("churn@production", workspace=workspace)
    assert handle == v1 and handle.aliases == ("production",) and handle.artifact.name == "model"
    for ref, message in [
        ("churn@staging", "no alias 'staging'; its aliases: production"),
        ("churn/9", "has no version 9"),
        ("other", "no model named 'other'"),
    ]:
        with pytest.raises(NotFoundError, match=message):
            pt.load_model(ref, workspace=workspace)
    for ref in ("churn/x", "churn/0", "churn/1@production", "9churn", "churn@latest"):
        with pytest.raises(UsageError, match="invalid model reference"):
            pt.load_model(ref, workspace=workspace)


def test_a_model_whose_bytes_changed_is_not_loaded(workspace: Workspace, flow: Path) -> None:
    version = pt.register_model("churn", _run(workspace, flow), step="train", workspace=workspace)
    fs, path = fsspec.core.url_to_fs(workspace.cas.path_of(version.hash))
    fs.pipe_file(path, b'{"weights": [666]}')
    with pytest.raises(IntegrityError):
        pt.load_model("churn/1", workspace=workspace)


def test_what_a_registration_means_or_why_it_is_refused(workspace: Workspace, flow: Path) -> None:
    run = _run(workspace, flow)
    store = workspace.store
    refusals: list[tuple[dict[str, object], type[Exception], str]] = [
        ({"run_or_task": run.pathspec}, UsageError, "output of steps calibrate, train of .*--step"),
        ({"run_or_task": run.id, "artifact": "nope"}, NotFoundError, "no output artifact 'nope'"),
        ({"run_or_task": run.id, "step": "shard", "artifact": "piece"}, UsageError, "2 tasks"),
        ({"run_or_task": 999, "step": "train"}, NotFoundError, "999"),
        ({"run_or_task": f"other/{run.id}"}, NotFoundError, "not a run of 'other'"),
        ({"run_or_task": run.id, "step": "train", "name": "bad name"}, UsageError, "model name"),
    ]
    for kwargs, error, message in refusals:
        args: dict[str, object] = {"name": "churn", "artifact": "model", **kwargs}
        with pytest.raises(error, match=message):
            registry.register(store, actor="ana", **args)  # type: ignore[arg-type]
    assert store.list_models() == [], "nothing written"
    piece = registry.register(
        store, "pieces", f"{run.pathspec}/shard/1", artifact="piece", actor="ana"
    )
    assert pt.load_model("pieces/1", workspace=workspace) == {"shard": 2}
    assert piece.created_by == "ana"


def test_the_approval_flow_with_two_users(workspace: Workspace, flow: Path) -> None:
    store = workspace.store
    pt.register_model("churn", _run(workspace, flow), step="train", workspace=workspace)
    registry.set_policy(store, "churn", "production", 1, actor="admin")
    opened = pt.ModelVersion("churn/1", workspace=workspace).promote("production", reason="x")
    assert opened is not None and opened.required == 1 and opened.status == "pending"
    withdrawn = registry.decide(store, opened.id, "withdrawn", actor=current_user(), comment=None)
    assert withdrawn.status == "withdrawn" and opened.requested_by == current_user()
    done = registry.promote(store, "churn", 1, "production", actor="ana", reason="auc 0.9")
    assert not done.moved and done.request is not None and done.request.required == 1
    request = done.request.id
    with pytest.raises(UsageError, match=r"'ana' requested promotion \d+ and may not approve it"):
        registry.decide(store, request, "approved", actor="ana", comment="mine")
    with pytest.raises(UsageError, match=r"'ana' requested promotion \d+ and may not reject it"):
        registry.decide(store, request, "rejected", actor="ana", comment=None)
    with pytest.raises(UsageError, match="only 'ana', who requested it, may withdraw"):
        registry.decide(store, request, "withdrawn", actor="bo", comment=None)
    assert store.get_promotion(request).decisions == (), "a refusal writes nothing"
    approved = registry.decide(store, request, "approved", actor="bo", comment="checked")
    assert approved.status == "approved"
    assert store.get_model("churn").aliases == {"production": 1}
    with pytest.raises(UsageError, match="is approved already"):
        registry.decide(store, request, "approved", actor="cy", comment=None)
    history = [
        (e.action, e.actor, e.message)
        for e in store.governance_events(model="churn")
        if e.action not in ("model_registered", "promotion_withdrawn")
    ]
    assert history == [
        ("policy_set", "admin", None),
        ("promotion_requested", current_user(), "x"),
        ("promotion_requested", "ana", "auc 0.9"),
        ("promotion_approved", "bo", "checked"),
        ("alias_moved", "bo", "checked"),
    ]


def test_a_rejection_closes_and_the_alias_stays(workspace: Workspace, flow: Path) -> None:
    store = workspace.store
    for lr in (0.1, 0.2):
        pt.register_model("churn", _run(workspace, flow, lr=lr), step="train", workspace=workspace)
    registry.promote(store, "churn", 1, "production", actor="ana", reason=None)
    registry.set_policy(store, "churn", "production", 2, actor="admin")
    opened = registry.promote(store, "churn", 2, "production", actor="ana", reason="newer")
    assert opened.previous == 1 and opened.request is not None
    rejected = registry.decide(store, opened.request.id, "rejected", actor="bo", comment="no")
    assert rejected.status == "rejected"
    assert store.get_model("churn").aliases == {"production": 1}
    with pytest.raises(UsageError, match="points at version 1 already"):
        registry.promote(store, "churn", 1, "production", actor="ana", reason=None)
    registry.set_policy(store, "churn", "production", 0, actor="admin")
    moved = registry.promote(store, "churn", 2, "production", actor="ana", reason="no policy")
    assert moved.moved and store.get_model("churn").aliases == {"production": 2}


def test_a_version_of_a_run_that_did_not_complete_is_not_promoted(
    workspace: Workspace, flow: Path
) -> None:
    store = workspace.store
    failed = _run(workspace, flow, fail=True)
    assert failed.status == "failed"
    pt.register_model("churn", failed, step="train", workspace=workspace)
    store.set_model_policy("churn", "staging", 1, "admin")
    for alias in ("production", "staging"):
        with pytest.raises(UsageError, match=f"run {failed.pathspec}, which is failed, not"):
            registry.promote(store, "churn", 1, alias, actor="ana", reason=None)
    assert store.get_model("churn").aliases == {} and store.promotions() == []
    with pytest.raises(UsageError, match="reserved"):
        registry.promote(store, "churn", 1, "v2", actor="ana", reason=None)
    with pytest.raises(UsageError, match="--approvers must be from 0 to 100"):
        registry.set_policy(store, "churn", "production", -1, actor="admin")
