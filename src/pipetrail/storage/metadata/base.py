"""The MetadataStore port: what the engine and the client need of a store, and its input records."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from pipetrail.core.model import (
    ArtifactLink,
    ArtifactRecord,
    EventRecord,
    MetricPoint,
    PipelineSpec,
    RunCause,
    RunRecord,
    TaskRecord,
)
from pipetrail.core.status import RUN_TERMINAL, RunStatus, TaskStatus
from pipetrail.storage.metadata.governance import RegistryStore, TokenStore
from pipetrail.storage.metadata.retention import RetentionStore

__all__ = [
    "AlertRecord",
    "ImportedRun",
    "ImportedTask",
    "LogChunk",
    "NewAlert",
    "SchedulerInstance",
    "MetadataStore",
    "MetricRow",
    "NewLink",
    "NewRun",
    "PipelineStats",
    "RunQuery",
    "RunSummary",
    "SpoolBatch",
    "TaskOutcome",
    "TickRecord",
    "TriggerDefinition",
    "TriggerRecord",
    "VersionStats",
]


@dataclass(frozen=True)
class NewRun:
    """Everything known about a run before it starts."""

    spec: PipelineSpec
    params: dict[str, Any]
    param_types: dict[str, str]
    variables: dict[str, str]
    user: str
    host: str
    trigger: str
    user_tags: tuple[str, ...] = ()
    system_tags: tuple[str, ...] = ()
    git: dict[str, Any] | None = None
    code_key: str | None = None
    environment: tuple[str, dict[str, Any]] | None = None
    origin_run_id: int | None = None
    runner_pid: int | None = None
    timeout_s: float | None = None
    #: A trigger's run: why it started; ``tick_trigger_id`` links it to the claimed tick
    #: (trigger id, ``cause.scheduled_at``), atomically: a tick taken already refuses the run.
    cause: RunCause | None = None
    tick_trigger_id: int | None = None
    sla_due_at: datetime | None = None


@dataclass(frozen=True)
class ImportedTask:
    """A task attempt of an :class:`ImportedRun`, as it ended, with the metric points it logged.

    ``metrics`` are ``(name, value, step, timestamp)`` points (timestamps in seconds since the
    epoch, as ``MetricRow`` has them); the latest value, minimum and maximum of each series
    are kept as for points logged by a running task.
    """

    step: str
    status: TaskStatus
    task_index: int = 0
    attempt: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cpu_time_s: float | None = None
    peak_memory_bytes: int | None = None
    gpu_peak_memory_bytes: int | None = None
    gpu_time_s: float | None = None
    exception_type: str | None = None
    exception_message: str | None = None
    traceback: str | None = None
    host: str | None = None
    pid: int | None = None
    worker: str | None = None
    note: str | None = None
    allowed_failure: bool = False
    spool_offset: int = 0
    metrics: Sequence[tuple[str, float, int | None, float]] = ()


@dataclass(frozen=True)
class ImportedRun:
    """A run recorded in bulk (``MetadataStore.import_runs``): what ``create_run`` takes, and
    how the run went (its status and times, its tasks and their metrics).

    The store writes the same rows the normal path does (run, params, tags, tasks, metric
    points, latest values and the status events along the way), with these times.
    """

    new: NewRun
    status: RunStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    tasks: Sequence[ImportedTask] = ()


@dataclass(frozen=True)
class NewLink:
    """A lineage edge to record: a task consumed or produced ``artifact``."""

    direction: str  # "input" | "output"
    name: str
    kind: str  # "output" (a step's return value), "logged" (log_artifact), "upstream", "external"
    artifact: ArtifactRecord
    source_uri: str | None = None
    producer_task_id: int | None = None


@dataclass(frozen=True)
class TaskOutcome:
    """How a task attempt ended: status, timing, resources, logs, error and lineage."""

    status: TaskStatus
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cpu_time_s: float | None = None
    peak_memory_bytes: int | None = None
    gpu_peak_memory_bytes: int | None = None
    gpu_time_s: float | None = None
    exception_type: str | None = None
    exception_message: str | None = None
    traceback: str | None = None
    links: tuple[NewLink, ...] = ()
    tags: tuple[str, ...] = ()
    #: Whether the step's ``retry_on`` covers the exception (decided where the exception is).
    retryable: bool = True
    #: The run goes on past this failure (``allow_failure=True``).
    allowed_failure: bool = False
    #: The task could not drain its spool into the store (it was away): salvage what is left.
    spool_kept: bool = False
    note: str | None = None
    #: The status its worker left in the store (RUNNING once it wrote its start; INITIAL for a
    #: start it deferred): lets the end be written without reading the row first. None: unknown.
    recorded: TaskStatus | None = None
    #: (host, pid, worker) of a start that was not written when it happened, for the end to write.
    start: tuple[str, int, str | None] | None = None
    #: When the task was handed to its executor, for a ``queued`` event written with its end.
    queued_at: datetime | None = None
    #: The last drain of the task's spool, handed over to be stored with the task's end (in
    #: its transaction); its spool is left for whoever stores it to delete.
    final: SpoolBatch | None = None


class MetricRow(NamedTuple):
    """One metric point to append; a tuple in column order, since it is made per point logged."""

    run_id: int
    task_id: int
    name: str
    value: float
    step: int | None
    timestamp: float  # seconds since the epoch (time.time()): cheap to take and to store


class LogChunk(NamedTuple):
    """A piece of a task's captured stdout or stderr, at its byte offset in the stream."""

    stream: str  # "stdout" | "stderr"
    offset: int
    size: int  # bytes of the stream this chunk covers (its text is their UTF-8 decoding)
    text: str


