"""The cost summary of a run, from task records with real numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipetrail.core.cost import run_cost, user_metrics_first
from pipetrail.core.model import RunRecord, TaskRecord
from pipetrail.core.status import RunStatus, TaskStatus

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
MB = 1024**2


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _run(steps: list[str], finished: float | None = 10.0) -> RunRecord:
    return RunRecord(
        id=1,
        pipeline="p",
        version="v",
        status=RunStatus.COMPLETED if finished is not None else RunStatus.RUNNING,
        created_at=T0,
        started_at=T0,
        finished_at=None if finished is None else _at(finished),
        user="ana",
        host="vm",
        trigger="cli",
        params={},
        param_types={},
        variables={},
        user_tags=(),
        system_tags=(),
        dag={"steps": [{"name": n} for n in steps]},
    )


_ids = iter(range(1, 10_000))


def _task(step: str, start: float, end: float | None, **kw: Any) -> TaskRecord:
    fields: dict[str, Any] = {
        "id": next(_ids),
        "run_id": 1,
        "step": step,
        "task_index": 0,
        "attempt": 0,
        "status": TaskStatus.COMPLETED if end is not None else TaskStatus.RUNNING,
        "created_at": T0,
        "started_at": _at(start),
        "finished_at": None if end is None else _at(end),
    }
    fields.update(kw)
    return TaskRecord(**fields)


def test_totals_per_step_and_the_slowest_and_costliest() -> None:
    tasks = [
        _task("load", 0, 1, cpu_time_s=0.5, peak_memory_bytes=100 * MB),
        # A foreach of two tasks side by side: 3 s of wall time, 5 s of task time.
        _task("train", 1, 4, cpu_time_s=2.5, peak_memory_bytes=300 * MB),
        _task("train", 1, 3, task_index=1, cpu_time_s=1.5, peak_memory_bytes=250 * MB),
        _task("report", 4, 9, cpu_time_s=0.2, peak_memory_bytes=50 * MB),
    ]
    cost = run_cost(_run(["load", "train", "report"]), tasks)

    assert [s.step for s in cost.steps] == ["load", "train", "report"]
    train = cost.step("train")
    assert train is not None
    assert (train.tasks, train.attempts, train.reused) == (2, 2, 0)
    assert train.wall_time_s == pytest.approx(3.0)
    assert train.task_time_s == pytest.approx(5.0)
    assert train.cpu_time_s == pytest.approx(4.0)
    assert train.peak_memory_bytes == 300 * MB
    assert train.share == pytest.approx(4.0 / 4.7)
    assert cost.cpu_time_s == pytest.approx(4.7)
    assert cost.task_time_s == pytest.approx(11.0)
    assert cost.wall_time_s == pytest.approx(10.0)
    assert cost.peak_memory_bytes == 300 * MB
    assert cost.gpu_time_s is None and cost.gpu_peak_memory_bytes is None
    # The report waits longest; training burns the most CPU.
    assert cost.slowest_step == "report"
    assert (cost.costliest_step, cost.costliest_by) == ("train", "cpu_time_s")
    assert sum(s.share for s in cost.steps) == pytest.approx(1.0)


def test_retries_are_paid_for_and_reused_tasks_are_not() -> None:
    tasks = [
        _task("fit", 0, 2, cpu_time_s=1.8, status=TaskStatus.FAILED),
        _task("fit", 3, 5, attempt=1, cpu_time_s=1.9),
        _task("prep", 0, 0, cpu_time_s=7.0, reused_from_task_id=99),
    ]
    cost = run_cost(_run(["prep", "fit"]), tasks)

    fit, prep = cost.step("fit"), cost.step("prep")
    assert fit is not None and prep is not None
    assert (fit.tasks, fit.attempts) == (1, 2)
    assert fit.cpu_time_s == pytest.approx(3.7)
    assert fit.wall_time_s == pytest.approx(5.0)
    assert (prep.reused, prep.attempts, prep.cpu_time_s, prep.wall_time_s) == (1, 0, 0.0, None)
    assert cost.costliest_step == cost.slowest_step == "fit"


def test_gpu_seconds_decide_the_costliest_step_when_a_gpu_was_used() -> None:
    tasks = [
        _task("etl", 0, 6, cpu_time_s=40.0),  # many cores for a while
        _task("train", 6, 9, cpu_time_s=3.0, gpu_time_s=2.4, gpu_peak_memory_bytes=2000 * MB),
    ]
    cost = run_cost(_run(["etl", "train"]), tasks)

    assert (cost.costliest_step, cost.costliest_by) == ("train", "gpu_time_s")
    assert cost.gpu_time_s == pytest.approx(2.4)
    assert cost.gpu_peak_memory_bytes == 2000 * MB
    etl, train = cost.step("etl"), cost.step("train")
    assert etl is not None and train is not None
    assert (etl.gpu_time_s, etl.share, train.share) == (None, 0.0, 1.0)
    assert cost.slowest_step == "etl"


def test_a_running_run_is_measured_to_now() -> None:
    tasks = [_task("a", 0, 2, cpu_time_s=1.0), _task("b", 2, None)]
    run = _run(["a", "b"], finished=None)

    later = run_cost(run, tasks, now=_at(7))
    assert later.wall_time_s == pytest.approx(7.0)
    b = later.step("b")
    assert b is not None and b.wall_time_s == pytest.approx(5.0)
    assert later.slowest_step == "b"
    # Without a clock only what ended counts.
    unclocked = run_cost(run, tasks)
    assert unclocked.wall_time_s is None
    assert unclocked.slowest_step == "a"


def test_a_run_without_tasks_costs_nothing() -> None:
    cost = run_cost(_run(["a"]), [])
    assert cost.steps == ()
    assert (cost.cpu_time_s, cost.slowest_step, cost.costliest_step) == (0.0, None, None)
    assert cost.to_dict()["steps"] == []


def test_ties_go_to_the_step_that_comes_first() -> None:
    tasks = [_task("b", 0, 1, cpu_time_s=1.0), _task("a", 0, 1, cpu_time_s=1.0)]
    cost = run_cost(_run(["a", "b"]), tasks)
    assert (cost.slowest_step, cost.costliest_step) == ("a", "a")


def test_user_metrics_come_before_system_metrics() -> None:
    metrics = {"acc": 1.0, "system/cpu_percent": 50.0, "loss": 0.1, "system/rss_bytes": 9.0}
    assert list(user_metrics_first(metrics)) == [
        "acc",
        "loss",
        "system/cpu_percent",
        "system/rss_bytes",
    ]
