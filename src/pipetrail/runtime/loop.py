"""The run loop: tasks in dependency order, retries, conditions, foreach, timeouts and cancel."""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import TYPE_CHECKING, Any

from pipetrail.core.model import RunRecord, StepSpec
from pipetrail.core.status import TASK_TERMINAL, RunStatus, TaskStatus
from pipetrail.errors import (
    InvalidTransitionError,
    LeaseLostError,
    StepTimeoutError,
    TaskCancelledError,
)
from pipetrail.runtime.controls import CONTROL_SECONDS, RunControls, watching
from pipetrail.runtime.planner import retry_delay
from pipetrail.runtime.run_state import StepState, TaskState
from pipetrail.runtime.spool import discard_spool, salvage
from pipetrail.runtime.task import InputRef, TaskPayload
from pipetrail.storage.artifacts.serializers import load_from_store
from pipetrail.storage.metadata.base import TaskOutcome

if TYPE_CHECKING:
    from pipetrail.runtime.engine import Engine, RunRequest
    from pipetrail.runtime.executors.base import Executor

__all__ = ["RunLoop"]


class RunLoop(RunControls):
    """The state of one run while it executes; ``drive`` takes it to a terminal status."""

    def __init__(self, engine: Engine, run: RunRecord, request: RunRequest) -> None:
        self.engine = engine
        self.services = engine.services
        self.store = engine.services.store
        self.run = run
        self.request = request
        self.pipeline = request.pipeline
        self.spec = request.pipeline.spec
        self.dag = request.pipeline.dag
        self.observer = engine.observer
        self.steps = {name: StepState(self.spec.step(name)) for name in self.dag.order}
        # Kept as the run goes, so one pass of the loop costs what the steps in play cost,
        # not what every step of a wide pipeline costs: the attempts in flight, the steps
        # still waiting for their upstream, and those whose tasks are being run (dag order).
        self._running: dict[Future[TaskOutcome], tuple[StepState, TaskState]] = {}
        self._waiting: list[str] = list(self.dag.order)
        self._active: list[str] = []
        self.failures: list[tuple[str, str]] = []
        self._params_blob = pickle.dumps(dict(request.params))
        self._init_controls(request, self.spec)

    # -- the whole run -------------------------------------------------------------------------

    def drive(self) -> RunRecord:
        # Nothing of this run touches the store once drive() has returned.
        with watching(self):
            try:
                return self._drive()
            except BaseException as exc:
                self._fail_if_open(exc)
                raise

    def _fail_if_open(self, exc: BaseException) -> None:
        """Leave no run open behind an error; if the store itself is gone, recovery will."""
        if self._lost is not None or isinstance(exc, LeaseLostError):
            return  # not ours any more: whoever took the run ended it
        try:
            if self.store.get_run(self.run.id).status in (RunStatus.INITIAL, RunStatus.RUNNING):
                reason = f"runner error: {type(exc).__name__}: {exc}"
                self._cancel_open_tasks(reason)
                self._finish(RunStatus.FAILED, reason)
        except Exception:
            return

    def _drive(self) -> RunRecord:
        keys = [(name, 0, 0) for name in self.dag.order]
        created, started = self.store.start_run(
            self.run.id,
            keys,
            self.spec.max_concurrent_runs,
            trigger_limit=self.request.trigger_limit,
        )
        for name, step in self.steps.items():
            step.tasks[0] = TaskState(0, created[(name, 0, 0)])
        if started is None:
            if not self._wait_for_slot():
                return self._finish(RunStatus.CANCELLED, self._cancel_reason)
            self.run = self.store.get_run(self.run.id)
        else:
            # What the start changed, without reading the run again.
            self.run = dataclasses.replace(
                self.run, status=RunStatus.RUNNING, started_at=started, heartbeat_at=started
            )
        self.observer.run_started(self.run, self.spec)
        if self._run_timeout:
            self._run_deadline = time.monotonic() + self._run_timeout
        executor = self.engine.executor_for(self.pipeline)
        self._inline = executor.name == "inline"
        try:
            self._loop(executor)
        except KeyboardInterrupt as stop:
            executor.shutdown(cancel=True)
            self._raise_if_lost()
            reason = self._cancel_reason or str(stop) or "cancelled by the user (Ctrl-C)"
            self._cancel_open_tasks(reason)
            return self._finish(self._cancel_status, reason)
        except LeaseLostError as exc:
            self._lost = self._lost or exc
            executor.shutdown(cancel=True)
            self._raise_if_lost()
        except BaseException as exc:
            executor.shutdown(cancel=True)
            self._raise_if_lost()
            reason = f"runner error: {type(exc).__name__}: {exc}"
            self._cancel_open_tasks(reason)
            self._finish(RunStatus.FAILED, reason)
            raise
        self._raise_if_lost(executor)
        if self._cancel_reason is not None:
            executor.shutdown(cancel=True)
            self._cancel_open_tasks(self._cancel_reason)
            return self._finish(self._cancel_status, self._cancel_reason)
        executor.shutdown()
        return self._finish(*self._verdict())

    def _wait_for_slot(self) -> bool:
        """Take a slot of the pipeline's concurrent-run limit, in order; False if cancelled."""
        from pipetrail.runtime.recovery import reap_lost_runs

        limit = self.spec.max_concurrent_runs
        announced = False
        trigger_limit = self.request.trigger_limit
        while not self.store.claim_slot(self.run.id, limit, trigger_limit=trigger_limit):
            self._raise_if_lost()
            if self._cancel_reason is not None:
                self._cancel_open_tasks(self._cancel_reason)
                return False
            if not announced:
                self.observer.run_waiting(self.run, limit or trigger_limit or 0)
                announced = True
            # A runner that died holding a slot must not block the queue for ever.
            reap_lost_runs(self.store, self.services.spool_root)
            time.sleep(CONTROL_SECONDS)
        return True

    def _verdict(self) -> tuple[RunStatus, str | None]:
        blocking = [
            s
            for s in self.steps.values()
            if s.result in (TaskStatus.FAILED, TaskStatus.UPSTREAM_FAILED) and not s.allowed_failure
        ]
        if any(s.result is TaskStatus.CANCELLED for s in self.steps.values()):
            return RunStatus.CANCELLED, self._summary() or "cancelled"
        if blocking:
            return RunStatus.FAILED, self._summary()
        return RunStatus.COMPLETED, None

    def _summary(self) -> str:
        roots = [f"step {step!r} failed: {why}" for step, why in self.failures]
        cascade = [n for n, s in self.steps.items() if s.result is TaskStatus.UPSTREAM_FAILED]
        if cascade:
            roots.append(f"not run because of it: {', '.join(cascade)}")
        return "; ".join(roots)

    def _finish(self, status: RunStatus, error: str | None) -> RunRecord:
        try:
            self.run = self.store.set_run_status(self.run.id, status, error=error)
        except InvalidTransitionError:
            # Someone ended the run for us (a forced cancel of a runner that looked silent).
            self.run = self.store.get_run(self.run.id)
        self.observer.run_finished(self.run)
        return self.run

    # -- the loop ------------------------------------------------------------------------------

    def _loop(self, executor: Executor) -> None:
        limit = self.request.max_parallel or executor.max_workers
        while self._cancel_reason is None:
            self._check_timeouts(executor)
            if self._cancel_reason is not None:
                return
            self._activate_ready_steps()
            self._submit_ready(executor, limit)
            running = self._running
            if not running:
                if all(s.state == "done" for s in self.steps.values()):
                    return
                time.sleep(self._tick())
                continue
            done, _ = wait(list(running), timeout=self._tick(), return_when=FIRST_COMPLETED)
            for future in done:
                step, task = running.pop(future)
                task.future = None
                self._record(step, task, future)

    def _tick(self) -> float:
        now = time.monotonic()
        nearest = CONTROL_SECONDS
        for step in self._in_play():
            for task in step.tasks.values():
                if task.status is TaskStatus.INITIAL and step.state == "active" and task.ready_at:
                    nearest = min(nearest, max(task.ready_at - now, 0.0))
        return nearest

    def _activate_ready_steps(self) -> None:
        waiting = []
        for name in self._waiting:
            step = self.steps[name]
            if step.state != "waiting":
                continue
            if any(self.steps[u].state != "done" for u in self.dag.upstream(name)):
                waiting.append(name)
                continue
            self._activate(name, step)
            if step.state == "active":
                self._active.append(name)
        self._waiting = waiting

    def _in_play(self) -> list[StepState]:
        """The active steps, in dag order (those done meanwhile are dropped here)."""
        self._active = [n for n in self._active if self.steps[n].state == "active"]
        return [self.steps[n] for n in self._active]

    def _activate(self, name: str, step: StepState) -> None:
        """All upstream steps are done: skip, reuse, or create this step's tasks."""
        blocked = self._blocked_by_upstream(step)
        if blocked is not None:
            status, cause, message = blocked
            self._end_unrun(step, status, message, failed_upstream=cause)
            return
        reuse = self.request.reuse.get(name)
        if reuse is not None and name in self.request.reuse_steps:
            self._reuse(step, reuse)
            return
        try:
            if step.spec.condition is not None and not self._condition(step):
                self._end_unrun(step, TaskStatus.CONDITION_FAILED, "its when= condition is false")
                return
            count = self._foreach_count(step)
        except Exception as exc:
            self._fail_before_start(step, exc)
            return
        step.state = "active"
        if count is not None:
            step.is_foreach = True
            if count == 0:
                self.store.skip_task(
                    step.tasks[0].task_id, TaskStatus.COMPLETED, "foreach over no items"
                )
                del step.tasks[0]
                self._settle(name, step)
                return
            more = [(name, i, 0) for i in range(1, count)]
            created = self.store.create_tasks(self.run.id, more) if more else {}
            for i in range(1, count):
                step.tasks[i] = TaskState(i, created[(name, i, 0)])
        for index, origin_task in (reuse or {}).items():
            if index in step.tasks:
                self._reuse_one(step, step.tasks[index], origin_task)
        if all(t.status in TASK_TERMINAL for t in step.tasks.values()):
            self._settle(name, step)

    def _blocked_by_upstream(self, step: StepState) -> tuple[TaskStatus, str | None, str] | None:
        for i in step.spec.inputs:
            up = self.steps[i.step]
            if up.result is TaskStatus.COMPLETED or up.allowed_failure:
                continue
            if up.result in (TaskStatus.FAILED, TaskStatus.UPSTREAM_FAILED):
                cause = up.failed_upstream or i.step
                return TaskStatus.UPSTREAM_FAILED, cause, f"upstream step {cause!r} failed"
        for i in step.spec.inputs:
            up = self.steps[i.step]
            if up.result is TaskStatus.CANCELLED:
                return TaskStatus.CANCELLED, None, f"upstream step {i.step!r} was cancelled"
            if up.result is TaskStatus.CONDITION_FAILED and i.arg not in step.spec.optional:
                return (
                    TaskStatus.CONDITION_FAILED,
                    None,
                    f"upstream step {i.step!r} was skipped by its condition",
                )
        return None

    def _end_unrun(
        self,
        step: StepState,
        status: TaskStatus,
        message: str,
        *,
        failed_upstream: str | None = None,
    ) -> None:
        for task in step.tasks.values():
            self.store.set_task_status(
                task.task_id, status, message=message, failed_upstream=failed_upstream
            )
            task.status = status
            self.observer.task_changed(step.spec.name, task.attempt, status)
        step.state, step.result, step.failed_upstream = "done", status, failed_upstream

    def _fail_before_start(self, step: StepState, exc: Exception) -> None:
        task = step.tasks[0]
        message = f"{type(exc).__name__}: {exc}"
        self.store.finish_task(
            task.task_id,
            TaskOutcome(
                TaskStatus.FAILED,
                exception_type=type(exc).__name__,
                exception_message=str(exc),
                allowed_failure=step.spec.allow_failure,
            ),
        )
        task.status = TaskStatus.FAILED
        self.observer.task_changed(step.spec.name, 0, TaskStatus.FAILED)
        step.state, step.result = "done", TaskStatus.FAILED
        step.allowed_failure = step.spec.allow_failure
        if not step.allowed_failure:
            self.failures.append((step.spec.name, message))

    def _reuse(self, step: StepState, reuse: dict[int, int]) -> None:
        extra = sorted(i for i in reuse if i not in step.tasks)
        if extra:
            created = self.store.create_tasks(self.run.id, [(step.spec.name, i, 0) for i in extra])
            for i in extra:
                step.tasks[i] = TaskState(i, created[(step.spec.name, i, 0)])
        step.is_foreach = step.spec.foreach is not None
        step.state = "active"
        for index, task in step.tasks.items():
            self._reuse_one(step, task, reuse[index])
        self._settle(step.spec.name, step)

    def _reuse_one(self, step: StepState, task: TaskState, origin_task: int) -> None:
        origin = self.request.origin_pathspec or "the origin run"
        links = self.store.reuse_task(
            task.task_id, origin_task, f"reused from {origin}/{step.spec.name}/{task.index}"
        )
        task.status = TaskStatus.COMPLETED
        task.outputs = {
            link.name: (link.artifact, link.producer_task_id or task.task_id)
            for link in links
            if link.kind == "output"
        }
        self.observer.task_changed(step.spec.name, task.attempt, TaskStatus.COMPLETED)

    def _condition(self, step: StepState) -> bool:
        func = self.pipeline.steps[step.spec.name].when
        if func is None:
            return True
        kwargs: dict[str, Any] = {}
        for arg in step.spec.condition_args:
            if arg in self.request.params:
                kwargs[arg] = self.request.params[arg]
            else:
                kwargs[arg] = self._load_named(arg)
        if not step.spec.condition_args and _takes_kwargs(func):
            kwargs = dict(self.request.params)
        return bool(func(**kwargs))

    def _load_named(self, name: str) -> Any:
        for other in self.steps.values():
            if other.result is not TaskStatus.COMPLETED:
                continue
            values = [o[name] for o in other.outputs() if name in o]
            if values:
                loaded = [
                    load_from_store(self.services.cas, r.key, r.serializer, self.services.registry)
                    for r, _ in values
                ]
                return loaded if other.is_foreach else loaded[0]
        return None

    def _foreach_count(self, step: StepState) -> int | None:
        arg = step.spec.foreach
        if arg is None:
            return None
        if arg in step.spec.params:
            value = self.request.params[arg]
        else:
            source = next(i for i in step.spec.inputs if i.arg == arg)
            value = self._load_named(source.output or source.step)
        try:
            return len(value)
        except TypeError:
            raise TypeError(
                f"step {step.spec.name!r}: foreach={arg!r} needs a list, got {type(value).__name__}"
            ) from None

    def _submit_ready(self, executor: Executor, limit: int) -> None:
        in_flight = len(self._running)
        now = time.monotonic()
        for step in self._in_play():
            step_running = sum(1 for t in step.tasks.values() if t.future is not None)
            for index in sorted(step.tasks):
                task = step.tasks[index]
                if in_flight >= limit:
                    return
                if step.spec.max_parallel and step_running >= step.spec.max_parallel:
                    break
                if task.status is not TaskStatus.INITIAL or task.ready_at > now:
                    continue
                self._submit(executor, step, task)
                in_flight += 1
                step_running += 1

    def _submit(self, executor: Executor, step: StepState, task: TaskState) -> None:
        spec = step.spec
        inputs = []
        for i in spec.inputs:
            up = self.steps[i.step]
            name = i.output or i.step
            items = tuple(o[name] for o in up.outputs() if name in o)
            pick = task.index if spec.foreach == i.arg else None
            inputs.append(InputRef(i.arg, name, items, gather=up.is_foreach, pick=pick))
        payload = TaskPayload(
            pipeline=self.spec.name,
            pipeline_file=self.spec.file,
            version=self.spec.version,
            step=spec.name,
            run_id=self.run.id,
            task_id=task.task_id,
            task_index=task.index,
            attempt=task.attempt,
            params=self._params_blob,
            variables=dict(self.request.variables),
            inputs=tuple(inputs),
            foreach_param=spec.foreach if spec.foreach in spec.params else None,
            lease=self.run.lease,
            defer_start=executor.defers_start,
            hand_over=executor.hands_over,
        )
        if not executor.defers_start:
            self.store.set_task_status(task.task_id, TaskStatus.QUEUED)
        task.status = TaskStatus.QUEUED
        task.submitted = time.monotonic()
        self.observer.task_changed(spec.name, task.attempt, TaskStatus.RUNNING)
        task.future = executor.submit(payload)
        self._running[task.future] = (step, task)

    # -- results -------------------------------------------------------------------------------

    def _record(self, step: StepState, task: TaskState, future: Future[TaskOutcome]) -> None:
        spec = step.spec
        outcome = self._outcome(step, task, future)
        # A task that did not report (its worker was killed, stopped or lost) left its spool:
        # what it logged before then goes into the store first. One that reported but could not
        # drain its spool (the store was away) gets its points and output in as well.
        reported = not future.cancelled() and future.exception() is None
        if not reported or outcome.spool_kept:
            salvage(
                self.store, self.services.spool_root, self.run.id, task.task_id, events=not reported
            )
        try:
            self.store.finish_task(task.task_id, outcome, run_id=self.run.id)
        except InvalidTransitionError:
            # Ended from outside meanwhile (a forced cancel); what it says stands. What the
            # task handed over goes in from its spool, if the run is still this runner's.
            if outcome.final is not None:
                with contextlib.suppress(LeaseLostError):
                    salvage(
                        self.store,
                        self.services.spool_root,
                        self.run.id,
                        task.task_id,
                        events=False,
                    )
            outcome = _replace(outcome, status=self.store.get_task(task.task_id).status)
        else:
            if outcome.final is not None:
                discard_spool(self.services.spool_root, self.run.id, task.task_id)
        task.status = outcome.status
        duration = None
        if outcome.started_at is not None and outcome.finished_at is not None:
            duration = (outcome.finished_at - outcome.started_at).total_seconds()
            self._late_warning(step, task, duration)
        self.observer.task_changed(spec.name, task.attempt, outcome.status, duration)
        if outcome.status is TaskStatus.COMPLETED:
            task.outputs = {
                link.name: (link.artifact, task.task_id)
                for link in outcome.links
                if link.direction == "output" and link.kind == "output"
            }
        elif (
            outcome.status is TaskStatus.FAILED
            and outcome.retryable
            and task.attempt < spec.retries
            and self._cancel_reason is None
        ):
            attempt = task.attempt + 1
            key = (spec.name, task.index, attempt)
            new_id = self.store.create_tasks(self.run.id, [key])[key]
            step.tasks[task.index] = TaskState(
                task.index,
                new_id,
                attempt=attempt,
                ready_at=time.monotonic() + retry_delay(spec, attempt),
            )
            return
        elif outcome.status is TaskStatus.FAILED and not outcome.allowed_failure:
            where = f" (task {task.index})" if step.is_foreach else ""
            self.failures.append(
                (spec.name, f"{outcome.exception_type}: {outcome.exception_message}{where}")
            )
        if all(t.status in TASK_TERMINAL for t in step.tasks.values()):
            self._settle(spec.name, step)

    def _outcome(
        self, step: StepState, task: TaskState, future: Future[TaskOutcome]
    ) -> TaskOutcome:
        spec = step.spec
        retryable_timeout = issubclass(StepTimeoutError, self.pipeline.steps[spec.name].retry_on)
        try:
            outcome = future.result()
        except Exception as exc:
            if task.timed_out:
                return self._timeout_outcome(spec, retryable_timeout)
            if self._cancel_reason is not None or isinstance(exc, TaskCancelledError):
                reason = self._cancel_reason or str(exc)
                return TaskOutcome(TaskStatus.CANCELLED, exception_message=reason)
            # The worker itself failed: killed, out of memory, an unpicklable payload.
            return TaskOutcome(
                status=TaskStatus.FAILED,
                exception_type=type(exc).__name__,
                exception_message=str(exc) or "the worker running this task failed",
                retryable=isinstance(exc, self.pipeline.steps[spec.name].retry_on),
                allowed_failure=spec.allow_failure,
            )
        if (outcome.exception_type or "").endswith(
            "StepTimeoutError"
        ) and spec.on_timeout == "cancelled":
            return _replace(outcome, status=TaskStatus.CANCELLED, retryable=False)
        return outcome

    def _timeout_outcome(self, spec: StepSpec, retryable: bool) -> TaskOutcome:
        message = f"step {spec.name!r} exceeded its timeout of {spec.timeout_s:g} s"
        status = TaskStatus.CANCELLED if spec.on_timeout == "cancelled" else TaskStatus.FAILED
        return TaskOutcome(
            status,
            exception_type="StepTimeoutError",
            exception_message=message,
            retryable=retryable and status is TaskStatus.FAILED,
            allowed_failure=spec.allow_failure,
        )

    def _late_warning(self, step: StepState, task: TaskState, duration: float) -> None:
        limit = step.spec.timeout_s
        if limit is None or step.spec.on_timeout != "warning" or task.warned or duration <= limit:
            return
        task.warned = True
        self.store.record_event(
            self.run.id,
            "timeout",
            f"step {step.spec.name!r} took {duration:.3g} s, over its timeout of {limit:g} s "
            "(policy: warning)",
            task_id=task.task_id,
        )

    def _settle(self, name: str, step: StepState) -> None:
        statuses = [t.status for t in step.tasks.values()]
        step.state = "done"
        if all(s is TaskStatus.COMPLETED for s in statuses):
            step.result = TaskStatus.COMPLETED
        elif TaskStatus.CANCELLED in statuses:
            step.result = TaskStatus.CANCELLED
        else:
            step.result = TaskStatus.FAILED
            step.allowed_failure = step.spec.allow_failure


def _takes_kwargs(func: Any) -> bool:
    import inspect

    try:
        return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return False


def _replace(outcome: TaskOutcome, **changes: Any) -> TaskOutcome:
    return dataclasses.replace(outcome, **changes)
