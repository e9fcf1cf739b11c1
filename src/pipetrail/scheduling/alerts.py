"""Alerts through an outbox in the store: raised once, delivered with retries by any scheduler.

Raising an alert writes one outbox row per notifier that wants it (idempotent by key); a
delivery thread of the scheduler claims due rows, tries each once, and records the outcome:
delivered, retried later (backoff), or given up. A notifier that is down delays only its own
alerts; nothing waits for it, and no alert is lost when a scheduler stops or dies.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pipetrail.core.model import RunRecord
from pipetrail.scheduling.notify import Alert, Notifier, run_link
from pipetrail.storage.metadata.base import MetadataStore, NewAlert, TriggerRecord

__all__ = ["AlertCenter", "Backoff", "run_alert", "start_failed_alert"]


@dataclass(frozen=True)
class Backoff:
    """Delivery retries: ``first_s``, doubled each time up to ``most_s``; ``attempts`` in all."""

    first_s: float = 2.0
    most_s: float = 300.0
    attempts: int = 8

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.most_s, self.first_s * 2 ** (attempt - 1)))


def run_alert(
    event: str, run: RunRecord, message: str, *, base_url: str | None, at: datetime
) -> Alert:
    """The alert of ``event`` about ``run``, linked to its dashboard page."""
    link = run_link(base_url, run.pathspec) if base_url else None
    return Alert(
        event=event,
        pipeline=run.pipeline,
        run=run.pathspec,
        status=run.status.value,
        trigger=run.cause.trigger if run.cause else None,
        message=message,
        link=link,
        at=at,
    )


def start_failed_alert(
    record: TriggerRecord, reason: str, *, base_url: str | None, at: datetime
) -> Alert:
    """The alert that a tick of ``record`` could not start a run, and why."""
    from urllib.parse import quote

    return Alert(
        event="start_failed",
        pipeline=record.definition.pipeline_name or record.definition.pipeline_file,
        run=None,
        status=None,
        trigger=record.name,
        message=f"trigger {record.name!r}: {reason}",
        link=f"{base_url}/triggers/{quote(record.name, safe='')}" if base_url else None,
        at=at,
    )


class AlertCenter:
    """Raises alerts into the store's outbox and delivers what is due.

    Args:
        store: the metadata store (its outbox is shared by every scheduler).
        notifiers: the configured notifiers, by their names.
        backoff: how delivery is retried.
        clock: the current time.
    """

    def __init__(
        self,
        store: MetadataStore,
        notifiers: Sequence[Notifier],
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.notifiers = {n.name: n for n in notifiers}
        self.backoff = backoff or Backoff()
        self.clock = clock
        timeouts = [float(getattr(n, "timeout", 10.0) or 10.0) for n in notifiers]
        #: How long a claimed alert is this scheduler's: well past a slow attempt (DNS aside).
        self.claim_s = 6 * max(timeouts, default=10.0) + 30.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start_failed(
        self, record: TriggerRecord, tick: datetime, reason: str, *, base_url: str | None
    ) -> int:
        """Raise that the tick of ``record`` at ``tick`` could not start a run (once per tick)."""
        alert = start_failed_alert(record, reason, base_url=base_url, at=self.clock())
        return self.raise_alert(alert, key=f"start_failed:{record.id}:{tick.isoformat()}")

    def raise_alert(self, alert: Alert, *, key: str, run_id: int | None = None) -> int:
        """Queue ``alert`` for every notifier that wants it, once per ``key``; how many new."""
        rows = [
            NewAlert(
                dedup_key=f"{key}:{n.name}"[:300],
                event=alert.event,
                notifier=n.name,
                payload=alert.to_json(),
                run_id=run_id,
                trigger_name=alert.trigger,
            )
            for n in self.notifiers.values()
            if n.wants(alert)
        ]
        if not rows:
            return 0
        return len(self.store.enqueue_alerts(rows, self.clock()))

    def deliver_due(self, limit: int = 50) -> int:
        """Try every due alert once (claimed, so no other scheduler sends it meanwhile);
        returns how many were delivered."""
        delivered = 0
        for _ in range(limit):
            # One claim at a time, for longer than one attempt can take: a slow notifier
            # never lets a claim run out under it (another scheduler would send it again).
            claimed = self.store.due_alerts(self.clock(), claim_s=self.claim_s, limit=1)
            if not claimed:
                break
            row = claimed[0]
            notifier = self.notifiers.get(row.notifier)
            error: str | None
            if notifier is None:
                error = f"notifier {row.notifier!r} is not configured any more"
                attempts_left = False
            else:
                retryable = True
                try:
                    notifier.deliver(Alert.from_json(row.payload))
                    error = None
                except Exception as exc:  # a notifier's failure is recorded, never raised
                    error = str(exc) or type(exc).__name__
                    # A refusal that a retry cannot change (a 4xx, a refused recipient) is final.
                    retryable = bool(getattr(exc, "retryable", True))
                attempts_left = retryable and row.attempts + 1 < self.backoff.attempts
            at = self.clock()
            retry_at = (
                at + timedelta(seconds=self.backoff.delay(row.attempts + 1))
                if error is not None and attempts_left
                else None
            )
            self.store.alert_attempted(row.id, at=at, error=error, retry_at=retry_at)
            delivered += error is None
        return delivered

    def start(self, interval_s: float = 0.5) -> None:
        """Deliver in a thread of its own, so a slow notifier never holds up the ticks."""
        if self._thread is not None or not self.notifiers:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval_s):
                # The store being away now and then must not end delivery for good.
                with contextlib.suppress(Exception):
                    self.deliver_due()

        self._thread = threading.Thread(target=loop, name="pipetrail-alerts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30.0)
            self._thread = None
