"""Deleting runs and finding what no run references, as rows."""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, exists, insert, or_, select, update

from pipetrail.core.status import RunStatus
from pipetrail.errors import NotFoundError, UsageError
from pipetrail.storage.metadata.retention import (
    KEEP_TAG,
    DeletedRun,
    RowsCollected,
    RunFacts,
    VersionUse,
)
from pipetrail.storage.metadata.sql.engine import for_update, insert_once, upsert
from pipetrail.storage.metadata.sql.runs import tally
from pipetrail.storage.metadata.sql.session import SqlSession, now, patient
from pipetrail.storage.metadata.sql.tables import (
    alert,
    artifact,
    artifact_link,
    block_run,
    environment,
    governance_event,
    latest_metric,
    log_chunk,
    metric_block,
    model_alias,
    model_version,
    pipeline,
    pipeline_run,
    pipeline_version,
    promotion_request,
    registered_model,
    run_event,
    run_param,
    run_tag,
    scheduler_cursor,
    trigger_tick,
)

__all__ = ["RetentionRows"]

_UNFINISHED = (RunStatus.INITIAL.value, RunStatus.RUNNING.value)


class RetentionRows(SqlSession):
    """Mixed into SqlMetadataStore."""

    @patient("write")
    def delete_run(
        self,
        run_id: int,
        *,
        actor: str,
        refuse: Callable[[RunFacts], str | None],
        dry_run: bool = False,
        message: str | None = None,
    ) -> DeletedRun:
        """Delete run ``run_id`` and every row under it, in one transaction, unless ``refuse``
        (given the run's facts, read under its lock) says why not.

        Rows of other runs that point at it (a retry's ``origin_run_id``, an ``after`` run's
        ``upstream_run_id``, reused tasks and input links of later runs, trigger ticks, alerts)
        have the pointer set to NULL, and each such run gets a ``note`` event saying so. The
        run's ``run_stats`` counts go down in the same transaction, and a ``run_deleted``
        governance event (who, which run, its pipeline and status) is written; it outlives
        the run. With ``dry_run`` nothing is written: the facts are read and the pointers that
        would be emptied are found.

        Raises:
            NotFoundError: no such run.
        """
        with self._write() as conn:
            lock = select(pipeline_run.c.id).where(pipeline_run.c.id == run_id)
            if for_update(conn):
                # Registering a model version from the run, tagging it or retrying it waits for
                # this (their foreign keys lock the run's row), so the facts below hold.
                lock = lock.with_for_update()
            if conn.execute(lock).first() is None:
                raise NotFoundError(f"no run with id {run_id} in the store")
            facts = self._facts(conn, run_id)
            reason = refuse(facts)
            if reason is not None:
                return DeletedRun(facts, deleted=False, refused=reason)
            cleared = self._clear_pointers(conn, facts, actor, dry_run=dry_run)
            if not dry_run:
                self._delete_rows(conn, run_id)
                conn.execute(
                    insert(governance_event).values(
                        at=now(),
                        actor=actor,
                        action="run_deleted",
                        run_id=run_id,
                        message=message or f"deleted run {facts.pathspec} ({facts.status})",
                        detail={
                            "pathspec": facts.pathspec,
                            "pipeline": facts.pipeline,
                            "status": facts.status,
                            "created_at": facts.created_at.isoformat(),
                            "cleared": cleared,
                        },
                    )
                )
        return DeletedRun(facts, deleted=not dry_run, cleared=cleared)

    @patient("write")
    def change_kept_tags(
        self,
        run_id: int,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        actor: str | None = None,
    ) -> None:
        """``change_tags`` for a change that names the protected tag :data:`KEEP_TAG`.

        As ``change_tags`` (removals, then additions, a ``tags`` run event with ``actor``), and
        when the run gains or loses ``keep``, a ``run_kept`` or ``run_unkept`` governance
        event (who, when, which run), all in one transaction. Without ``actor`` the local user
        is named: the protection of a run is never changed by nobody.

        Raises:
            NotFoundError: no such run.
            UsageError: removing a system tag.
        """
        adding, removing = list(dict.fromkeys(add)), list(dict.fromkeys(remove))
        with self._write() as conn:
            lock = select(pipeline_run.c.status).where(pipeline_run.c.id == run_id)
            if for_update(conn):
                lock = lock.with_for_update()  # a deletion at the same time reads keep after this
            status = conn.execute(lock).scalar_one_or_none()
            if status is None:
                raise NotFoundError(f"no run with id {run_id} in the store")
            rows = conn.execute(
                select(run_tag.c.tag, run_tag.c.system).where(run_tag.c.run_id == run_id)
            ).all()
            system = {tag for tag, is_system in rows if is_system}
            kept = any(tag == KEEP_TAG and not is_system for tag, is_system in rows)
            forbidden = [t for t in removing if t in system]
            if forbidden:
                raise UsageError(
                    f"cannot remove system tag {forbidden[0]!r} of run {run_id}: system tags "
                    "are set by pipetrail and never change"
                )
            had = {tag for tag, is_system in rows if not is_system}
            removed = [t for t in removing if t in had]
            if removing:
                conn.execute(
                    delete(run_tag).where(
                        run_tag.c.run_id == run_id,
                        run_tag.c.tag.in_(removing),
                        run_tag.c.system.is_(False),
                    )
                )
            added = [t for t in adding if t not in system]
            tags = [{"run_id": run_id, "tag": t, "system": False} for t in added]
            upsert(conn, run_tag, tags, ["run_id", "tag"])
            at = now()
            if actor is not None and (added or removing):
                change = [f"+{t}" for t in added] + [f"-{t}" for t in removing]
                conn.execute(
                    insert(run_event),
                    {
                        "run_id": run_id,
                        "kind": "tags",
                        "status": status,
                        "at": at,
                        "message": " ".join(change),
                        "actor": actor,
                    },
                )
            after = (kept and KEEP_TAG not in removed) or KEEP_TAG in added
            if after != kept:
                self._keep_event(conn, run_id, actor or _local_user(), kept=after, at=at)

    def _keep_event(
        self,
        conn: Connection,
        run_id: int,
        actor: str,
        *,
        kept: bool,
        at: datetime,
    ) -> None:
        run = conn.execute(
            select(pipeline_run.c.status, pipeline.c.name)
            .join(pipeline, pipeline.c.id == pipeline_run.c.pipeline_id)
            .where(pipeline_run.c.id == run_id)
        ).one()
        pathspec = f"{run.name}/{run_id}"
        if kept:
            message = f"kept run {pathspec}: tag {KEEP_TAG!r} added, so no deletion removes it"
        else:
            message = f"unkept run {pathspec}: tag {KEEP_TAG!r} removed"
        conn.execute(
            insert(governance_event).values(
                at=at,
                actor=actor,
                action="run_kept" if kept else "run_unkept",
                run_id=run_id,
                message=message,
                detail={"pathspec": pathspec, "status": run.status, "tag": KEEP_TAG},
            )
        )

    def _facts(self, conn: Connection, run_id: int) -> RunFacts:
        run = conn.execute(
            select(
                pipeline_run.c.status,
                pipeline_run.c.created_at,
                pipeline.c.name.label("pipeline"),
            )
            .join(pipeline, pipeline.c.id == pipeline_run.c.pipeline_id)
            .where(pipeline_run.c.id == run_id)
        ).one()
        tags = conn.execute(
            select(run_tag.c.tag).where(run_tag.c.run_id == run_id).order_by(run_tag.c.tag)
        ).scalars()
        tasks = select(block_run.c.id).where(block_run.c.run_id == run_id)
        outputs = select(artifact_link.c.artifact_key).where(
            artifact_link.c.run_id == run_id, artifact_link.c.direction == "output"
        )
        versions = conn.execute(
            select(model_version.c.id, model_version.c.version, registered_model.c.name)
            .join(registered_model, registered_model.c.id == model_version.c.model_id)
            .where(
                or_(
                    model_version.c.run_id == run_id,
                    model_version.c.block_run_id.in_(tasks),
                    model_version.c.artifact_key.in_(outputs),
                )
            )
            .order_by(registered_model.c.name, model_version.c.version)
        ).all()
        uses = []
        for v in versions:
            aliases = conn.execute(
                select(model_alias.c.alias).where(model_alias.c.version_id == v.id)
            ).scalars()
            pending = conn.execute(
                select(promotion_request.c.alias).where(
                    promotion_request.c.version_id == v.id,
                    promotion_request.c.status == "pending",
                )
            ).scalars()
            uses.append(VersionUse(v.name, v.version, tuple(sorted(aliases)), tuple(pending)))
        dependents = conn.execute(
            select(pipeline_run.c.id)
            .where(
                or_(
                    pipeline_run.c.origin_run_id == run_id,
                    pipeline_run.c.upstream_run_id == run_id,
                ),
                pipeline_run.c.status.in_(_UNFINISHED),
            )
            .order_by(pipeline_run.c.id)
        ).scalars()
        return RunFacts(
            run_id=run_id,
            pathspec=f"{run.pipeline}/{run_id}",
            pipeline=run.pipeline,
            status=run.status,
            created_at=run.created_at,
            tags=tuple(tags),
            versions=tuple(uses),
            unfinished_dependents=tuple(dependents),
        )

    def _clear_pointers(
        self, conn: Connection, facts: RunFacts, actor: str, *, dry_run: bool
    ) -> dict[str, list[int]]:
        """NULL every pointer of another row at the run or its tasks (with ``dry_run``, only
        find them); the ids of those rows, by column."""
        run_id = facts.run_id
        tasks = select(block_run.c.id).where(block_run.c.run_id == run_id)
        cleared: dict[str, list[int]] = {}
        at = now()

        def clear(name: str, table: Any, column: str, where: Any) -> list[int]:
            ids = list(conn.execute(select(table.c.id).where(where)).scalars())
            if ids:
                cleared[name] = sorted(ids)
            if ids and not dry_run:
                conn.execute(update(table).where(table.c.id.in_(ids)).values({column: None}))
            return [] if dry_run else ids

        other_run = pipeline_run.c.id != run_id
        for column in ("origin_run_id", "upstream_run_id"):
            runs = clear(
                column, pipeline_run, column, (pipeline_run.c[column] == run_id) & other_run
            )
            for other in runs:
                what = "origin" if column == "origin_run_id" else "upstream"
                status = conn.execute(
                    select(pipeline_run.c.status).where(pipeline_run.c.id == other)
                ).scalar_one()
                conn.execute(
                    insert(run_event).values(
                        run_id=other,
                        kind="note",
                        status=status,
                        at=at,
                        message=f"its {what} run {facts.pathspec} was deleted by {actor}",
                        actor=actor,
                    )
                )
        reused = block_run.c.reused_from_task_id.in_(tasks) & (block_run.c.run_id != run_id)
        clear("reused_from_task_id", block_run, "reused_from_task_id", reused)
        produced = artifact_link.c.producer_block_run_id.in_(tasks) & (
            artifact_link.c.run_id != run_id
        )
        clear("producer_block_run_id", artifact_link, "producer_block_run_id", produced)
        # A tick with neither run nor reason is open and would be launched again: give it one.
        started = clear(
            "trigger_tick.run_id", trigger_tick, "run_id", trigger_tick.c.run_id == run_id
        )
        if started:
            conn.execute(
                update(trigger_tick)
                .where(trigger_tick.c.id.in_(started), trigger_tick.c.skip_reason.is_(None))
                .values(skip_reason=f"its run {facts.pathspec} was deleted")
            )
        clear(
            "trigger_tick.cause_run_id",
            trigger_tick,
            "cause_run_id",
            trigger_tick.c.cause_run_id == run_id,
        )
        clear("alert.run_id", alert, "run_id", alert.c.run_id == run_id)
        return cleared

    def _delete_rows(self, conn: Connection, run_id: int) -> None:
        row = conn.execute(
            select(
                pipeline_run.c.pipeline_id, pipeline_run.c.status, pipeline_run.c.duration_s
            ).where(pipeline_run.c.id == run_id)
        ).one()
        tasks = select(block_run.c.id).where(block_run.c.run_id == run_id)
        conn.execute(delete(latest_metric).where(latest_metric.c.run_id == run_id))
        conn.execute(delete(metric_block).where(metric_block.c.run_id == run_id))
        conn.execute(delete(log_chunk).where(log_chunk.c.block_run_id.in_(tasks)))
        conn.execute(delete(artifact_link).where(artifact_link.c.run_id == run_id))
        conn.execute(delete(run_event).where(run_event.c.run_id == run_id))
        conn.execute(delete(run_param).where(run_param.c.run_id == run_id))
        conn.execute(delete(run_tag).where(run_tag.c.run_id == run_id))
        # A retry within the run never reuses its own tasks, but a NULL first keeps the
        # self-reference from ordering the delete.
        conn.execute(
            update(block_run)
            .where(block_run.c.run_id == run_id, block_run.c.reused_from_task_id.is_not(None))
            .values(reused_from_task_id=None)
        )
        conn.execute(delete(block_run).where(block_run.c.run_id == run_id))
        conn.execute(delete(pipeline_run).where(pipeline_run.c.id == run_id))
        duration = row.duration_s
        tally(
            conn,
            {
                (row.pipeline_id, row.status): (
                    -1,
                    -(duration or 0.0),
                    -1 if duration is not None else 0,
                )
            },
        )

    @patient("read")
    def model_lineage(self) -> dict[int, tuple[str, ...]]:
        """The runs upstream of a model version's run (whose outputs its tasks consumed, by
        task or by content hash, transitively) → the versions (``name/N``) they lead to."""
        upstream: dict[int, set[str]] = {}
        with self._read() as conn:
            versions = conn.execute(
                select(model_version.c.run_id, model_version.c.version, registered_model.c.name)
                .join(registered_model, registered_model.c.id == model_version.c.model_id)
                .order_by(registered_model.c.name, model_version.c.version)
            ).all()
            for v in versions:
                seen, frontier = {v.run_id}, {v.run_id}
                while frontier:
                    found = self._producers(conn, frontier) - seen
                    for run_id in found:
                        upstream.setdefault(run_id, set()).add(f"{v.name}/{v.version}")
                    seen |= found
                    frontier = found
        return {run_id: tuple(sorted(refs)) for run_id, refs in upstream.items()}

    def _producers(self, conn: Connection, runs: set[int]) -> set[int]:
        """The runs whose tasks produced what the tasks of ``runs`` consumed or reused, as the
        lineage graph walks up: an input's producing task when its link names one, else the
        tasks that output its content; a reused output's origin task; never an external file."""
        links = conn.execute(
            select(artifact_link.c.artifact_key, artifact_link.c.producer_block_run_id).where(
                artifact_link.c.run_id.in_(runs),
                or_(
                    (artifact_link.c.direction == "input") & (artifact_link.c.kind != "external"),
                    artifact_link.c.producer_block_run_id.is_not(None),
                ),
            )
        ).all()
        tasks = {task for _, task in links if task is not None}
        keys = {key for key, task in links if task is None}
        found = set(
            conn.execute(select(block_run.c.run_id).where(block_run.c.id.in_(tasks))).scalars()
        )
        if keys:
            found.update(
                conn.execute(
                    select(artifact_link.c.run_id).where(
                        artifact_link.c.direction == "output",
                        artifact_link.c.artifact_key.in_(keys),
                    )
                ).scalars()
            )
        return found

    @patient("read")
    def referenced_keys(self) -> set[str]:
        """Every artifact key a remaining run or model version uses: linked artifacts (inputs
        and outputs), model versions' artifacts and runs' code snapshots."""
        with self._read() as conn:
            keys = set(conn.execute(select(artifact_link.c.artifact_key).distinct()).scalars())
            keys.update(conn.execute(select(model_version.c.artifact_key).distinct()).scalars())
            keys.update(
                k
                for k in conn.execute(select(pipeline_run.c.code_key).distinct()).scalars()
                if k is not None
            )
        return keys

    @patient("write")
    def collect_rows(self, keep: set[str], *, dry_run: bool = False) -> RowsCollected:
        """Delete the rows no run or model version references: artifacts (unless their key is
        in ``keep``), environments and pipeline versions. With ``dry_run``, only count them."""
        with self._write() as conn:
            linked = exists().where(artifact_link.c.artifact_key == artifact.c.key)
            registered = exists().where(model_version.c.artifact_key == artifact.c.key)
            artifacts = [
                k
                for k in conn.execute(select(artifact.c.key).where(~linked, ~registered)).scalars()
                if k not in keep
            ]
            used_env = exists().where(pipeline_run.c.environment_id == environment.c.id)
            environments = list(conn.execute(select(environment.c.id).where(~used_env)).scalars())
            used_version = exists().where(pipeline_run.c.version_id == pipeline_version.c.id)
            versions = list(
                conn.execute(select(pipeline_version.c.id).where(~used_version)).scalars()
            )
            if not dry_run:
                for start in range(0, len(artifacts), 500):
                    batch = artifacts[start : start + 500]
                    conn.execute(
                        delete(artifact).where(artifact.c.key.in_(batch), ~linked, ~registered)
                    )
                if environments:
                    conn.execute(
                        delete(environment).where(environment.c.id.in_(environments), ~used_env)
                    )
                if versions:
                    conn.execute(
                        delete(pipeline_version).where(
                            pipeline_version.c.id.in_(versions), ~used_version
                        )
                    )
        return RowsCollected(len(artifacts), len(environments), len(versions))

    @patient("write")
    def claim_housekeeping(self, name: str, now: datetime, every_s: float) -> bool:
        """Claim the periodic job ``name`` (say ``retention``) for ``now`` when it last ran at
        least ``every_s`` ago, or never: of schedulers sharing a store, one wins each period."""
        key = f"housekeeping:{name}"
        with self._write() as conn:
            if insert_once(conn, scheduler_cursor, {"name": key, "at": now}, ["name"]):
                return True
            claimed = conn.execute(
                update(scheduler_cursor)
                .where(
                    scheduler_cursor.c.name == key,
                    scheduler_cursor.c.at <= now - timedelta(seconds=every_s),
                )
                .values(at=now)
            ).rowcount
        return bool(claimed)


def _local_user() -> str:
    """Who runs this process, for a change made through the store without an actor."""
    try:
        return getpass.getuser()
    except Exception:  # no such user in the password database, no USER variable
        return os.environ.get("USER") or "unknown"
