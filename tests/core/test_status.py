"""The status state machine, as data."""

from __future__ import annotations

import pytest

from pipetrail.core.status import (
    RUN_TERMINAL,
    RUN_TRANSITIONS,
    TASK_TERMINAL,
    TASK_TRANSITIONS,
    RunStatus,
    TaskStatus,
    check_run_transition,
    check_task_transition,
)
from pipetrail.errors import InvalidTransitionError


def test_terminal_statuses_have_no_way_out() -> None:
    for status in RUN_TERMINAL:
        assert RUN_TRANSITIONS[status] == frozenset()
    for task_status in TASK_TERMINAL:
        assert TASK_TRANSITIONS[task_status] == frozenset()


@pytest.mark.parametrize(
    ("current", "new"),
    [(RunStatus.COMPLETED, RunStatus.RUNNING), (RunStatus.FAILED, RunStatus.COMPLETED)],
)
def test_finished_runs_cannot_change(current: RunStatus, new: RunStatus) -> None:
    with pytest.raises(InvalidTransitionError, match=f"from '{current.value}' to '{new.value}'"):
        check_run_transition(current, new)


def test_task_path_through_the_machine() -> None:
    for current, new in [
        (TaskStatus.INITIAL, TaskStatus.QUEUED),
        (TaskStatus.QUEUED, TaskStatus.RUNNING),
        (TaskStatus.RUNNING, TaskStatus.COMPLETED),
        (TaskStatus.INITIAL, TaskStatus.UPSTREAM_FAILED),
    ]:
        check_task_transition(current, new)
    with pytest.raises(InvalidTransitionError):
        check_task_transition(TaskStatus.INITIAL, TaskStatus.RUNNING)
