"""Runs in the SQL store: creation, status changes, tags, cancel requests, slots, lost runners."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from pipetrail.core.model import EventRecord, PipelineSpec, RunRecord
from pipetrail.core.params import flatten
from pipetrail.core.query import parse_filter, parse_order_by
from pipetrail.core.status import (
    RUN_TERMINAL,
    TASK_TERMINAL,
    RunStatus,
    TaskStatus,
    check_run_transition,
)
from pipetrail.errors import NotFoundError, StoreError, TickTakenError, UsageError
from pipetrail.storage.metadata.base import (
    NewRun,
    PipelineStats,
    RunQuery,
    RunSummary,
    VersionStats,
)
from pipetrail.storage.metadata.sql.engine import Prepared, for_update, prepared_upsert, upsert
from pipetrail.storage.metadata.sql.run_records import (
    LISTED_COLUMNS,
    RUN_COLUMNS,
    driver_rows,
    later_fields,
    listed_records,
    records_of,
)
from pipetrail.storage.metadata.sql.search import SearchOrder, filter_condition, search_plan
from pipetrail.storage.metadata.sql.session import SqlSession, patient
from pipetrail.storage.metadata.sql.session import now as _now
from pipetrail.storage.metadata.sql.tables import (
    block_run,
    environment,
    pipeline,
    pipeline_run,
    pipeline_version,
    run_event,
    run_param,
    run_stats,
    run_tag,
    trigger_tick,
)

__all__ = ["RunRows"]

_ENDED = frozenset(s.value for s in RUN_TERMINAL)
#: Where a row of ``RUN_COLUMNS`` has the version.
_VERSION_AT = [c.name for c in RUN_COLUMNS].index("version_id")


def _run_rows(*extra: Any) -> Select[Any]:
    """Rows of ``RUN_COLUMNS``, then the pipeline's name, the version, the environment's hash
    (then ``extra``)."""
    return (
        select(
            *RUN_COLUMNS, pipeline.c.name, pipeline_version.c.version, environment.c.hash, *extra
        )
        .join(pipeline, pipeline.c.id == pipeline_run.c.pipeline_id)
        .join(pipeline_version, pipeline_version.c.id == pipeline_run.c.version_id)
        .outerjoin(environment, environment.c.id == pipeline_run.c.environment_id)
    )


_GET_RUN = _run_rows(pipeline_version.c.dag).where(pipeline_run.c.id == bindparam("run_id"))
#: Rows of ``LISTED_COLUMNS``, then the pipeline's name (a lazy listing's).
_LISTED_ROWS = select(*LISTED_COLUMNS, pipeline.c.name).join(
    pipeline, pipeline.c.id == pipeline_run.c.pipeline_id
)

# The statements every run writes, compiled once and run on the driver's cursor.
_RUN_INSERT_COLUMNS = (
    "pipeline_id",
    "version_id",
    "status",
    "created_at",
    "user",
    "host",
    "trigger",
    "origin_run_id",
    "params",
    "param_types",
    "variables",
    "git",
    "code_key",
    "environment_id",
    "runner_host",
    "runner_pid",
    "timeout_s",
    "heartbeat_at",
    "lease",
    "trigger_name",
    "scheduled_at",
    "upstream_run_id",
    "sla_due_at",
)
_INSERT_RUN = Prepared(
    insert(pipeline_run)
    .values({c: bindparam(c) for c in _RUN_INSERT_COLUMNS})
    .returning(pipeline_run.c.id)
)
_INSERT_PARAM = Prepared(
    insert(run_param).values(
        {c: bindparam(c) for c in ("run_id", "key", "type", "value_num", "value_text")}
    )
)
_INSERT_TAG = Prepared(
    insert(run_tag).values({c: bindparam(c) for c in ("run_id", "tag", "system")})
)
_RUN_EVENT_COLUMNS = ("run_id", "block_run_id", "kind", "status", "previous", "at", "message")
_INSERT_RUN_EVENT = Prepared(
    insert(run_event).values({c: bindparam(c) for c in _RUN_EVENT_COLUMNS})
)
_STATS_COLUMNS = ("pipeline_id", "status", "runs", "duration_sum", "duration_count")


def _run_state(locked: bool) -> Callable[[str], Any]:
    """The run's row as a status change reads it; ``locked``: FOR UPDATE on PostgreSQL."""

    def build(dialect: str) -> Any:
        query = select(
            pipeline_run.c.status,
            pipeline_run.c.lease,
            pipeline_run.c.pipeline_id,
            pipeline_run.c.started_at,
            pipeline_run.c.trigger_name,
        ).where(pipeline_run.c.id == bindparam("run_id"))
        return query.with_for_update() if locked and dialect == "postgresql" else query

    return build


_RUN_STATE = Prepared(_run_state(locked=True))
_RUN_STATE_UNLOCKED = Prepared(_run_state(locked=False))


