"""What the scheduler tests share: a clock the test moves, a launcher that runs ticks here."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from pipetrail.errors import TickTakenError
from pipetrail.scheduling.fire import open_tick
from pipetrail.scheduling.launcher import LaunchOrder
from pipetrail.workspace import Workspace

#: The tests' "now", long past on the wall clock: the service and the scheduler share the test's
#: clock (a trigger is active from the clock's time of creation), so the wall clock never
#: matters. Runs record their own times by the wall clock: a test comparing those with the
#: schedule (an SLA met in time) starts its clock at the wall clock's now instead. A Monday.
T0 = datetime(2021, 12, 6, 12, 0, tzinfo=UTC)

FLOW = """
@pt.step
def work(n: int = 1, fail: bool = False):
    if fail:
        raise RuntimeError("asked to fail")
    return n * 2

pipeline = pt.Pipeline("work", [work])

@pt.step
def report(x: int = 0):
    return x

downstream = pt.Pipeline("report", [report])
"""


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


class InProcessLauncher:
    """Starts a tick's run here and now, the way a ``scheduler fire`` process does."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.orders: list[LaunchOrder] = []
        self.hold = False  # record the run but do not execute it (it stays ``initial``)

    def launch(self, order: LaunchOrder) -> int:
        self.orders.append(order)
        request = open_tick(
            self.workspace.store,
            order.trigger,
            order.scheduled_at,
            upstream_run_id=order.upstream_run_id,
        )
        if isinstance(request, str):
            return os.getpid()
        engine = self.workspace.engine(executor="inline")
        try:
            if self.hold:
                engine.prepare(request)
            else:
                engine.run(request)
        except TickTakenError:
            pass
        return os.getpid()

    def alive(self, pid: int) -> bool:
        return pid == os.getpid()

    def reap(self) -> None:
        return None