@dataclass(frozen=True)
class SpoolBatch:
    """What one drain of a task's spool moves into the store, in one transaction.

    While the task runs a drain carries metric points and log chunks; the drain of a task
    whose process died also carries the artifacts it logged and the tags it set.
    """

    run_id: int
    task_id: int
    metrics: Sequence[MetricRow] = ()
    #: Bytes of the task's record spool covered once this batch is stored (None: unchanged).
    offset: int | None = None
    logs: Sequence[LogChunk] = ()
    links: Sequence[NewLink] = ()
    tags: Sequence[str] = ()


@dataclass(frozen=True)
class PipelineStats:
    """A pipeline's run counts by status and its newest run, from one aggregate query."""

    name: str
    counts: dict[str, int]
    latest_run_id: int


@dataclass(frozen=True)
class RunSummary:
    """Aggregates over every run a :class:`RunQuery` selects (its limit ignored), in the store.

    Attributes:
        total: runs selected.
        counts: runs by status value (statuses with none are absent).
        average_duration_s: mean duration of the selected runs that ended, or None.
        recent: runs created at or after the ``recent_since`` asked for (0 if none asked).
    """

    total: int
    counts: dict[str, int]
    average_duration_s: float | None
    recent: int = 0

    @property
    def success_rate(self) -> float | None:
        """Completed runs among those that ended, or None when none ended."""
        ended = sum(self.counts.get(s.value, 0) for s in RUN_TERMINAL)
        done = self.counts.get(RunStatus.COMPLETED.value, 0)
        return done / ended if ended else None


@dataclass(frozen=True)
class VersionStats:
    """One version of a pipeline as seen in its runs."""

    version: str
    run_count: int
    first_seen_at: datetime
    last_seen_at: datetime
    latest_run_id: int


@dataclass(frozen=True)
class RunQuery:
    """Filters for listing runs."""

    pipeline: str | None = None
    statuses: tuple[RunStatus, ...] = ()
    tags: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = 100
    #: Only runs started by these users (a namespace); empty means everyone.
    users: tuple[str, ...] = ()
    #: The search language: ``metrics.accuracy > 0.9 and params.lr = 0.01 or tags.phase = 'x'``.
    filter: str | None = None
    #: ``("metrics.accuracy desc", "created")``; newest first when empty.
    order_by: tuple[str, ...] = ()
    #: Only runs with a smaller id: the next page of a newest-first listing (keyset paging).
    before_id: int | None = None
    #: Only runs started by this trigger.
    trigger: str | None = None
    #: Only runs that missed their SLA.
    sla_missed: bool = False


@dataclass(frozen=True)
class TriggerDefinition:
    """What a trigger runs, when and how; validated by ``scheduling.triggers`` before storing.

    ``kind`` is one of ``cron``, ``interval``, ``once``, ``always_on``, ``after``, ``api``;
    only the schedule fields of that kind are set.
    """

    name: str
    pipeline_file: str
    pipeline_name: str | None
    kind: str
    cron: str | None = None
    interval_s: float | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    once_at: datetime | None = None
    after_pipeline: str | None = None
    after_on: str | None = None
    timezone: str = "UTC"
    params: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    timeout_s: float | None = None
    on_timeout: str | None = None
    sla_s: float | None = None
    max_concurrent: int | None = None
    overlap: str = "wait"  # "wait" | "skip"
    catchup: str = "latest"  # "latest" | "all" | "none"


@dataclass(frozen=True)
class TriggerRecord:
    """A stored trigger: its definition and its state."""

    id: int
    definition: TriggerDefinition
    paused: bool
    created_at: datetime
    updated_at: datetime
    #: Ticks before this are not missed ones (set on create, resume and a change of schedule).
    active_since: datetime | None = None

    @property
    def name(self) -> str:
        return self.definition.name


