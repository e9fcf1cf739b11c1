"""Triggers in the SQL store: their definitions, pause state, and the ticks schedulers claimed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, or_, select, update

from pipetrail.errors import NotFoundError, UsageError
from pipetrail.storage.metadata.base import TickRecord, TriggerDefinition, TriggerRecord
from pipetrail.storage.metadata.sql.engine import insert_once
from pipetrail.storage.metadata.sql.session import SqlSession, now, patient
from pipetrail.storage.metadata.sql.tables import trigger, trigger_tick

__all__ = ["FIRED", "TriggerRows"]

#: The note of a tick fired by hand or over REST (``fired: manual``), not by the schedule.
FIRED = "fired:"

_SCHEDULE = (
    "pipeline_file",
    "pipeline_name",
    "kind",
    "cron",
    "interval_s",
    "start_at",
    "end_at",
    "once_at",
    "after_pipeline",
    "after_on",
    "timezone",
    "params",
    "variables",
    "timeout_s",
    "on_timeout",
    "sla_s",
    "max_concurrent",
    "overlap",
    "catchup",
)


def _record(row: Row[Any]) -> TriggerRecord:
    values = {c: getattr(row, c) for c in _SCHEDULE}
    definition = TriggerDefinition(name=row.name, tags=tuple(row.tags), **values)
    return TriggerRecord(
        id=row.id,
        definition=definition,
        paused=row.paused,
        created_at=row.created_at,
        updated_at=row.updated_at,
        active_since=row.active_since or row.created_at,
    )


def _tick(r: Row[Any]) -> TickRecord:
    return TickRecord(
        trigger_id=r.trigger_id,
        scheduled_at=r.scheduled_at,
        claimed_at=r.claimed_at,
        run_id=r.run_id,
        skip_reason=r.skip_reason,
        cause_run_id=r.cause_run_id,
        launcher_host=r.launcher_host,
        launcher_pid=r.launcher_pid,
        launches=r.launches,
        note=r.note,
        id=r.id,
    )


#: The fields whose change moves a trigger's ``active_since`` (ticks before it are not missed).
_WHEN = ("kind", "cron", "interval_s", "start_at", "end_at", "once_at", "timezone")


class TriggerRows(SqlSession):
    """The trigger half of the metadata store."""

    @patient("write")
    def create_trigger(
        self, definition: TriggerDefinition, *, at: datetime | None = None
    ) -> TriggerRecord:
        """Store a new trigger, active (not paused) from ``at`` (default: now).

        ``at`` is the caller's clock (a scheduler's, a test's): its ticks are due from then.

        Raises:
            UsageError: a trigger with this name exists.
        """
        at = at or now()
        values = {c: getattr(definition, c) for c in _SCHEDULE}
        row = {
            "name": definition.name,
            "tags": list(definition.tags),
            "paused": False,
            "created_at": at,
            "updated_at": at,
            "active_since": at,
            **values,
        }
        with self._write() as conn:
            if not insert_once(conn, trigger, row, ["name"]):
                raise UsageError(
                    f"a trigger named {definition.name!r} exists already; pick another name "
                    "or delete it first"
                )
            stored = conn.execute(select(trigger).where(trigger.c.name == definition.name)).one()
        return _record(stored)

    @patient("read")
    def get_trigger(self, name: str) -> TriggerRecord:
        """The trigger called ``name``.

        Raises:
            NotFoundError: no such trigger.
        """
        with self._read() as conn:
            row = conn.execute(select(trigger).where(trigger.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"no trigger named {name!r} in the store")
        return _record(row)

    @patient("read")
    def list_triggers(self) -> list[TriggerRecord]:
        """Every trigger, by name."""
        with self._read() as conn:
            rows = conn.execute(select(trigger).order_by(trigger.c.name)).all()
        return [_record(r) for r in rows]

    @patient("write")
    def update_trigger(
        self, definition: TriggerDefinition, *, at: datetime | None = None
    ) -> TriggerRecord:
        """Replace the definition of the trigger of that name (its ticks and runs stay).

        A change of schedule counts as a fresh start at ``at`` (default: now): ticks before it
        are not missed ones.

        Raises:
            NotFoundError: no such trigger.
        """
        at = at or now()
        values: dict[str, Any] = {c: getattr(definition, c) for c in _SCHEDULE}
        values["tags"] = list(definition.tags)
        with self._write() as conn:
            row = conn.execute(select(trigger).where(trigger.c.name == definition.name)).first()
            if row is None:
                raise NotFoundError(f"no trigger named {definition.name!r} in the store")
            if any(getattr(row, c) != values[c] for c in _WHEN):
                values["active_since"] = at
            conn.execute(
                update(trigger).where(trigger.c.id == row.id).values(updated_at=at, **values)
            )
        return self.get_trigger(definition.name)

    @patient("write")
    def set_trigger_paused(
        self, name: str, paused: bool, *, at: datetime | None = None
    ) -> TriggerRecord:
        """Pause or resume a trigger; a paused trigger claims no ticks.

        Resuming counts as a fresh start at ``at`` (default: now): the ticks it slept through
        are not missed ones.

        Raises:
            NotFoundError: no such trigger.
        """
        at = at or now()
        values: dict[str, Any] = {"paused": paused, "updated_at": at}
        with self._write() as conn:
            row = conn.execute(select(trigger.c.paused).where(trigger.c.name == name)).first()
            if row is None:
                raise NotFoundError(f"no trigger named {name!r} in the store")
            if row.paused and not paused:
                values["active_since"] = at
            conn.execute(update(trigger).where(trigger.c.name == name).values(**values))
        return self.get_trigger(name)

    @patient("write")
    def delete_trigger(self, name: str) -> None:
        """Delete a trigger and its ticks (the runs it started stay).

        Raises:
            NotFoundError: no such trigger.
        """
        with self._write() as conn:
            found = conn.execute(select(trigger.c.id).where(trigger.c.name == name)).first()
            if found is None:
                raise NotFoundError(f"no trigger named {name!r} in the store")
            conn.execute(delete(trigger_tick).where(trigger_tick.c.trigger_id == found.id))
            conn.execute(delete(trigger).where(trigger.c.id == found.id))

    @patient("write")
    def claim_tick(
        self,
        trigger_id: int,
        scheduled_at: datetime,
        *,
        cause_run_id: int | None = None,
        launcher: tuple[str, int] | None = None,
        note: str | None = None,
        skip_reason: str | None = None,
    ) -> bool:
        """Claim the tick of ``trigger_id`` at ``scheduled_at``; False when it was claimed before.

        Exactly one caller wins a tick, across schedulers and restarts: the pair is unique, and
        so is (trigger, ``cause_run_id``) for a tick caused by an upstream run. ``launcher``
        (host, pid) is who starts its run; ``skip_reason`` claims it settled, with no run.
        """
        host, pid = launcher or (None, None)
        row = {
            "trigger_id": trigger_id,
            "scheduled_at": scheduled_at,
            "claimed_at": now(),
            "cause_run_id": cause_run_id,
            "launcher_host": host,
            "launcher_pid": pid,
            "launches": 0 if launcher is None else 1,
            "note": note,
            "skip_reason": skip_reason,
        }
        with self._write() as conn:
            if cause_run_id is not None:
                taken = conn.execute(
                    select(trigger_tick.c.id).where(
                        trigger_tick.c.trigger_id == trigger_id,
                        trigger_tick.c.cause_run_id == cause_run_id,
                    )
                ).first()
                if taken is not None:
                    return False
            return insert_once(conn, trigger_tick, row, ["trigger_id", "scheduled_at"])

    @patient("write")
    def settle_tick(
        self,
        trigger_id: int,
        scheduled_at: datetime,
        *,
        run_id: int | None = None,
        skip_reason: str | None = None,
    ) -> bool:
        """Record what a claimed tick became, once: the run it started, or why it started none.

        Returns False when the tick had its outcome already (another launcher was first).
        """
        with self._write() as conn:
            changed = conn.execute(
                update(trigger_tick)
                .where(
                    trigger_tick.c.trigger_id == trigger_id,
                    trigger_tick.c.scheduled_at == scheduled_at,
                    trigger_tick.c.run_id.is_(None),
                    trigger_tick.c.skip_reason.is_(None),
                )
                .values(run_id=run_id, skip_reason=skip_reason)
            ).rowcount
        return bool(changed)

    @patient("write")
    def tick_launched(
        self, trigger_id: int, scheduled_at: datetime, launcher: tuple[str, int]
    ) -> None:
        """Record the process (host, pid) that is now starting the tick's run."""
        with self._write() as conn:
            conn.execute(
                update(trigger_tick)
                .where(
                    trigger_tick.c.trigger_id == trigger_id,
                    trigger_tick.c.scheduled_at == scheduled_at,
                )
                .values(launcher_host=launcher[0], launcher_pid=launcher[1])
            )

    @patient("write")
    def relaunch_tick(self, tick: TickRecord, launcher: tuple[str, int]) -> bool:
        """Take over a tick whose launcher died before its run was created; one caller wins."""
        with self._write() as conn:
            changed = conn.execute(
                update(trigger_tick)
                .where(
                    trigger_tick.c.id == tick.id,
                    trigger_tick.c.launches == tick.launches,
                    trigger_tick.c.run_id.is_(None),
                    trigger_tick.c.skip_reason.is_(None),
                )
                .values(
                    launches=tick.launches + 1,
                    launcher_host=launcher[0],
                    launcher_pid=launcher[1],
                    claimed_at=now(),
                )
            ).rowcount
        return bool(changed)

    @patient("read")
    def unsettled_ticks(self) -> list[TickRecord]:
        """Claimed ticks with neither a run nor a reason yet (starting, or their launcher died)."""
        query = (
            select(trigger_tick)
            .where(trigger_tick.c.run_id.is_(None), trigger_tick.c.skip_reason.is_(None))
            .order_by(trigger_tick.c.scheduled_at)
        )
        with self._read() as conn:
            return [_tick(r) for r in conn.execute(query).all()]

    @patient("read")
    def get_tick(self, trigger_id: int, scheduled_at: datetime) -> TickRecord | None:
        """The claimed tick of ``trigger_id`` at ``scheduled_at``, if any."""
        query = select(trigger_tick).where(
            trigger_tick.c.trigger_id == trigger_id,
            trigger_tick.c.scheduled_at == scheduled_at,
        )
        with self._read() as conn:
            row = conn.execute(query).first()
        return None if row is None else _tick(row)

    @patient("read")
    def ticks(
        self, trigger_id: int, limit: int | None = None, *, scheduled_only: bool = False
    ) -> list[TickRecord]:
        """The trigger's claimed ticks, newest first; with ``scheduled_only``, not those fired by
        hand or over REST (they say nothing of where the schedule is)."""
        query = (
            select(trigger_tick)
            .where(trigger_tick.c.trigger_id == trigger_id)
            .order_by(trigger_tick.c.scheduled_at.desc())
            .limit(limit)
        )
        if scheduled_only:
            query = query.where(
                or_(trigger_tick.c.note.is_(None), ~trigger_tick.c.note.startswith(FIRED))
            )
        with self._read() as conn:
            return [_tick(r) for r in conn.execute(query).all()]

    def last_tick(self, trigger_id: int, *, scheduled_only: bool = False) -> TickRecord | None:
        """The trigger's newest claimed tick (None: never ticked)."""
        newest = self.ticks(trigger_id, limit=1, scheduled_only=scheduled_only)
        return newest[0] if newest else None

    def last_tick_at(self, trigger_id: int, *, scheduled_only: bool = False) -> datetime | None:
        """The scheduled time of the trigger's newest claimed tick (None: never ticked)."""
        tick = self.last_tick(trigger_id, scheduled_only=scheduled_only)
        return None if tick is None else tick.scheduled_at
