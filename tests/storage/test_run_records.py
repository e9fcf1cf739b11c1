"""Run records on the read path: every field as recorded, whichever way the record was read.

Listings and searches fetch rows as the driver's tuples (``run_records.driver_rows``), so no
SQLAlchemy result processor runs on them: the tests check, on SQLite and PostgreSQL, that none
would have (the columns read that way are plain integers, text, floats and raw JSON/time
values decoded by the record), and that a listed record equals the run read alone, field by
field and type by type.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select

import pipetrail as pt
from pipetrail.core.model import RunCause, RunRecord
from pipetrail.core.status import RunStatus
from pipetrail.storage.metadata.base import NewRun, RunQuery
from pipetrail.storage.metadata.sql.metrics import _LATEST_OF
from pipetrail.storage.metadata.sql.run_records import _TAGS_OF, IN_CHUNK, chunks, records_of
from pipetrail.storage.metadata.sql.runs import _run_rows
from pipetrail.storage.metadata.sql.tables import pipeline_run
from pipetrail.workspace import Workspace


@pt.step
def only(lr: float = 0.1) -> float:
    return lr


SPEC = pt.Pipeline("records", [only]).spec
DUE = datetime(2031, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


def _new(**changes: Any) -> NewRun:
    base = NewRun(
        spec=SPEC,
        params={"lr": 0.25, "opt": {"name": "adam", "betas": [0.9, 0.999]}, "on": True},
        param_types={"lr": "float", "opt": "dict", "on": "bool"},
        variables={"shard": "3"},
        user="ana",
        host="laptop",
        trigger="cli",
        user_tags=("zeta", "alpha"),
        system_tags=("user:ana",),
    )
    return dataclasses.replace(base, **changes)


def _full_run(workspace: Workspace) -> tuple[int, int]:
    """A run with every optional field set (an upstream run, then its triggered successor)."""
    store = workspace.store
    upstream = store.create_run(_new())
    run = store.create_run(
        _new(
            git={"commit": "abc123", "dirty": False},
            code_key="f" * 64,
            environment=("e" * 16, {"python": "3.11"}),
            origin_run_id=upstream.id,
            runner_pid=4242,
            timeout_s=90.5,
            cause=RunCause("nightly", DUE - timedelta(hours=1), upstream.id, upstream.pathspec),
            sla_due_at=DUE,
            trigger="after",
        )
    )
    store.set_run_status(run.id, RunStatus.RUNNING)
    store.heartbeat(run.id)
    store.request_cancel(run.id, "enough")
    return upstream.id, run.id


def _fields(record: RunRecord) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(RunRecord)}


def test_a_listed_record_is_the_run_read_alone_field_by_field_and_type_by_type(
    workspace: Workspace,
) -> None:
    upstream_id, run_id = _full_run(workspace)
    store = workspace.store
    alone = store.get_run(run_id)
    (listed,) = store.list_runs(RunQuery(filter="user = 'ana' and status = 'running'"))
    searched = store.list_runs(RunQuery(order_by=("params.lr desc",), limit=None))
    assert [r.id for r in searched] == [run_id, upstream_id]
    for record in (listed, searched[0]):
        assert _fields(record) == _fields(alone)
        for name, value in _fields(record).items():
            assert type(value) is type(getattr(alone, name)), name
    assert type(listed.id) is int and type(listed.lease) is int
    assert type(listed.runner_pid) is int and listed.runner_pid == 4242
    assert type(listed.timeout_s) is float and listed.timeout_s == 90.5
    assert listed.status is RunStatus.RUNNING
    assert listed.params == {"lr": 0.25, "opt": {"name": "adam", "betas": [0.9, 0.999]}, "on": True}
    assert listed.user_tags == ("alpha", "zeta") and listed.system_tags == ("user:ana",)
    assert listed.git == {"commit": "abc123", "dirty": False}
    assert listed.environment_hash == "e" * 16 and listed.origin_run_id == upstream_id
    assert listed.sla_due_at == DUE and listed.sla_due_at.tzinfo is not None
    assert listed.cancel_requested_at is not None and listed.heartbeat_at is not None
    assert listed.cause == RunCause(
        "nightly", DUE - timedelta(hours=1), upstream_id, f"records/{upstream_id}"
    )
    assert listed.dag["steps"][0]["name"] == "only"


def test_records_of_no_rows_is_empty_and_a_run_without_tags_has_none(
    workspace: Workspace,
) -> None:
    store = workspace.store
    bare = store.create_run(_new(user_tags=(), system_tags=()))
    with store.engine.connect() as conn:
        assert records_of(conn, []) == []
        rows = conn.execute(_run_rows().where(pipeline_run.c.id == bare.id)).all()
        (record,) = records_of(conn, rows)
    assert record.user_tags == () and record.system_tags == ()
    assert record == store.get_run(bare.id)


def _processors(workspace: Workspace, statement: Select[Any], params: dict[str, Any]) -> list[str]:
    """Columns of ``statement`` a result processor would change on this store's driver."""
    dialect = workspace.store.engine.dialect
    with workspace.store.engine.connect() as conn:
        result = conn.execute(statement, params)
        described = result.cursor.description
        result.close()
    changed = []
    for column, (_, type_code, *_rest) in zip(statement.selected_columns, described, strict=True):
        if column.type.dialect_impl(dialect).result_processor(dialect, type_code) is not None:
            changed.append(column.name)
    return changed


def test_no_column_read_as_the_driver_gives_it_needs_a_result_processor(
    workspace: Workspace,
) -> None:
    _, run_id = _full_run(workspace)
    ids = {"ids": [run_id]}
    assert _processors(workspace, _run_rows(), {}) == []
    assert _processors(workspace, _LATEST_OF, ids) == []
    # SQLite's booleans are 0/1 integers, which records_of reads as truthy.
    assert set(_processors(workspace, _TAGS_OF, ids)) <= {"system"}


def test_a_kept_search_plan_tells_one_from_true_and_from_one_point_zero(
    workspace: Workspace,
) -> None:
    store = workspace.store
    flagged = store.create_run(_new(params={"x": True}, param_types={"x": "bool"}))
    counted = store.create_run(_new(params={"x": 1}, param_types={"x": "int"}))

    def found(text: str) -> list[int]:
        return [r.id for r in store.list_runs(RunQuery(filter=text, limit=None))]

    for _ in range(2):  # the second round reads the kept plans
        assert found("params.x = true") == [flagged.id]
        assert found("params.x = 1") == [counted.id]
        assert found("params.x = 1.0") == [counted.id]


def test_ids_are_bound_in_chunks_that_sqlite_accepts() -> None:
    ids = list(range(2 * IN_CHUNK + 1))
    parts = list(chunks(ids))
    assert [len(p) for p in parts] == [IN_CHUNK, IN_CHUNK, 1]
    assert [i for p in parts for i in p] == ids
    assert list(chunks([])) == []
