"""A client's listing reads its runs' tags and creation facts when first asked, and loses nothing.

``pt.search_runs``, ``pt.list_runs`` and iterating ``pt.Pipeline`` list runs with the store's
``list_runs(..., lazy=True)``: the rows hold a listed run's identity, status, times, user,
params, error and every column that changes while it runs; its tags and what it recorded when
created (host, trigger, param types, variables, git, code, environment, version, DAG, cause,
SLA due time) are read the first time one record asks, for every record of the listing in one
query. The tests prove, on SQLite and PostgreSQL, that every field is still there and equal to
the run read alone, that reading them all costs the same statements for 3 runs as for 40, and
what a reader sees when the store changes between the listing and the read.
"""

from __future__ import annotations

import dataclasses
import pickle
import threading
from typing import Any

import pytest

import pipetrail as pt
from pipetrail.core.model import RunRecord
from pipetrail.core.status import RunStatus
from pipetrail.errors import NotFoundError
from pipetrail.storage.metadata.base import RunQuery
from pipetrail.workspace import Workspace
from tests.client.test_batch_loading import _counted
from tests.storage.test_run_records import _fields, _full_run, _new


def _listed(workspace: Workspace, **query: Any) -> list[RunRecord]:
    return workspace.store.list_runs(RunQuery(limit=None, **query), lazy=True)


def test_a_lazily_listed_record_is_the_run_read_alone_field_by_field_and_type_by_type(
    workspace: Workspace,
) -> None:
    upstream_id, run_id = _full_run(workspace)
    reader = workspace.reader()
    alone = workspace.store.get_run(run_id)
    listings = {
        "store": _listed(workspace, filter="status = 'running'"),
        "search_runs": [r.record for r in pt.search_runs("status = 'running'", reader=reader)],
        "list_runs": [
            r.record for r in pt.list_runs(pipeline="records", all_namespaces=True, reader=reader)
        ][:1],
    }
    for how, records in listings.items():
        (listed,) = records
        assert listed.id == run_id, how
        assert _fields(listed) == _fields(alone), how
        for name, value in _fields(listed).items():
            assert type(value) is type(getattr(alone, name)), (how, name)
        assert listed == alone and alone == listed
    # The fields that matter most, by value (the upstream run gave its pathspec to the cause).
    listed = listings["store"][0]
    assert listed.user_tags == ("alpha", "zeta") and listed.system_tags == ("user:ana",)
    assert listed.git == {"commit": "abc123", "dirty": False} and listed.code_key == "f" * 64
    assert listed.environment_hash == "e" * 16 and listed.origin_run_id == upstream_id
    assert listed.cause is not None and listed.cause.upstream_pathspec == f"records/{upstream_id}"
    assert listed.timeout_s == 90.5 and listed.runner_pid == 4242 and listed.trigger == "after"
    assert listed.dag["steps"][0]["name"] == "only" and listed.version == alone.version
    assert listed.param_types == {"lr": "float", "opt": "dict", "on": "bool"}


def test_reading_every_field_of_a_listing_costs_the_same_statements_for_3_runs_as_for_40(
    workspace: Workspace,
) -> None:
    for _ in range(40):
        workspace.store.create_run(_new())

    def read(limit: int) -> tuple[int, int, int]:
        with _counted(workspace) as listing:
            records = workspace.store.list_runs(RunQuery(limit=limit), lazy=True)
            listed = [(r.id, r.status, r.params, r.created_at, r.user, r.error) for r in records]
        with _counted(workspace) as tags:
            tagged = [(r.user_tags, r.system_tags) for r in records]
        with _counted(workspace) as created:
            rest = [_fields(r) for r in records]
        assert len(listed) == len(tagged) == len(rest) == limit
        assert all(r == _fields(workspace.store.get_run(r["id"])) for r in rest)
        return len(listing), len(tags), len(created)

    few, many = read(3), read(40)
    assert few == many
    listing, tags, created = many
    assert listing <= 2, "the rows of the listing (and a BEGIN): nothing read per field"
    assert tags <= 2, "one query (and its BEGIN) for the tags of every listed run"
    assert created <= 3, "one query for what they recorded when created, one for their DAGs"


