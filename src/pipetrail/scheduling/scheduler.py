"""The scheduling loop: due ticks into runs exactly once, SLAs watched, alerts raised.

Every pass reads what it needs from the store and decides from that alone, so any number of
schedulers may share a store and any of them may be killed at any moment:

- a tick becomes a run only through its row in ``trigger_tick`` (unique trigger + time), claimed
  before its run is launched, and the run is bound to it in the run's own transaction;
- a claimed tick whose launcher died before recording the run is launched again (a few times,
  then given up with the reason), and a second launcher that races the first is refused;
- run endings (for ``after`` triggers and alerts) are read again over a look-back window, and
  every reaction to one is keyed (tick per upstream run, alert per run and event), so reading
  twice does nothing twice.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pipetrail.core.model import RunRecord
from pipetrail.core.status import RunStatus
from pipetrail.errors import StoreError, TickTakenError
from pipetrail.scheduling.alerts import AlertCenter
from pipetrail.scheduling.launcher import Launcher, LaunchOrder
from pipetrail.scheduling.service import watermark
from pipetrail.scheduling.triggers import CLOCK_KINDS, fire_times, previous_fire_time
from pipetrail.storage.metadata.base import MetadataStore, RunQuery, TickRecord, TriggerRecord

__all__ = ["PassReport", "Scheduler", "SchedulerOptions"]

_RUN_ENDINGS = "run_endings"
_UNFINISHED = (RunStatus.INITIAL, RunStatus.RUNNING)


@dataclass(frozen=True)
class SchedulerOptions:
    """How the loop behaves (the triggers' own options are in their definitions).

    Attributes:
        poll_s: seconds between passes.
        grace_s: a tick at most this late is on time; later, it is missed (see ``catchup``).
        relaunch_after_s: a tick launched on another host with no run after this long is
            launched again (on this host, a launcher that died is noticed at once).
        max_launches: launches of one tick before it is given up with the reason.
        lookback_s: run endings are read again this far back (commits land out of order).
        batch: most ticks of one trigger started in one pass (``catchup all`` after a long gap).
        always_on_retry_s: an always-on trigger whose run could not start tries again after this.
        heartbeat_s: how often the scheduler says it is alive, and looks for lost runners.
    """

    poll_s: float = 1.0
    grace_s: float = 60.0
    relaunch_after_s: float = 120.0
    max_launches: int = 3
    lookback_s: float = 120.0
    batch: int = 1000
    always_on_retry_s: float = 30.0
    heartbeat_s: float = 5.0
    #: With ``overlap wait``, most runs of one trigger waiting for a slot; a tick beyond that is
    #: skipped with the reason (a schedule faster than its runs must not pile up processes).
    max_waiting: int = 10
    #: How often the retention rules are applied (at start, then about this often; of several
    #: schedulers, the one that claims the period in the store does it).
    retention_s: float = 3600.0


@dataclass
class PassReport:
    """What one pass did."""

    claimed: int = 0
    launched: int = 0
    skipped: int = 0
    relaunched: int = 0
    given_up: int = 0
    sla_missed: int = 0
    alerts: int = 0
    started: list[tuple[str, datetime]] = field(default_factory=list)


class Scheduler:
    """Fires due ticks, watches SLAs and run endings, raises alerts.

    Args:
        store: the metadata store (shared with other schedulers, runners and servers).
        launcher: starts a tick's run in a process of its own.
        alerts: where alerts go (None: none are raised).
        base_url: the dashboard's address, for links in alerts.
        options: the loop's timing.
        clock: the current time.
        reap: called every ``heartbeat_s`` to fail runs whose runner died (a long-running
            process reaps lost runners itself).
        retention: applies the retention rules at a time; returns a line to say, or None.
    """

    def __init__(
        self,
        store: MetadataStore,
        launcher: Launcher,
        *,
        alerts: AlertCenter | None = None,
        base_url: str | None = None,
        options: SchedulerOptions | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        reap: Callable[[], object] | None = None,
        retention: Callable[[datetime], str | None] | None = None,
    ) -> None:
        self.store = store
        self.launcher = launcher
        self.alerts = alerts
        self.base_url = base_url
        self.options = options or SchedulerOptions()
        self.clock = clock
        self._reap = reap
        self._retention = retention
        self._retention_check_at = 0.0
        self.me = (socket.gethostname(), os.getpid())
        #: trigger id → (its updated_at, the next tick not yet due): triggers with nothing due
        #: cost no query. Only an optimisation: claims in the store decide.
        self._next: dict[int, tuple[datetime, datetime | None]] = {}
        self._instance: int | None = None
        self._beat_at = 0.0
        self._born = datetime.now(UTC)

    # -- the loop --------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Pass after pass until ``stop`` is set; the runs it started go on after it stops."""
        self._instance = self.store.register_scheduler(*self.me)
        if self.alerts is not None:
            self.alerts.start()
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    self.run_pass()
                except Exception as exc:  # the store away for a moment: try again next pass
                    _say(f"scheduler pass failed, retrying: {type(exc).__name__}: {exc}")
                stop.wait(max(0.0, self.options.poll_s - (time.monotonic() - started)))
        finally:
            if self.alerts is not None:
                self.alerts.stop()
            with contextlib.suppress(Exception):
                self.store.scheduler_heartbeat(self._instance, stopped=True)

    def run_pass(self) -> PassReport:
        """One look at everything: clock triggers, always-on, run endings, stale ticks, SLAs."""
        report = PassReport()
        now = self.clock()
        self.launcher.reap()
        self._beat()
        triggers = {r.id: r for r in self.store.list_triggers()}
        unsettled = self.store.unsettled_ticks()
        in_flight: dict[int, int] = {}
        for tick in unsettled:
            in_flight[tick.trigger_id] = in_flight.get(tick.trigger_id, 0) + 1
        for record in triggers.values():
            if record.paused:
                continue
            try:
                if record.definition.kind in CLOCK_KINDS:
                    self._clock_trigger(record, now, in_flight, report)
                elif record.definition.kind == "always_on":
                    self._always_on(record, now, in_flight, report)
            except TickTakenError:
                continue
            except Exception as exc:
                if isinstance(exc, StoreError):
                    raise  # the store is away: the whole pass is retried
                # One trigger's trouble must not stop the others.
                _say(f"trigger {record.name!r} skipped this pass: {type(exc).__name__}: {exc}")
        self._run_endings(triggers, now, in_flight, report)
        self._stale_ticks(triggers, unsettled, now, report)
        self._slas(now, report)
        self._apply_retention(now)
        return report

    def _beat(self) -> None:
        if time.monotonic() - self._beat_at < self.options.heartbeat_s:
            return
        self._beat_at = time.monotonic()
        if self._instance is not None:
            self.store.scheduler_heartbeat(self._instance)
        if self._reap is not None:
            self._reap()

    def _apply_retention(self, now: datetime) -> None:
        """The retention rules, when this scheduler claims the period (looked at each minute)."""
        if self._retention is None or time.monotonic() < self._retention_check_at:
            return
        self._retention_check_at = time.monotonic() + min(60.0, self.options.retention_s)
        if not self.store.claim_housekeeping("retention", now, self.options.retention_s):
            return
        try:
            said = self._retention(now)
        except StoreError:
            raise
        except Exception as exc:  # a rule's trouble must not stop the schedules
            _say(f"retention rules failed: {type(exc).__name__}: {exc}")
            return
        if said:
            _say(said)

    # -- clock triggers ------------------------------------------------------------------------

    def _clock_trigger(
        self, record: TriggerRecord, now: datetime, in_flight: dict[int, int], report: PassReport
    ) -> None:
        cached = self._next.get(record.id)
        if (
            cached is not None
            and cached[0] == record.updated_at
            and (cached[1] is None or cached[1] > now)
        ):
            return
        d = record.definition
        since = watermark(record)
        # Where the schedule is: ticks fired by hand or over REST do not move it.
        last = self.store.last_tick_at(record.id, scheduled_only=True)
        after = max(last, since) if last is not None else since
        due = list(fire_times(d, after, now, limit=self.options.batch + 1))
        truncated = len(due) > self.options.batch
        due = due[: self.options.batch]
        grace = timedelta(seconds=self.options.grace_s)
        # Only the newest due tick can be on time: one with a newer tick due after it is
        # late by a whole period at least, whatever the grace.
        if truncated and d.catchup != "all":
            # A long gap: the newest due tick without walking every one before it.
            newest = previous_fire_time(d, now)
            if newest is not None and newest > due[-1]:
                due = [*due, newest]
        on_time = [t for t in due[-1:] if now - t <= grace]
        missed = [t for t in due if t not in on_time]
        count = f"more than {len(due)}" if truncated else str(len(missed))
        span = f" ({missed[0].isoformat()} … {missed[-1].isoformat()})" if missed else ""
        to_run: list[tuple[datetime, str | None]] = [(t, None) for t in on_time]
        if d.catchup == "all":
            to_run += [(t, "catch-up all: a missed tick") for t in missed]
        elif d.catchup == "latest" and missed:
            if on_time:
                # The on-time tick is the latest one: the missed ones are not run.
                to_run[0] = (on_time[0], f"catch-up latest: {count} missed tick(s) not run{span}")
            else:
                latest = "catch-up latest: the newest missed tick"
                if len(missed) > 1 or truncated:
                    latest += f"; the {count} missed tick(s){span} run once, as this one"
                to_run.append((missed[-1], latest))
        elif d.catchup == "none" and missed:
            reason = f"catch-up none: {count} missed tick(s) skipped{span}"
            if self.store.claim_tick(record.id, missed[-1], skip_reason=reason):
                report.skipped += 1
        for tick, why in sorted(to_run, key=lambda pair: pair[0]):
            self._start(record, tick, now, in_flight, report, note=why)
        if truncated and d.catchup == "all":
            self._next.pop(record.id, None)  # more to start next pass
        else:
            self._next[record.id] = (record.updated_at, next(fire_times(d, now, _FAR), None))

    # -- always on -----------------------------------------------------------------------------

    def _always_on(
        self, record: TriggerRecord, now: datetime, in_flight: dict[int, int], report: PassReport
    ) -> None:
        if in_flight.get(record.id):
            return
        if self.store.list_runs(RunQuery(trigger=record.name, statuses=_UNFINISHED, limit=1)):
            return
        since = watermark(record)
        last = self.store.last_tick(record.id)
        at = since
        if last is not None:
            if last.run_id is not None:
                ended = self.store.get_run(last.run_id).finished_at or now
                at = max(ended, last.scheduled_at + timedelta(microseconds=1))
            else:
                # Its last tick did not start a run (skipped, or failed to start): wait a little.
                at = last.scheduled_at + timedelta(seconds=self.options.always_on_retry_s)
            at = max(at, since)
        if at <= now:
            self._start(record, at, now, in_flight, report)

    # -- run endings: after triggers and alerts ---------------------------------------------------

    def _run_endings(
        self,
        triggers: dict[int, TriggerRecord],
        now: datetime,
        in_flight: dict[int, int],
        report: PassReport,
    ) -> None:
        cursor = self.store.cursor(_RUN_ENDINGS)
        if cursor is None:
            # A first scheduler on this store reacts to what ends from now on, not to history.
            self.store.set_cursor(_RUN_ENDINGS, now)
            return
        since = cursor - timedelta(seconds=self.options.lookback_s)
        ended = self.store.runs_ended_since(since)
        afters = [r for r in triggers.values() if r.definition.kind == "after" and not r.paused]
        for run in ended:
            if run.finished_at is None or run.finished_at <= cursor - timedelta(
                seconds=self.options.lookback_s
            ):
                continue
            self._alert_ending(run, report)
            for record in afters:
                if _follows(record, run):
                    self._start(record, run.finished_at, now, in_flight, report, upstream=run)
        if ended:
            newest = max(r.finished_at for r in ended if r.finished_at is not None)
            self.store.set_cursor(_RUN_ENDINGS, newest)

    def _alert_ending(self, run: RunRecord, report: PassReport) -> None:
        if self.alerts is None or run.finished_at is None:
            return
        if run.status is RunStatus.FAILED:
            why = (run.error or "failed").splitlines()[0][:300]
            self._raise("run_failed", run, f"{run.pathspec} failed: {why}", report)
        elif run.status is RunStatus.COMPLETED:
            before = self.store.previous_ended_run(run)
            if before is not None and before.status is RunStatus.FAILED:
                self._raise(
                    "run_recovered",
                    run,
                    f"{run.pathspec} completed after {before.pathspec} failed",
                    report,
                )

    # -- starting a tick -----------------------------------------------------------------------

    def _start(
        self,
        record: TriggerRecord,
        tick: datetime,
        now: datetime,
        in_flight: dict[int, int],
        report: PassReport,
        *,
        note: str | None = None,
        upstream: RunRecord | None = None,
    ) -> None:
        d = record.definition
        upstream_id = upstream.id if upstream is not None else None
        if d.overlap == "skip" and d.max_concurrent is not None:
            busy = in_flight.get(record.id, 0) + len(
                self.store.list_runs(
                    RunQuery(trigger=record.name, statuses=_UNFINISHED, limit=d.max_concurrent)
                )
            )
            if busy >= d.max_concurrent:
                reason = (
                    f"overlap skip: {_plural(busy, 'run')} of the trigger still running "
                    f"(max_concurrent {d.max_concurrent})"
                )
                if self.store.claim_tick(
                    record.id, tick, cause_run_id=upstream_id, skip_reason=reason, note=note
                ):
                    report.skipped += 1
                return
        if d.overlap == "wait" and d.max_concurrent is not None:
            most = self.options.max_waiting
            waiting = self.store.list_runs(
                RunQuery(trigger=record.name, statuses=(RunStatus.INITIAL,), limit=most)
            )
            # Ticks launched but with no run recorded yet wait too.
            if len(waiting) + in_flight.get(record.id, 0) >= most:
                reason = (
                    f"overlap wait: {most} runs of the trigger already wait for a slot "
                    f"(max_concurrent {d.max_concurrent}); the schedule is faster than its runs"
                )
                if self.store.claim_tick(
                    record.id, tick, cause_run_id=upstream_id, skip_reason=reason, note=note
                ):
                    report.skipped += 1
                return
        if not self.store.claim_tick(
            record.id, tick, cause_run_id=upstream_id, launcher=self.me, note=note
        ):
            return  # another scheduler (or an earlier life of this one) has it
        report.claimed += 1
        in_flight[record.id] = in_flight.get(record.id, 0) + 1
        self._launch(record, tick, upstream_id, report)

    def _launch(
        self, record: TriggerRecord, tick: datetime, upstream_id: int | None, report: PassReport
    ) -> None:
        try:
            pid = self.launcher.launch(LaunchOrder(record.name, tick, upstream_id))
        except OSError as exc:
            reason = f"could not start: cannot start a process: {exc}"
            if self.store.settle_tick(record.id, tick, skip_reason=reason):
                self._start_failed(record, tick, reason, report)
            return
        self.store.tick_launched(record.id, tick, (self.me[0], pid))
        report.launched += 1
        report.started.append((record.name, tick))

    def _stale_ticks(
        self,
        triggers: dict[int, TriggerRecord],
        unsettled: list[TickRecord],
        now: datetime,
        report: PassReport,
    ) -> None:
        """Queued ticks (a backfill) are launched; ticks whose launcher died, launched again."""
        for tick in unsettled:
            record = triggers.get(tick.trigger_id)
            if record is None:
                continue
            if tick.launches == 0:
                if not record.paused and self.store.relaunch_tick(tick, self.me):
                    report.claimed += 1
                    self._launch(record, tick.scheduled_at, tick.cause_run_id, report)
                continue
            if not self._launcher_gone(tick, now):
                continue
            if tick.launches >= self.options.max_launches:
                reason = (
                    f"could not start: launched {tick.launches} times and each launcher ended "
                    "before recording the run (see the launch logs in the scheduler's folder)"
                )
                if self.store.settle_tick(tick.trigger_id, tick.scheduled_at, skip_reason=reason):
                    report.given_up += 1
                    self._start_failed(record, tick.scheduled_at, reason, report)
            elif self.store.relaunch_tick(tick, self.me):
                report.relaunched += 1
                self._launch(record, tick.scheduled_at, tick.cause_run_id, report)

    def _launcher_gone(self, tick: TickRecord, now: datetime) -> bool:
        if tick.launcher_host == self.me[0] and tick.launcher_pid is not None:
            if tick.launcher_pid == self.me[1]:
                # This process is launching it, unless an earlier life of it claimed it (a
                # container restarted with the same host name and pid).
                return tick.claimed_at < self._born
            return not self.launcher.alive(tick.launcher_pid)
        return now - tick.claimed_at > timedelta(seconds=self.options.relaunch_after_s)

    # -- SLAs and alerts -----------------------------------------------------------------------

    def _slas(self, now: datetime, report: PassReport) -> None:
        for run in self.store.sla_pending(now):
            due = run.sla_due_at
            if due is None:
                continue
            if run.status is RunStatus.COMPLETED and run.finished_at and run.finished_at <= due:
                self.store.settle_sla(run.id, "met", now)
            elif now >= due and self.store.settle_sla(run.id, "missed", now):
                report.sla_missed += 1
                late = "still " + run.status.value if run.finished_at is None else run.status.value
                self._raise(
                    "sla_missed",
                    run,
                    f"{run.pathspec} missed its SLA: not completed by {due.isoformat()} ({late})",
                    report,
                )

    def _raise(self, event: str, run: RunRecord, message: str, report: PassReport) -> None:
        if self.alerts is None:
            return
        from pipetrail.scheduling.alerts import run_alert

        alert = run_alert(event, run, message, base_url=self.base_url, at=self.clock())
        report.alerts += self.alerts.raise_alert(alert, key=f"{event}:{run.id}", run_id=run.id)

    def _start_failed(
        self, record: TriggerRecord, tick: datetime, reason: str, report: PassReport
    ) -> None:
        if self.alerts is not None:
            report.alerts += self.alerts.start_failed(record, tick, reason, base_url=self.base_url)


_FAR = datetime(9999, 1, 1, tzinfo=UTC)


def _follows(record: TriggerRecord, run: RunRecord) -> bool:
    """Whether ``run``'s ending fires the after-trigger ``record``."""
    d = record.definition
    if run.pipeline != d.after_pipeline or run.finished_at is None:
        return False
    if run.finished_at <= watermark(record):
        return False
    on = d.after_on or "completed"
    if on == "any":
        return run.status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)
    return run.status.value == on


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _say(line: str) -> None:
    import sys

    print(f"pipetrail scheduler: {line}", file=sys.stderr, flush=True)