@dataclass(frozen=True)
class TickRecord:
    """A tick a scheduler claimed: the run it started, or why it started none."""

    trigger_id: int
    scheduled_at: datetime
    claimed_at: datetime
    run_id: int | None
    skip_reason: str | None
    cause_run_id: int | None = None
    launcher_host: str | None = None
    launcher_pid: int | None = None
    launches: int = 0
    note: str | None = None
    id: int = 0

    @property
    def settled(self) -> bool:
        """Whether the tick has its outcome: a run, or the reason it started none."""
        return self.run_id is not None or self.skip_reason is not None


@dataclass(frozen=True)
class NewAlert:
    """An alert to deliver to one notifier; ``dedup_key`` makes enqueueing it idempotent."""

    dedup_key: str
    event: str
    notifier: str
    payload: dict[str, Any]
    run_id: int | None = None
    trigger_name: str | None = None


@dataclass(frozen=True)
class AlertRecord:
    """An alert in the outbox and how its delivery went."""

    id: int
    event: str
    notifier: str
    payload: dict[str, Any]
    run_id: int | None
    trigger_name: str | None
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    failed_at: datetime | None
    last_error: str | None

    @property
    def state(self) -> str:
        """``delivered``, ``failed`` (gave up) or ``pending``."""
        if self.delivered_at is not None:
            return "delivered"
        return "failed" if self.failed_at is not None else "pending"


@dataclass(frozen=True)
class SchedulerInstance:
    """A scheduler process that runs (or ran) against this store."""

    id: int
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None