def test_a_listed_runs_tags_are_read_when_first_asked_for_then_kept_as_pt_run_keeps_them(
    workspace: Workspace,
) -> None:
    """A listed run's tags are the ones ``pt.Run(pathspec)`` reads at the moment they are first
    asked for (they were not read with the listing); from then on both keep what they read
    until ``refresh()`` or a change made through the handle."""
    store, reader = workspace.store, workspace.reader()
    first = store.create_run(_new(user_tags=("alpha",)))
    second = store.create_run(_new(user_tags=("beta",)))
    listed = {r.id: r for r in pt.list_runs(all_namespaces=True, reader=reader)}
    store.change_tags(first.id, add=["gamma"])
    assert listed[first.id].user_tags == pt.Run(first.pathspec, reader=reader).user_tags
    assert listed[first.id].user_tags == {"alpha", "gamma"}
    assert listed[second.id].user_tags == {"beta"}
    # Read now, and kept: a later change shows after refresh(), as it does for pt.Run.
    opened = pt.Run(first.pathspec, reader=reader)
    store.change_tags(first.id, remove=["alpha"])
    assert listed[first.id].user_tags == opened.user_tags == {"alpha", "gamma"}
    assert listed[first.id].refresh().user_tags == opened.refresh().user_tags == {"gamma"}
    # A change made through a listed handle shows at once, in that handle.
    listed[second.id].add_tag("delta")
    assert listed[second.id].user_tags == {"beta", "delta"}
    assert listed[second.id].system_tags == {"user:ana"}


def test_the_store_s_own_listing_is_as_of_the_listing(workspace: Workspace) -> None:
    """Without ``lazy`` (the dashboard, the API, the CLI, retention) every field is read with
    the rows: a change made after the listing does not show in it."""
    run = workspace.store.create_run(_new(user_tags=("alpha",)))
    (listed,) = workspace.store.list_runs(RunQuery())
    workspace.store.change_tags(run.id, add=["beta"])
    assert listed.user_tags == ("alpha",)


def test_a_field_read_later_of_a_run_deleted_since_the_listing_is_not_found(
    workspace: Workspace,
) -> None:
    store = workspace.store
    gone = store.create_run(_new(git={"commit": "abc"}))
    kept = store.create_run(_new(git={"commit": "def"}))
    listed = {r.id: r for r in _listed(workspace)}
    store.delete_run(gone.id, actor="test", refuse=lambda facts: None)
    # What the listing read is there; what it reads later is not, as pt.Run of it is not.
    assert listed[gone.id].status is RunStatus.INITIAL and listed[gone.id].params["lr"] == 0.25
    for name in ("user_tags", "git", "dag", "host"):
        with pytest.raises(NotFoundError, match=rf"run with id {gone.id} .* deleted after"):
            getattr(listed[gone.id], name)
    with pytest.raises(NotFoundError):
        pt.Run(gone.id, reader=workspace.reader())
    assert listed[kept.id].git == {"commit": "def"} and listed[kept.id].user_tags == (
        "alpha",
        "zeta",
    )


def test_a_lazily_listed_record_pickles_copies_and_replaces_like_any_record(
    workspace: Workspace,
) -> None:
    _, run_id = _full_run(workspace)
    alone = workspace.store.get_run(run_id)
    listed = next(r for r in _listed(workspace) if r.id == run_id)
    back = pickle.loads(pickle.dumps(listed))
    assert back == alone and _fields(back) == _fields(alone)
    # The copy holds its fields, not the store: it reads nothing more.
    assert "_listing" not in back.__dict__
    fresh = next(r for r in _listed(workspace) if r.id == run_id)
    changed = dataclasses.replace(fresh, status=RunStatus.FAILED)
    assert changed.status is RunStatus.FAILED and changed.git == alone.git
    assert _fields(changed) == {**_fields(alone), "status": RunStatus.FAILED}
    assert repr(fresh) == repr(alone)


def test_threads_reading_one_listing_read_its_tags_once_and_all_see_them(
    workspace: Workspace,
) -> None:
    for i in range(6):
        workspace.store.create_run(_new(user_tags=(f"t{i}",)))
    records = _listed(workspace)
    start = threading.Barrier(4)
    seen: list[list[tuple[str, ...]]] = []

    def read() -> None:
        start.wait()
        seen.append([r.user_tags for r in records])

    with _counted(workspace) as statements:
        threads = [threading.Thread(target=read) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    expected = [(f"t{i}",) for i in reversed(range(6))]
    assert seen == [expected] * 4
    assert len([s for s in statements if "run_tag" in s]) == 1