def _run_event(
    run_id: int, status: str, previous: str | None, at: datetime, message: str | None
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "block_run_id": None,
        "kind": "status",
        "status": status,
        "previous": previous,
        "at": at,
        "message": message,
    }


class RunRows(SqlSession):
    """The run half of the metadata store."""

    @patient("write")
    def create_run(self, new: NewRun) -> RunRecord:
        """Record a new run in ``initial`` with everything known before it starts, atomically.

        The ids of its pipeline, version and environment are remembered by this process (rows
        that are only ever added), so a process recording many runs writes each of them once;
        if one was deleted meanwhile (garbage collected), the run is recorded without them.
        """
        try:
            return self._create_run(new, cached=True)
        except StoreError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
            self._known_ids().clear()
            return self._create_run(new, cached=False)

    def _known_ids(self) -> dict[tuple[Any, ...], int]:
        known: dict[tuple[Any, ...], int] | None = getattr(self, "_known", None)
        if known is None:
            known = {}
            self._known = known
        return known

    def _cached_id(self, key: tuple[Any, ...], cached: bool, find: Callable[[], int]) -> int:
        known = self._known_ids()
        found = known.get(key) if cached else None
        if found is None:
            found = known[key] = find()
        return found

    def _create_run(self, new: NewRun, *, cached: bool) -> RunRecord:
        now = _now()
        spec = new.spec
        with self._write() as conn:
            pipeline_id = self._cached_id(
                ("pipeline", spec.name), cached, lambda: self._pipeline_id(conn, spec.name, now)
            )
            version_id = self._cached_id(
                ("version", pipeline_id, spec.dag_hash),
                cached,
                lambda: self._version_id(conn, pipeline_id, spec, now),
            )
            env_id = None
            if new.environment is not None:
                env_hash, env_data = new.environment
                env_id = self._cached_id(
                    ("environment", env_hash),
                    cached,
                    lambda: self._environment_id(conn, env_hash, env_data, now),
                )
            run_id = int(
                _INSERT_RUN.scalar(
                    conn,
                    {
                        "pipeline_id": pipeline_id,
                        "version_id": version_id,
                        "status": RunStatus.INITIAL.value,
                        "created_at": now,
                        "user": new.user,
                        "host": new.host,
                        "trigger": new.trigger,
                        "origin_run_id": new.origin_run_id,
                        "params": new.params,
                        "param_types": new.param_types,
                        "variables": new.variables,
                        "git": new.git,
                        "code_key": new.code_key,
                        "environment_id": env_id,
                        "runner_host": new.host,
                        "runner_pid": new.runner_pid,
                        "timeout_s": new.timeout_s,
                        "heartbeat_at": now,
                        "lease": 1,
                        "trigger_name": new.cause.trigger if new.cause else None,
                        "scheduled_at": new.cause.scheduled_at if new.cause else None,
                        "upstream_run_id": new.cause.upstream_run_id if new.cause else None,
                        "sla_due_at": new.sla_due_at,
                    },
                )
            )
            if new.tick_trigger_id is not None and new.cause is not None:
                self._link_tick(conn, new.tick_trigger_id, new.cause.scheduled_at, run_id)
            _INSERT_PARAM.run_many(
                conn, [_param_row(run_id, k, v) for k, v in _flat_params(new.params)]
            )
            tag_rows = [{"run_id": run_id, "tag": t, "system": True} for t in new.system_tags]
            tag_rows += [
                {"run_id": run_id, "tag": t, "system": False}
                for t in dict.fromkeys(new.user_tags)
                if t not in new.system_tags
            ]
            _INSERT_TAG.run_many(conn, tag_rows)
            _INSERT_RUN_EVENT.run(
                conn, _run_event(run_id, RunStatus.INITIAL.value, None, now, None)
            )
            tally(conn, {(pipeline_id, RunStatus.INITIAL.value): (1, 0.0, 0)})
            return self._record_of(conn, run_id)

    def _link_tick(
        self, conn: Connection, trigger_id: int, scheduled_at: datetime, run_id: int
    ) -> None:
        """Bind the new run to its claimed tick in the run's own transaction, or refuse it."""
        linked = conn.execute(
            update(trigger_tick)
            .where(
                trigger_tick.c.trigger_id == trigger_id,
                trigger_tick.c.scheduled_at == scheduled_at,
                trigger_tick.c.run_id.is_(None),
                trigger_tick.c.skip_reason.is_(None),
            )
            .values(run_id=run_id)
        ).rowcount
        if not linked:
            # Rolls the run back with it: the tick has its run (or its reason) already.
            raise TickTakenError(
                f"the tick at {scheduled_at.isoformat()} of trigger {trigger_id} is not open "
                "(another launcher started its run, or it was skipped)"
            )

    def _environment_id(
        self, conn: Connection, env_hash: str, data: Mapping[str, Any], now: datetime
    ) -> int:
        upsert(conn, environment, [{"hash": env_hash, "data": data, "created_at": now}], ["hash"])
        return int(
            conn.execute(
                select(environment.c.id).where(environment.c.hash == env_hash)
            ).scalar_one()
        )

    def _pipeline_id(self, conn: Connection, name: str, now: datetime) -> int:
        upsert(conn, pipeline, [{"name": name, "created_at": now}], ["name"])
        return int(conn.execute(select(pipeline.c.id).where(pipeline.c.name == name)).scalar_one())

    def _version_id(
        self, conn: Connection, pipeline_id: int, spec: PipelineSpec, at: datetime
    ) -> int:
        dag = spec.to_dict()
        dag_hash = spec.dag_hash
        row = {
            "pipeline_id": pipeline_id,
            "version": spec.version,
            "dag_hash": dag_hash,
            "dag": dag,
            "created_at": at,
        }
        upsert(conn, pipeline_version, [row], ["pipeline_id", "dag_hash"])
        return int(
            conn.execute(
                select(pipeline_version.c.id).where(
                    pipeline_version.c.pipeline_id == pipeline_id,
                    pipeline_version.c.dag_hash == dag_hash,
                )
            ).scalar_one()
        )

    @patient("write")
    def set_run_status(
        self,
        run_id: int,
        status: RunStatus,
        *,
        error: str | None = None,
        message: str | None = None,
    ) -> RunRecord:
        """Move a run to ``status`` (checked against the state machine) and record the event."""
        with self._write() as conn:
            row = _RUN_STATE.first(conn, {"run_id": run_id})
            if row is None:
                raise NotFoundError(f"no run with id {run_id} in the store")
            current, lease, pipeline_id, started = row[:4]
            self._check_lease(conn, run_id, lease)
            self._set_status(
                conn,
                run_id,
                RunStatus(current),
                status,
                error,
                message,
                known=(pipeline_id, started),
            )
            return self._record_of(conn, run_id)

    def _set_status(
        self,
        conn: Connection,
        run_id: int,
        current: RunStatus,
        status: RunStatus,
        error: str | None,
        message: str | None,
        *,
        known: tuple[int, datetime | None] | None = None,
    ) -> datetime:
        """``known``: the run's pipeline id and start, when the caller has read them already.

        Returns when the change happened.
        """
        check_run_transition(current, status)
        at = _now()
        values: dict[str, Any] = {"status": status.value, "heartbeat_at": at}
        if status is RunStatus.RUNNING:
            values["started_at"] = at
        if known is None:
            row = _RUN_STATE_UNLOCKED.first(conn, {"run_id": run_id})
            if row is None:
                raise NotFoundError(f"no run with id {run_id} in the store")
            known = (row[2], row[3])
        pipeline_id, started = known
        deltas: dict[tuple[int, str], tuple[int, float, int]] = {
            (pipeline_id, current.value): (-1, 0.0, 0),
            (pipeline_id, status.value): (1, 0.0, 0),
        }
        if status in RUN_TERMINAL:
            values["finished_at"] = at
            values["duration_s"] = (at - (started or at)).total_seconds()
            deltas[(pipeline_id, status.value)] = (1, values["duration_s"], 1)
            if started is None:
                values["started_at"] = at
        if error is not None:
            values["error"] = error
        _set_run_columns(tuple(values)).run(
            conn, {"b_id": run_id, **{f"v_{k}": v for k, v in values.items()}}
        )
        tally(conn, deltas)
        _INSERT_RUN_EVENT.run(
            conn, _run_event(run_id, status.value, current.value, at, message or error)
        )
        return at

    @patient("write")
    def heartbeat(self, run_id: int) -> None:
        with self._write() as conn:
            self._check_lease(conn, run_id)
            conn.execute(
                update(pipeline_run).where(pipeline_run.c.id == run_id).values(heartbeat_at=_now())
            )

    @patient("write")
    def add_tags(self, run_id: int, tags: Iterable[str], *, system: bool = False) -> None:
        """Add tags to a run; a tag it already has (user or system) is left as it is."""
        rows = [{"run_id": run_id, "tag": t, "system": system} for t in dict.fromkeys(tags)]
        with self._write() as conn:
            upsert(conn, run_tag, rows, ["run_id", "tag"])

    @patient("write")
    def change_tags(
        self,
        run_id: int,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        actor: str | None = None,
    ) -> RunRecord:
        """Remove then add user tags of a run, in one transaction (so a replace is atomic).

        Adding a tag the run already has as a system tag does nothing; removing a user tag
        the run does not have does nothing. With ``actor`` (who changed them), a ``tags``
        event records the change and who made it, in the same transaction.

        Raises:
            NotFoundError: no such run.
            UsageError: removing a system tag.
        """
        with self._write() as conn:
            status = conn.execute(
                select(pipeline_run.c.status).where(pipeline_run.c.id == run_id)
            ).scalar_one_or_none()
            if status is None:
                raise NotFoundError(f"no run with id {run_id} in the store")
            system = set(
                conn.execute(
                    select(run_tag.c.tag).where(run_tag.c.run_id == run_id, run_tag.c.system)
                ).scalars()
            )
            removing = list(dict.fromkeys(remove))
            forbidden = [t for t in removing if t in system]
            if forbidden:
                raise UsageError(
                    f"cannot remove system tag {forbidden[0]!r} of run {run_id}: system tags "
                    "are set by pipetrail and never change"
                )
            if removing:
                conn.execute(
                    delete(run_tag).where(
                        run_tag.c.run_id == run_id,
                        run_tag.c.tag.in_(removing),
                        run_tag.c.system.is_(False),
                    )
                )
            rows = [
                {"run_id": run_id, "tag": t, "system": False}
                for t in dict.fromkeys(add)
                if t not in system
            ]
            upsert(conn, run_tag, rows, ["run_id", "tag"])
            if actor is not None and (rows or removing):
                change = [f"+{r['tag']}" for r in rows] + [f"-{t}" for t in removing]
                conn.execute(
                    insert(run_event),
                    {
                        "run_id": run_id,
                        "kind": "tags",
                        "status": status,
                        "at": _now(),
                        "message": " ".join(change),
                        "actor": actor,
                    },
                )
        return self.get_run(run_id)

    @patient("read")
    def pipeline_stats(self, name: str | None = None) -> list[PipelineStats]:
        """Per pipeline (or just ``name``): run counts by status and the newest run's id.

        Counts come from ``run_stats``; the newest run is one backward step of the
        ``(pipeline_id, id)`` index per pipeline, not a scan of its runs.
        """
        latest = (
            select(func.max(pipeline_run.c.id))
            .where(pipeline_run.c.pipeline_id == pipeline.c.id)
            .scalar_subquery()
        )
        stmt = select(pipeline.c.id, pipeline.c.name, latest.label("latest"))
        counts_stmt = select(run_stats.c.pipeline_id, run_stats.c.status, run_stats.c.runs).where(
            run_stats.c.runs > 0
        )
        if name is not None:
            stmt = stmt.where(pipeline.c.name == name)
        found: list[PipelineStats] = []
        with self._read() as conn:
            counts: dict[int, dict[str, int]] = {}
            for row in conn.execute(counts_stmt):
                counts.setdefault(row.pipeline_id, {})[row.status] = int(row.runs)
            for row in conn.execute(stmt.order_by(pipeline.c.name)):
                if row.latest is not None:
                    found.append(PipelineStats(row.name, counts.get(row.id, {}), int(row.latest)))
        return found

    @patient("read")
    def pipeline_versions(self, name: str) -> list[VersionStats]:
        """The versions a pipeline's runs had, newest first, with counts and times."""
        stmt = (
            select(
                pipeline_version.c.version,
                func.count().label("runs"),
                func.min(pipeline_run.c.created_at).label("first"),
                func.max(pipeline_run.c.created_at).label("last"),
                func.max(pipeline_run.c.id).label("latest"),
            )
            .join(pipeline_version, pipeline_version.c.id == pipeline_run.c.version_id)
            .join(pipeline, pipeline.c.id == pipeline_run.c.pipeline_id)
            .where(pipeline.c.name == name)
            .group_by(pipeline_version.c.version)
            .order_by(func.max(pipeline_run.c.id).desc())
        )
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        return [
            VersionStats(r.version, int(r.runs), _as_time(r.first), _as_time(r.last), int(r.latest))
            for r in rows
        ]

    @patient("read")
    def get_run(self, run_id: int) -> RunRecord:
        with self._read() as conn:
            return self._record_of(conn, run_id)

    def _record_of(self, conn: Connection, run_id: int) -> RunRecord:
        """The run as ``conn`` sees it: a write returns what it wrote without a second
        transaction."""
        # A statement built once, that brings the run's DAG with its row.
        rows = conn.execute(_GET_RUN, {"run_id": run_id}).all()
        if not rows:
            raise NotFoundError(f"no run with id {run_id} in the store")
        return self._records(conn, rows, {rows[0][_VERSION_AT]: rows[0][-1]})[0]

    @patient("read")
    def list_runs(self, query: RunQuery, *, lazy: bool = False) -> list[RunRecord]:
        """Runs matching ``query``, newest first unless ``query.order_by`` says otherwise.

        ``since`` is inclusive and ``until`` exclusive (both on ``created``); ``filter`` and
        ``order_by`` are the search language of ``pipetrail.core.query``, compiled to SQL.

        ``lazy`` (the client's listings): the records hold the columns a listed run is mostly
        read for and every one that changes while a run goes on, as of the listing; their
        tags and what the runs recorded when created are read the first time a record is
        asked for one, for all the records at once (``run_records.Listing``): the tags as
        they are then, as ``get_run`` would read them then. A field read so of a run deleted
        meanwhile raises NotFoundError.

        Raises:
            QuerySyntaxError: a malformed ``filter`` or ``order_by``, before touching the store.
        """
        conditions = _conditions(query, planned=False)
        node = parse_filter(query.filter) if query.filter and query.filter.strip() else None
        filtered, order = search_plan(node, parse_order_by(query.order_by))
        conditions += filtered
        with self._read() as conn:
            return self._runs(conn, conditions, limit=query.limit, order=order, lazy=lazy)

    @patient("read")
    def _read_later(self, group: str, run_ids: list[int]) -> dict[int, dict[str, Any]]:
        """The fields of ``group`` of lazily listed records (``run_records.later_fields``)."""
        with self._read() as conn:
            return later_fields(conn, group, run_ids)

    @patient("read")
    def count_runs(self, query: RunQuery) -> int:
        """How many runs ``query`` selects (its limit and order ignored), by one COUNT."""
        stmt = select(func.count()).select_from(pipeline_run).where(and_(True, *_conditions(query)))
        with self._read() as conn:
            return int(conn.execute(stmt).scalar_one())

    @patient("read")
    def summarize_runs(
        self, query: RunQuery, *, recent_since: datetime | None = None
    ) -> RunSummary:
        """Counts by status, mean duration of ended runs and runs created since ``recent_since``
        over every run ``query`` selects (its limit and order ignored): one GROUP BY.

        Raises:
            QuerySyntaxError: a malformed ``filter``.
        """
        if _only_pipeline_and_status(query):
            return self._summary_from_stats(query, recent_since)
        columns: list[Any] = [
            pipeline_run.c.status,
            func.count().label("runs"),
            func.sum(pipeline_run.c.duration_s).label("seconds"),
            func.count(pipeline_run.c.duration_s).label("timed"),
        ]
        if recent_since is not None:
            recent = case((pipeline_run.c.created_at >= recent_since, 1), else_=0)
            columns.append(func.sum(recent).label("recent"))
        stmt = (
            select(*columns).where(and_(True, *_conditions(query))).group_by(pipeline_run.c.status)
        )
        counts: dict[str, int] = {}
        seconds, timed, recent_runs = 0.0, 0, 0
        with self._read() as conn:
            for row in conn.execute(stmt):
                counts[row.status] = int(row.runs)
                if row.status in _ENDED:
                    seconds += float(row.seconds or 0.0)
                    timed += int(row.timed)
                if recent_since is not None:
                    recent_runs += int(row.recent or 0)
        return RunSummary(
            total=sum(counts.values()),
            counts=counts,
            average_duration_s=seconds / timed if timed else None,
            recent=recent_runs,
        )

    def _summary_from_stats(self, query: RunQuery, recent_since: datetime | None) -> RunSummary:
        """The summary from ``run_stats`` (a few rows), the recent count from the time index."""
        stmt = select(
            run_stats.c.status,
            func.sum(run_stats.c.runs).label("runs"),
            func.sum(run_stats.c.duration_sum).label("seconds"),
            func.sum(run_stats.c.duration_count).label("timed"),
        ).group_by(run_stats.c.status)
        if query.pipeline is not None:
            named = select(pipeline.c.id).where(pipeline.c.name == query.pipeline)
            stmt = stmt.where(run_stats.c.pipeline_id == named.scalar_subquery())
        if query.statuses:
            stmt = stmt.where(run_stats.c.status.in_([s.value for s in query.statuses]))
        counts: dict[str, int] = {}
        seconds, timed = 0.0, 0
        with self._read() as conn:
            for row in conn.execute(stmt):
                if int(row.runs):
                    counts[row.status] = int(row.runs)
                if row.status in _ENDED:
                    seconds += float(row.seconds or 0.0)
                    timed += int(row.timed or 0)
            recent = 0
            if recent_since is not None:
                since = dataclasses.replace(query, since=recent_since, limit=None)
                recent = int(
                    conn.execute(
                        select(func.count())
                        .select_from(pipeline_run)
                        .where(and_(True, *_conditions(since)))
                    ).scalar_one()
                )
        return RunSummary(sum(counts.values()), counts, seconds / timed if timed else None, recent)

    def _runs(
        self,
        conn: Connection,
        conditions: Sequence[Any],
        limit: int | None,
        order: SearchOrder | None = None,
        *,
        lazy: bool = False,
    ) -> list[RunRecord]:
        order = order or SearchOrder()
        stmt = _LISTED_ROWS if lazy else _run_rows()
        for table, on in order.joins:
            stmt = stmt.join(table, on) if table in order.inner else stmt.outerjoin(table, on)
        stmt = stmt.where(and_(True, *conditions)).order_by(*order.clauses)
        if limit is not None:
            stmt = stmt.limit(limit)
        # The driver's tuples, decoded by the records when a field is read (run_records.py).
        rows = driver_rows(conn, stmt)
        if lazy:
            return listed_records(rows, self._read_later)
        return self._records(conn, rows)

    def _records(
        self, conn: Connection, rows: Sequence[Any], dags: dict[int, Any] | None = None
    ) -> list[RunRecord]:
        """Records of rows of ``_run_rows()`` with their tags, DAGs (unless given) and the
        pathspecs of their upstream runs: a query for each, whatever the number of rows."""
        return records_of(conn, rows, dags)

    @patient("read")
    def get_environment(self, env_hash: str) -> dict[str, Any]:
        with self._read() as conn:
            data = conn.execute(
                select(environment.c.data).where(environment.c.hash == env_hash)
            ).scalar_one_or_none()
        if data is None:
            raise NotFoundError(f"no environment {env_hash!r} in the store")
        return dict(data)

    @patient("read")
    def count_environments(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(environment)).scalar_one())

    @patient("read")
    def events(self, run_id: int) -> list[EventRecord]:
        """The run's whole status history (run and task events), oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                select(run_event).where(run_event.c.run_id == run_id).order_by(run_event.c.id)
            ).all()
        return [
            EventRecord(
                r.run_id, r.block_run_id, r.status, r.at, r.previous, r.message, r.kind, r.actor
            )
            for r in rows
        ]

    @patient("write")
    def record_event(
        self,
        run_id: int,
        kind: str,
        message: str,
        *,
        task_id: int | None = None,
        actor: str | None = None,
    ) -> None:
        """Record something that happened to a run that is not a status change (a timeout
        breach); ``actor`` is who caused it, when a person did."""
        with self._write() as conn:
            self._check_lease(conn, run_id)
            status = conn.execute(
                select(pipeline_run.c.status).where(pipeline_run.c.id == run_id)
            ).scalar_one()
            if task_id is not None:
                status = conn.execute(
                    select(block_run.c.status).where(block_run.c.id == task_id)
                ).scalar_one()
                conn.execute(
                    update(block_run).where(block_run.c.id == task_id).values(note=message)
                )
            conn.execute(
                insert(run_event),
                {
                    "run_id": run_id,
                    "block_run_id": task_id,
                    "kind": kind,
                    "status": status,
                    "at": _now(),
                    "message": message,
                    "actor": actor,
                },
            )

    @patient("write")
    def request_cancel(self, run_id: int, reason: str, *, actor: str | None = None) -> RunRecord:
        """Ask the runner of a run to cancel it; its runner acts on it within a second or two.

        ``actor`` (who asked) goes into the ``cancel_requested`` event.

        Raises:
            NotFoundError: no such run.
            InvalidTransitionError: the run has already ended.
        """
        with self._write() as conn:
            query = select(pipeline_run.c.status).where(pipeline_run.c.id == run_id)
            if for_update(conn):
                query = query.with_for_update()
            status = conn.execute(query).scalar_one_or_none()
            if status is None:
                raise NotFoundError(f"no run with id {run_id} in the store")
            check_run_transition(RunStatus(status), RunStatus.CANCELLED)
            at = _now()
            conn.execute(
                update(pipeline_run)
                .where(pipeline_run.c.id == run_id, pipeline_run.c.cancel_requested_at.is_(None))
                .values(cancel_requested_at=at, cancel_reason=reason)
            )
            conn.execute(
                insert(run_event),
                {
                    "run_id": run_id,
                    "kind": "cancel_requested",
                    "status": status,
                    "at": at,
                    "message": reason,
                    "actor": actor,
                },
            )
        return self.get_run(run_id)

    @patient("read")
    def cancel_requested(self, run_id: int) -> str | None:
        """The reason given when someone asked to cancel this run, or None.

        Raises:
            LeaseLostError: this process holds the run and its lease has moved on (the runner
                polls this, so it learns within a poll that its run was taken from it).
        """
        with self._read() as conn:
            row = conn.execute(
                select(
                    pipeline_run.c.cancel_requested_at,
                    pipeline_run.c.cancel_reason,
                    pipeline_run.c.lease,
                ).where(pipeline_run.c.id == run_id)
            ).first()
            if row is not None:
                self._check_lease(conn, run_id, row.lease)
        if row is None or row.cancel_requested_at is None:
            return None
        return str(row.cancel_reason or "cancel requested")

    @patient("write")
    def claim_slot(
        self, run_id: int, limit: int | None, *, trigger_limit: int | None = None
    ) -> bool:
        """Start a waiting run (``initial`` → ``running``) if it has a free slot.

        ``limit`` bounds the running runs of its pipeline, ``trigger_limit`` those its trigger
        started (a trigger's ``max_concurrent``). Runs start in the order they were created: a
        run waits while an older run of the same pipeline (or trigger) waits. With no limit the
        run starts at once.
        """
        with self._write() as conn:
            return self._claim(conn, run_id, limit, trigger_limit) is not None

    def _claim(
        self, conn: Connection, run_id: int, limit: int | None, trigger_limit: int | None
    ) -> datetime | None:
        """claim_slot's work, in the caller's transaction: when the run started, or None."""
        row = _RUN_STATE_UNLOCKED.first(conn, {"run_id": run_id})
        if row is None:
            raise NotFoundError(f"no run with id {run_id} in the store")
        pipeline_id, trigger_name = row[2], row[4]
        groups = []
        if limit is not None:
            groups.append((pipeline_run.c.pipeline_id == pipeline_id, limit))
        if trigger_limit is not None and trigger_name is not None:
            groups.append((pipeline_run.c.trigger_name == trigger_name, trigger_limit))
        if for_update(conn):
            if groups:
                # Claims of one pipeline (a trigger runs one pipeline) queue on its row, so
                # two runners never both count the same free slot. NO KEY UPDATE: it does
                # not block the key-share locks of foreign keys (a new run, a run_stats row
                # of the pipeline), so a writer holding a run's row never waits on a claim.
                conn.execute(
                    select(pipeline.c.id)
                    .where(pipeline.c.id == pipeline_id)
                    .with_for_update(key_share=True)
                )
            # Then the run's own row, read again under its lock: a reaper on another host
            # may have failed it (and moved its lease on) since the read above, and the
            # claim must not turn that back into running. Locks in one order: pipeline, run.
            row = _RUN_STATE.first(conn, {"run_id": run_id})
            if row is None:  # deleted meanwhile (only ended runs are, so not in practice)
                raise NotFoundError(f"no run with id {run_id} in the store")
        status, lease = row[0], row[1]
        self._check_lease(conn, run_id, lease)
        if status != RunStatus.INITIAL.value:
            return None
        for same, most in groups:
            if not self._slot_free(conn, run_id, same, most):
                return None
        return self._set_status(
            conn,
            run_id,
            RunStatus.INITIAL,
            RunStatus.RUNNING,
            None,
            None,
            known=(pipeline_id, None),
        )

    def _slot_free(self, conn: Connection, run_id: int, same: Any, limit: int) -> bool:
        running = conn.execute(
            select(func.count())
            .select_from(pipeline_run)
            .where(same, pipeline_run.c.status == RunStatus.RUNNING.value)
        ).scalar_one()
        older_waiting = conn.execute(
            select(func.count())
            .select_from(pipeline_run)
            .where(
                same,
                pipeline_run.c.status == RunStatus.INITIAL.value,
                pipeline_run.c.id < run_id,
                pipeline_run.c.cancel_requested_at.is_(None),
            )
        ).scalar_one()
        return bool(running < limit and not older_waiting)

    @patient("read")
    def unfinished_runs(self) -> list[RunRecord]:
        """Runs that are waiting or running, whoever runs them."""
        with self._read() as conn:
            return self._runs(
                conn,
                [pipeline_run.c.status.in_([RunStatus.INITIAL.value, RunStatus.RUNNING.value])],
                limit=None,
            )

    @patient("write")
    def mark_lost(self, run_id: int, reason: str, *, stale_before: datetime | None = None) -> bool:
        """Fail a run whose runner is gone, and its unfinished tasks, with ``reason``.

        With ``stale_before``, only if its heartbeat is still older than that (another process
        may have just marked it, or the runner may have come back). Returns whether it was marked.
        """
        return self._take(run_id, RunStatus.FAILED, reason, stale_before=stale_before)

    @patient("write")
    def force_cancel(self, run_id: int, reason: str) -> RunRecord:
        """Cancel a run, and its unfinished tasks, from outside its runner, taking it over.

        For a runner that did not act on a cancel request (on another host, paused, gone): its
        lease moves on, so if it comes back it stops at its next write instead of writing into
        the cancelled run. A run that has already ended is returned as it is.
        """
        self._take(run_id, RunStatus.CANCELLED, reason)
        return self.get_run(run_id)

    def _take(
        self,
        run_id: int,
        status: RunStatus,
        reason: str,
        *,
        stale_before: datetime | None = None,
    ) -> bool:
        """End an unfinished run as ``status`` (its open tasks too) and move its lease on."""
        lost = status is RunStatus.FAILED
        task_status = TaskStatus.FAILED if lost else TaskStatus.CANCELLED
        with self._write() as conn:
            query = select(
                pipeline_run.c.status, pipeline_run.c.heartbeat_at, pipeline_run.c.started_at
            ).where(pipeline_run.c.id == run_id)
            if for_update(conn):
                query = query.with_for_update()
            row = conn.execute(query).first()
            if row is None or RunStatus(row.status) in RUN_TERMINAL:
                return False
            if stale_before is not None and row.heartbeat_at and row.heartbeat_at >= stale_before:
                return False
            at = _now()
            open_tasks = conn.execute(
                select(block_run.c.id, block_run.c.status).where(
                    block_run.c.run_id == run_id,
                    block_run.c.status.notin_([s.value for s in TASK_TERMINAL]),
                )
            ).all()
            ended: dict[str, Any] = {"status": task_status.value, "finished_at": at}
            if lost:
                ended.update(exception_type="RunnerLostError", exception_message=reason)
            for task in open_tasks:
                conn.execute(update(block_run).where(block_run.c.id == task.id).values(**ended))
                conn.execute(
                    insert(run_event),
                    {
                        "run_id": run_id,
                        "block_run_id": task.id,
                        "status": task_status.value,
                        "previous": task.status,
                        "at": at,
                        "message": reason,
                    },
                )
            self._set_status(conn, run_id, RunStatus(row.status), status, reason, reason)
            # The lease moves on: a runner that was only paused finds out on its next write.
            conn.execute(
                update(pipeline_run)
                .where(pipeline_run.c.id == run_id)
                .values(lease=pipeline_run.c.lease + 1)
            )
        return True


def _conditions(query: RunQuery, *, planned: bool = True) -> list[Any]:
    """WHERE conditions over ``pipeline_run`` (joined to ``pipeline``) for ``query``'s filters.

    Raises:
        QuerySyntaxError: a malformed ``filter``.
    """
    conditions: list[Any] = []
    if planned and query.filter is not None and query.filter.strip():
        conditions.append(filter_condition(parse_filter(query.filter)))
    if query.pipeline is not None:
        # A scalar subquery (one lookup), not the join: counts need no join, and the planner
        # then sees an equality on pipeline_id that the (pipeline_id, …) indexes serve.
        named = select(pipeline.c.id).where(pipeline.c.name == query.pipeline)
        conditions.append(pipeline_run.c.pipeline_id == named.scalar_subquery())
    if query.statuses:
        conditions.append(pipeline_run.c.status.in_([s.value for s in query.statuses]))
    if query.users:
        conditions.append(pipeline_run.c.user.in_(query.users))
    if query.before_id is not None:
        conditions.append(pipeline_run.c.id < query.before_id)
    if query.trigger is not None:
        conditions.append(pipeline_run.c.trigger_name == query.trigger)
    if query.sla_missed:
        conditions.append(pipeline_run.c.sla_state == "missed")
    if query.since is not None:
        conditions.append(pipeline_run.c.created_at >= query.since)
    if query.until is not None:
        conditions.append(pipeline_run.c.created_at < query.until)
    for tag in query.tags:
        conditions.append(
            pipeline_run.c.id.in_(select(run_tag.c.run_id).where(run_tag.c.tag == tag))
        )
    return conditions


def _only_pipeline_and_status(query: RunQuery) -> bool:
    """Whether ``query`` selects by pipeline and status alone (``run_stats`` can answer it)."""
    return not (
        (query.filter and query.filter.strip())
        or query.tags
        or query.users
        or query.since
        or query.until
        or query.before_id is not None
        or query.trigger is not None
        or query.sla_missed
    )


def tally(conn: Connection, deltas: Mapping[tuple[int, str], tuple[int, float, int]]) -> None:
    """Add ``(runs, duration seconds, timed runs)`` to the ``run_stats`` row of each
    ``(pipeline id, status)``, in key order (two writers lock rows in one order: no deadlock)."""
    rows = [
        {
            "pipeline_id": key[0],
            "status": key[1],
            "runs": change[0],
            "duration_sum": change[1],
            "duration_count": change[2],
        }
        for key, change in sorted(deltas.items())
    ]
    _TALLY.run_many(conn, rows)


def _add_stats(new: Any) -> dict[str, Any]:
    return {c: run_stats.c[c] + new[c] for c in ("runs", "duration_sum", "duration_count")}


_TALLY = Prepared(prepared_upsert(run_stats, _STATS_COLUMNS, ["pipeline_id", "status"], _add_stats))


@functools.lru_cache(maxsize=32)
def _set_run_columns(columns: tuple[str, ...]) -> Prepared:
    """``UPDATE pipeline_run SET <columns>`` of one run (``b_id``), values bound as ``v_<column>``:
    one statement per set of columns a status change writes, compiled once."""
    return Prepared(
        update(pipeline_run)
        .where(pipeline_run.c.id == bindparam("b_id"))
        .values({c: bindparam(f"v_{c}") for c in columns})
    )


def _flat_params(params: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for name, value in params.items():
        yield from flatten(value, name)


def _param_row(run_id: int, key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {
            "run_id": run_id,
            "key": key,
            "type": "bool",
            "value_num": float(value),
            "value_text": str(value).lower(),
        }
    if isinstance(value, (int, float)):
        return {
            "run_id": run_id,
            "key": key,
            "type": "number",
            "value_num": float(value),
            "value_text": repr(value),
        }
    if value is None:
        return {"run_id": run_id, "key": key, "type": "null", "value_num": None, "value_text": None}
    return {
        "run_id": run_id,
        "key": key,
        "type": "str",
        "value_num": None,
        "value_text": str(value),
    }


def _as_time(value: Any) -> datetime:
    """An aggregate of a timestamp column comes back as text on SQLite: a UTC datetime here."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