class MetadataStore(RegistryStore, TokenStore, RetentionStore, Protocol):
    """Runs, tasks, events, params, tags, metrics and lineage; one SQL implementation."""

    def create_run(self, new: NewRun) -> RunRecord: ...
    def import_runs(self, runs: Sequence[ImportedRun]) -> list[int]: ...
    def set_run_status(
        self,
        run_id: int,
        status: RunStatus,
        *,
        error: str | None = None,
        message: str | None = None,
    ) -> RunRecord: ...
    def heartbeat(self, run_id: int) -> None: ...
    def add_tags(self, run_id: int, tags: Iterable[str], *, system: bool = False) -> None: ...
    def get_run(self, run_id: int) -> RunRecord: ...
    def list_runs(self, query: RunQuery, *, lazy: bool = False) -> list[RunRecord]: ...
    def count_runs(self, query: RunQuery) -> int: ...
    def summarize_runs(
        self, query: RunQuery, *, recent_since: datetime | None = None
    ) -> RunSummary: ...
    def pipeline_stats(self, name: str | None = None) -> list[PipelineStats]: ...
    def pipeline_versions(self, name: str) -> list[VersionStats]: ...
    def get_environment(self, env_hash: str) -> dict[str, Any]: ...
    def events(self, run_id: int) -> list[EventRecord]: ...
    def create_tasks(
        self, run_id: int, steps: Sequence[tuple[str, int, int]]
    ) -> dict[tuple[str, int, int], int]: ...
    def set_task_status(
        self,
        task_id: int,
        status: TaskStatus,
        *,
        message: str | None = None,
        failed_upstream: str | None = None,
        host: str | None = None,
        pid: int | None = None,
        worker: str | None = None,
        at: datetime | None = None,
        if_pending: bool = False,
    ) -> bool: ...
    def finish_task(
        self, task_id: int, outcome: TaskOutcome, *, run_id: int | None = None
    ) -> None: ...
    def tasks(self, run_id: int) -> list[TaskRecord]: ...
    def get_task(self, task_id: int) -> TaskRecord: ...
    def logs(self, task_id: int) -> dict[str, str]: ...
    def links(self, run_id: int) -> list[ArtifactLink]: ...
    def links_of_artifacts(self, keys: Sequence[str]) -> list[ArtifactLink]: ...
    def links_of_tasks(self, task_ids: Sequence[int]) -> list[ArtifactLink]: ...
    def get_tasks(self, task_ids: Sequence[int]) -> list[TaskRecord]: ...
    def artifact(self, key: str) -> ArtifactRecord: ...
    def artifacts_by_prefix(self, prefix: str, limit: int) -> list[ArtifactRecord]: ...
    def add_metrics(self, rows: Sequence[MetricRow]) -> None: ...
    def record_spool(self, batch: SpoolBatch) -> None: ...
    def log_chunks(
        self, task_id: int, after: Mapping[str, int] | None = None
    ) -> list[LogChunk]: ...
    def log_ends(self, task_id: int) -> dict[str, int]: ...
    def hold(self, run_id: int, lease: int) -> None: ...
    def release(self, run_id: int) -> None: ...
    def latest_metrics(self, run_id: int) -> dict[str, float]: ...
    def latest_metrics_of(self, run_ids: Sequence[int]) -> dict[int, dict[str, float]]: ...
    def metric_history(
        self, run_id: int, name: str | None = None
    ) -> list[tuple[int, MetricPoint]]: ...
    def change_tags(
        self,
        run_id: int,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        actor: str | None = None,
    ) -> RunRecord: ...
    def record_event(
        self,
        run_id: int,
        kind: str,
        message: str,
        *,
        task_id: int | None = None,
        actor: str | None = None,
    ) -> None: ...
    def request_cancel(
        self, run_id: int, reason: str, *, actor: str | None = None
    ) -> RunRecord: ...
    def cancel_requested(self, run_id: int) -> str | None: ...
    def claim_slot(
        self, run_id: int, limit: int | None, *, trigger_limit: int | None = None
    ) -> bool: ...
    def start_run(
        self,
        run_id: int,
        steps: Sequence[tuple[str, int, int]],
        limit: int | None,
        *,
        trigger_limit: int | None = None,
    ) -> tuple[dict[tuple[str, int, int], int], datetime | None]: ...
    def unfinished_runs(self) -> list[RunRecord]: ...
    def mark_lost(
        self, run_id: int, reason: str, *, stale_before: datetime | None = None
    ) -> bool: ...
    def force_cancel(self, run_id: int, reason: str) -> RunRecord: ...
    def reuse_task(self, task_id: int, origin_task_id: int, message: str) -> list[ArtifactLink]: ...
    def skip_task(self, task_id: int, status: TaskStatus, message: str) -> None: ...
    def limit_patience(self, seconds: float | None) -> None: ...
    def create_trigger(
        self, definition: TriggerDefinition, *, at: datetime | None = None
    ) -> TriggerRecord: ...
    def get_trigger(self, name: str) -> TriggerRecord: ...
    def list_triggers(self) -> list[TriggerRecord]: ...
    def set_trigger_paused(
        self, name: str, paused: bool, *, at: datetime | None = None
    ) -> TriggerRecord: ...
    def delete_trigger(self, name: str) -> None: ...
    def update_trigger(
        self, definition: TriggerDefinition, *, at: datetime | None = None
    ) -> TriggerRecord: ...
    def claim_tick(
        self,
        trigger_id: int,
        scheduled_at: datetime,
        *,
        cause_run_id: int | None = None,
        launcher: tuple[str, int] | None = None,
        note: str | None = None,
        skip_reason: str | None = None,
    ) -> bool: ...
    def settle_tick(
        self,
        trigger_id: int,
        scheduled_at: datetime,
        *,
        run_id: int | None = None,
        skip_reason: str | None = None,
    ) -> bool: ...
    def tick_launched(
        self, trigger_id: int, scheduled_at: datetime, launcher: tuple[str, int]
    ) -> None: ...
    def relaunch_tick(self, tick: TickRecord, launcher: tuple[str, int]) -> bool: ...
    def unsettled_ticks(self) -> list[TickRecord]: ...
    def get_tick(self, trigger_id: int, scheduled_at: datetime) -> TickRecord | None: ...
    def ticks(
        self, trigger_id: int, limit: int | None = None, *, scheduled_only: bool = False
    ) -> list[TickRecord]: ...
    def last_tick_at(self, trigger_id: int, *, scheduled_only: bool = False) -> datetime | None: ...
    def last_tick(self, trigger_id: int, *, scheduled_only: bool = False) -> TickRecord | None: ...
    def runs_ended_since(self, since: datetime, limit: int = 1000) -> list[RunRecord]: ...
    def previous_ended_run(self, run: RunRecord) -> RunRecord | None: ...
    def sla_pending(self, now: datetime) -> list[RunRecord]: ...
    def settle_sla(self, run_id: int, state: str, at: datetime) -> bool: ...
    def enqueue_alerts(self, alerts: Sequence[NewAlert], at: datetime) -> list[NewAlert]: ...
    def due_alerts(self, now: datetime, claim_s: float, limit: int = 50) -> list[AlertRecord]: ...
    def alert_attempted(
        self,
        alert_id: int,
        *,
        at: datetime,
        error: str | None,
        retry_at: datetime | None,
    ) -> None: ...
    def alerts(
        self,
        *,
        run_id: int | None = None,
        trigger_name: str | None = None,
        limit: int | None = 100,
    ) -> list[AlertRecord]: ...
    def cursor(self, name: str) -> datetime | None: ...
    def set_cursor(self, name: str, at: datetime) -> None: ...
    def register_scheduler(self, host: str, pid: int) -> int: ...
    def scheduler_heartbeat(self, instance_id: int, *, stopped: bool = False) -> None: ...
    def schedulers(self, alive_since: datetime | None = None) -> list[SchedulerInstance]: ...
    def close(self) -> None: ...
