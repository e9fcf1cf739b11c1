"""What schedulers watch in the SQL store: run endings, SLAs, the alert outbox, themselves."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, insert, or_, select, update

from pipetrail.core.model import RunRecord
from pipetrail.core.status import RUN_TERMINAL, RunStatus
from pipetrail.storage.metadata.base import AlertRecord, NewAlert, SchedulerInstance
from pipetrail.storage.metadata.sql.engine import insert_once, upsert
from pipetrail.storage.metadata.sql.runs import RunRows
from pipetrail.storage.metadata.sql.session import now, patient
from pipetrail.storage.metadata.sql.tables import (
    alert,
    pipeline_run,
    run_event,
    scheduler_cursor,
    scheduler_instance,
)

__all__ = ["WatchRows"]

_ENDED = [s.value for s in RUN_TERMINAL]


def _alert(r: Row[Any]) -> AlertRecord:
    return AlertRecord(
        id=r.id,
        event=r.event,
        notifier=r.notifier,
        payload=dict(r.payload),
        run_id=r.run_id,
        trigger_name=r.trigger_name,
        created_at=r.created_at,
        attempts=r.attempts,
        next_attempt_at=r.next_attempt_at,
        delivered_at=r.delivered_at,
        failed_at=r.failed_at,
        last_error=r.last_error,
    )


class WatchRows(RunRows):
    """Run endings, SLAs, alerts and scheduler instances, for the scheduling loop."""

    @patient("read")
    def runs_ended_since(self, since: datetime, limit: int = 1000) -> list[RunRecord]:
        """Every run that ended at or after ``since``, oldest ending first, read in keyset
        pages of ``limit`` (so however many ended in the window, none is left out)."""
        runs: list[RunRecord] = []
        after: tuple[datetime, int] | None = None
        with self._read() as conn:
            while True:
                where = [pipeline_run.c.finished_at >= since, pipeline_run.c.status.in_(_ENDED)]
                if after is not None:
                    ended_at, run_id = after
                    where.append(
                        or_(
                            pipeline_run.c.finished_at > ended_at,
                            and_(
                                pipeline_run.c.finished_at == ended_at,
                                pipeline_run.c.id > run_id,
                            ),
                        )
                    )
                rows = conn.execute(
                    select(pipeline_run.c.id, pipeline_run.c.finished_at)
                    .where(*where)
                    .order_by(pipeline_run.c.finished_at, pipeline_run.c.id)
                    .limit(limit)
                ).all()
                if rows:
                    page = [row.id for row in rows]
                    runs += self._runs(conn, [pipeline_run.c.id.in_(page)], limit=None)
                    after = (rows[-1].finished_at, rows[-1].id)
                if len(rows) < limit:
                    break
        return sorted(runs, key=lambda r: (r.finished_at or since, r.id))

    @patient("read")
    def previous_ended_run(self, run: RunRecord) -> RunRecord | None:
        """The run of the same pipeline that ended last before ``run`` (to tell a recovery)."""
        with self._read() as conn:
            row = conn.execute(
                select(pipeline_run.c.id)
                .where(
                    pipeline_run.c.pipeline_id
                    == select(pipeline_run.c.pipeline_id)
                    .where(pipeline_run.c.id == run.id)
                    .scalar_subquery(),
                    pipeline_run.c.id != run.id,
                    pipeline_run.c.status.in_(_ENDED),
                    pipeline_run.c.finished_at <= run.finished_at,
                )
                .order_by(pipeline_run.c.finished_at.desc(), pipeline_run.c.id.desc())
                .limit(1)
            ).first()
            if row is None:
                return None
            return self._runs(conn, [pipeline_run.c.id == row.id], limit=1)[0]

    @patient("read")
    def sla_pending(self, now: datetime) -> list[RunRecord]:
        """Runs whose SLA is undecided but decidable: due by ``now``, or completed; the
        earliest due first."""
        with self._read() as conn:
            ids = conn.execute(
                select(pipeline_run.c.id)
                .where(
                    pipeline_run.c.sla_state.is_(None),
                    pipeline_run.c.sla_due_at.is_not(None),
                    or_(
                        pipeline_run.c.sla_due_at <= now,
                        pipeline_run.c.status == RunStatus.COMPLETED.value,
                    ),
                )
                .order_by(pipeline_run.c.sla_due_at)
                .limit(500)
            ).scalars()
            runs = self._runs(conn, [pipeline_run.c.id.in_(list(ids))], limit=None)
        return sorted(runs, key=lambda r: (r.sla_due_at or now, r.id))

    @patient("write")
    def settle_sla(self, run_id: int, state: str, at: datetime) -> bool:
        """Decide a run's SLA once (``met`` or ``missed``); a miss is an event in its history.

        Returns False when it was decided before (another scheduler was first).
        """
        with self._write() as conn:
            values: dict[str, Any] = {"sla_state": state}
            if state == "missed":
                values["sla_missed_at"] = at
            changed = conn.execute(
                update(pipeline_run)
                .where(pipeline_run.c.id == run_id, pipeline_run.c.sla_state.is_(None))
                .values(**values)
            ).rowcount
            if changed and state == "missed":
                row = conn.execute(
                    select(pipeline_run.c.status, pipeline_run.c.sla_due_at).where(
                        pipeline_run.c.id == run_id
                    )
                ).one()
                conn.execute(
                    insert(run_event),
                    {
                        "run_id": run_id,
                        "kind": "sla_missed",
                        "status": row.status,
                        "at": at,
                        "message": f"SLA missed: not completed by {row.sla_due_at.isoformat()}",
                    },
                )
        return bool(changed)

    @patient("write")
    def enqueue_alerts(self, alerts: Sequence[NewAlert], at: datetime) -> list[NewAlert]:
        """Put alerts in the outbox, each once (by ``dedup_key``); returns those that were new.

        A new alert of a run is also an event in the run's history.
        """
        added = []
        with self._write() as conn:
            for a in alerts:
                row = {
                    "dedup_key": a.dedup_key,
                    "event": a.event,
                    "notifier": a.notifier,
                    "run_id": a.run_id,
                    "trigger_name": a.trigger_name,
                    "payload": a.payload,
                    "created_at": at,
                    "attempts": 0,
                    "next_attempt_at": at,
                }
                if insert_once(conn, alert, row, ["dedup_key"]):
                    added.append(a)
        return added

    @patient("write")
    def due_alerts(self, now: datetime, claim_s: float, limit: int = 50) -> list[AlertRecord]:
        """Claim undelivered alerts whose next attempt is due, for ``claim_s`` seconds.

        A claim keeps two schedulers from delivering the same alert at once; one that dies
        mid-delivery lets its claims run out and another scheduler delivers them.
        """
        pending = and_(
            alert.c.delivered_at.is_(None),
            alert.c.failed_at.is_(None),
            alert.c.next_attempt_at <= now,
            or_(alert.c.claimed_until.is_(None), alert.c.claimed_until < now),
        )
        until = now + timedelta(seconds=claim_s)
        claimed = []
        with self._write() as conn:
            rows = conn.execute(
                select(alert.c.id).where(pending).order_by(alert.c.next_attempt_at).limit(limit)
            ).all()
            for r in rows:
                won = conn.execute(
                    update(alert).where(alert.c.id == r.id, pending).values(claimed_until=until)
                ).rowcount
                if won:
                    claimed.append(r.id)
            if not claimed:
                return []
            found = conn.execute(select(alert).where(alert.c.id.in_(claimed))).all()
        return sorted((_alert(r) for r in found), key=lambda a: a.next_attempt_at)

    @patient("write")
    def alert_attempted(
        self,
        alert_id: int,
        *,
        at: datetime,
        error: str | None,
        retry_at: datetime | None,
    ) -> None:
        """Record one delivery attempt: delivered (no ``error``), retried at ``retry_at``, or
        given up (an ``error`` and no ``retry_at``). The outcome is an event of the alert's run."""
        values: dict[str, Any] = {"attempts": alert.c.attempts + 1, "claimed_until": None}
        if error is None:
            values["delivered_at"] = at
        else:
            values["last_error"] = error
            if retry_at is None:
                values["failed_at"] = at
            else:
                values["next_attempt_at"] = retry_at
        with self._write() as conn:
            conn.execute(update(alert).where(alert.c.id == alert_id).values(**values))
            row = conn.execute(select(alert).where(alert.c.id == alert_id)).one()
            if row.run_id is None or (error is not None and retry_at is not None):
                return
            status = conn.execute(
                select(pipeline_run.c.status).where(pipeline_run.c.id == row.run_id)
            ).scalar_one()
            outcome = (
                f"delivered to {row.notifier}"
                if error is None
                else f"not delivered to {row.notifier} after {row.attempts} attempts: {error}"
            )
            conn.execute(
                insert(run_event),
                {
                    "run_id": row.run_id,
                    "kind": "alert",
                    "status": status,
                    "at": at,
                    "message": f"alert {row.event} {outcome}",
                },
            )

    @patient("read")
    def alerts(
        self,
        *,
        run_id: int | None = None,
        trigger_name: str | None = None,
        limit: int | None = 100,
    ) -> list[AlertRecord]:
        """Alerts in the outbox, newest first, of one run or one trigger when given."""
        query = select(alert).order_by(alert.c.id.desc()).limit(limit)
        if run_id is not None:
            query = query.where(alert.c.run_id == run_id)
        if trigger_name is not None:
            query = query.where(alert.c.trigger_name == trigger_name)
        with self._read() as conn:
            return [_alert(r) for r in conn.execute(query).all()]

    @patient("read")
    def cursor(self, name: str) -> datetime | None:
        """Where the scan called ``name`` has got to (None: it never ran)."""
        with self._read() as conn:
            value: datetime | None = conn.execute(
                select(scheduler_cursor.c.at).where(scheduler_cursor.c.name == name)
            ).scalar_one_or_none()
        return value

    @patient("write")
    def set_cursor(self, name: str, at: datetime) -> None:
        """Move the scan called ``name`` on to ``at`` (never back)."""
        with self._write() as conn:
            current = conn.execute(
                select(scheduler_cursor.c.at).where(scheduler_cursor.c.name == name)
            ).scalar_one_or_none()
            if current is None:
                upsert(conn, scheduler_cursor, [{"name": name, "at": at}], ["name"])
            elif at > current:
                conn.execute(
                    update(scheduler_cursor)
                    .where(scheduler_cursor.c.name == name, scheduler_cursor.c.at < at)
                    .values(at=at)
                )

    @patient("write")
    def register_scheduler(self, host: str, pid: int) -> int:
        """Record a scheduler that starts; returns its instance id."""
        at = now()
        with self._write() as conn:
            return int(
                conn.execute(
                    insert(scheduler_instance)
                    .values(host=host, pid=pid, started_at=at, heartbeat_at=at)
                    .returning(scheduler_instance.c.id)
                ).scalar_one()
            )

    @patient("write")
    def scheduler_heartbeat(self, instance_id: int, *, stopped: bool = False) -> None:
        """A scheduler is alive (or, with ``stopped``, stopped cleanly)."""
        at = now()
        values: dict[str, Any] = {"heartbeat_at": at}
        if stopped:
            values["stopped_at"] = at
        with self._write() as conn:
            conn.execute(
                update(scheduler_instance)
                .where(scheduler_instance.c.id == instance_id)
                .values(**values)
            )

    @patient("read")
    def schedulers(self, alive_since: datetime | None = None) -> list[SchedulerInstance]:
        """Schedulers not stopped, newest first; with ``alive_since``, only those heard from since."""
        query = (
            select(scheduler_instance)
            .where(scheduler_instance.c.stopped_at.is_(None))
            .order_by(scheduler_instance.c.id.desc())
        )
        if alive_since is not None:
            query = query.where(scheduler_instance.c.heartbeat_at >= alive_since)
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [
            SchedulerInstance(r.id, r.host, r.pid, r.started_at, r.heartbeat_at, r.stopped_at)
            for r in rows
        ]
