"""Triggers in the SQL store: their definitions, pause state, and the ticks schedulers claimed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, select, update

from pipetrail.errors import NotFoundError, UsageError
from pipetrail.storage.metadata.base import TickRecord, TriggerDefinition, TriggerRecord
from pipetrail.storage.metadata.sql.engine import insert_once
from pipetrail.storage.metadata.sql.session import SqlSession, now, patient
from pipetrail.storage.metadata.sql.tables import trigger, trigger_tick

__all__ = ["TriggerRows"]

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
    )


class TriggerRows(SqlSession):
    """The trigger half of the metadata store."""

    @patient("write")
    def create_trigger(self, definition: TriggerDefinition) -> TriggerRecord:
        """Store a new trigger, active (not paused).

        Raises:
            UsageError: a trigger with this name exists.
        """
        at = now()
        values = {c: getattr(definition, c) for c in _SCHEDULE}
        row = {
            "name": definition.name,
            "tags": list(definition.tags),
            "paused": False,
            "created_at": at,
            "updated_at": at,
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
    def set_trigger_paused(self, name: str, paused: bool) -> TriggerRecord:
        """Pause or resume a trigger; a paused trigger claims no ticks.

        Raises:
            NotFoundError: no such trigger.
        """
        with self._write() as conn:
            changed = conn.execute(
                update(trigger)
                .where(trigger.c.name == name)
                .values(paused=paused, updated_at=now())
            ).rowcount
        if not changed:
            raise NotFoundError(f"no trigger named {name!r} in the store")
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
    def claim_tick(self, trigger_id: int, scheduled_at: datetime) -> bool:
        """Claim the tick of ``trigger_id`` at ``scheduled_at``; False when it was claimed before.

        Exactly one caller wins a tick, across schedulers and restarts: the pair is unique.
        """
        row = {"trigger_id": trigger_id, "scheduled_at": scheduled_at, "claimed_at": now()}
        with self._write() as conn:
            return insert_once(conn, trigger_tick, row, ["trigger_id", "scheduled_at"])

    @patient("write")
    def settle_tick(
        self,
        trigger_id: int,
        scheduled_at: datetime,
        *,
        run_id: int | None = None,
        skip_reason: str | None = None,
    ) -> None:
        """Record what a claimed tick became: the run it started, or why it started none."""
        with self._write() as conn:
            conn.execute(
                update(trigger_tick)
                .where(
                    trigger_tick.c.trigger_id == trigger_id,
                    trigger_tick.c.scheduled_at == scheduled_at,
                )
                .values(run_id=run_id, skip_reason=skip_reason)
            )

    @patient("read")
    def ticks(self, trigger_id: int, limit: int | None = None) -> list[TickRecord]:
        """The trigger's claimed ticks, newest first."""
        query = (
            select(trigger_tick)
            .where(trigger_tick.c.trigger_id == trigger_id)
            .order_by(trigger_tick.c.scheduled_at.desc())
            .limit(limit)
        )
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [
            TickRecord(
                trigger_id=r.trigger_id,
                scheduled_at=r.scheduled_at,
                claimed_at=r.claimed_at,
                run_id=r.run_id,
                skip_reason=r.skip_reason,
            )
            for r in rows
        ]

    @patient("read")
    def last_tick_at(self, trigger_id: int) -> datetime | None:
        """The scheduled time of the trigger's newest claimed tick (None: never ticked)."""
        query = (
            select(trigger_tick.c.scheduled_at)
            .where(trigger_tick.c.trigger_id == trigger_id)
            .order_by(trigger_tick.c.scheduled_at.desc())
            .limit(1)
        )
        with self._read() as conn:
            value: datetime | None = conn.execute(query).scalar_one_or_none()
        return value
