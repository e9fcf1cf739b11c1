"""The scheduler's overhead: ticks per second it decides and claims, and tick → run started."""

from __future__ import annotations

import os
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scenarios import Outcome, Sizes

FLOW = """
import pipetrail as pt

@pt.step
def tick():
    return pt.current.vars["scheduled_at"]

pipeline = pt.Pipeline("ticker", [tick])
"""


class _Claimed:
    """A launcher that starts nothing: what is timed is the scheduler's own work per tick
    (reading the triggers, deciding, claiming each tick in the store)."""

    def launch(self, order: Any) -> int:
        return os.getpid()

    def alive(self, pid: int) -> bool:
        return True

    def reap(self) -> None:
        return None


def scheduler(home: Path, sizes: Sizes) -> Outcome:
    from scenarios import Figure, Outcome, VerificationError, _workspace

    from pipetrail.scheduling.scheduler import Scheduler, SchedulerOptions
    from pipetrail.scheduling.service import TriggerService
    from pipetrail.scheduling.spec import check_pipeline, definition_from
    from pipetrail.storage.metadata.base import RunQuery

    flow = home / "ticker.py"
    flow.write_text(FLOW)
    ws = _workspace(home)
    service = TriggerService(ws.store)
    start = datetime.now(UTC) + timedelta(seconds=1)
    template = {"pipeline": str(flow), "every": "1s", "start": start.isoformat()}
    base = check_pipeline(definition_from({"name": "t0", **template}))
    import dataclasses

    for i in range(sizes.triggers):
        service.create(dataclasses.replace(base, name=f"t{i}"))
    clock = [start]
    loop = Scheduler(
        ws.store, _Claimed(), options=SchedulerOptions(grace_s=3600), clock=lambda: clock[0]
    )
    passes = 5
    claimed = 0
    started = time.perf_counter()
    for k in range(passes):
        clock[0] = start + timedelta(seconds=k, milliseconds=1)
        claimed += loop.run_pass().claimed
    wall = time.perf_counter() - started
    if claimed != passes * sizes.triggers:
        raise VerificationError(f"claimed {claimed} ticks, expected {passes * sizes.triggers}")

    # Tick → run started, for real: `pipetrail scheduler fire` processes on this machine.
    real = _workspace(home / "real")
    TriggerService(real.store).create(
        check_pipeline(
            definition_from(
                {
                    "name": "ticker",
                    "pipeline": str(flow),
                    "every": "1s",
                    "start": (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
                }
            )
        )
    )
    stop = threading.Event()
    sched = real.scheduler(SchedulerOptions(poll_s=0.05))
    thread = threading.Thread(target=sched.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + sizes.tick_runs + 60
    while time.monotonic() < deadline:
        done = real.store.list_runs(RunQuery(trigger="ticker", statuses=(), limit=None))
        if sum(r.status.value == "completed" for r in done) >= sizes.tick_runs:
            break
        time.sleep(0.2)
    stop.set()
    thread.join(timeout=30)
    runs = [
        r
        for r in real.store.list_runs(RunQuery(trigger="ticker", limit=None))
        if r.status.value == "completed"
    ][: sizes.tick_runs]
    if len(runs) < sizes.tick_runs:
        raise VerificationError(f"only {len(runs)} tick runs completed")
    recorded = [(r.created_at - r.cause.scheduled_at).total_seconds() for r in runs if r.cause]
    begun = [
        (r.started_at - r.cause.scheduled_at).total_seconds()
        for r in runs
        if r.cause and r.started_at
    ]
    ws.close()
    real.close()
    return Outcome(
        [
            Figure(
                "scheduler.ticks_per_s",
                claimed / wall,
                "ticks/s",
                note=f"{sizes.triggers} triggers due each pass, {passes} passes; launch excluded",
            ),
            Figure(
                "scheduler.tick_to_record_ms",
                statistics.median(recorded) * 1000,
                "ms",
                note=f"median of {len(recorded)}: tick time → run recorded (new process)",
            ),
            Figure(
                "scheduler.tick_to_start_ms",
                statistics.median(begun) * 1000,
                "ms",
                note=f"median of {len(begun)}: tick time → run running, poll 50 ms",
            ),
        ],
        {"pass_s": wall / passes},
    )
