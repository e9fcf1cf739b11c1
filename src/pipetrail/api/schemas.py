"""Pydantic request and response models of the REST API: read-only views, apart from core models.

Nouns follow Mage's REST API where they fit (``pipeline_runs``, ``block_runs``, responses that
wrap a resource in a key named after it); field names follow pipetrail's own records.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, model_validator

from pipetrail.core.ids import NAME_PATTERN
from pipetrail.core.status import RunStatus, TaskStatus

__all__ = [
    "MAX_ID",
    "AlertOut",
    "ArtifactLinkOut",
    "BatchFilter",
    "BatchItemResult",
    "BatchRequest",
    "BatchResponse",
    "BlockRunDetail",
    "BlockRunEnvelope",
    "BlockRunList",
    "BlockRunOut",
    "CancelRequest",
    "DagEdge",
    "DagOut",
    "ErrorBody",
    "ErrorDetail",
    "ErrorEnvelope",
    "EventOut",
    "LogsOut",
    "MetricBucket",
    "MetricHistoryOut",
    "MetricList",
    "MetricPointOut",
    "MetricSummary",
    "OutputList",
    "OutputPreview",
    "ParamOut",
    "PipelineDetail",
    "PipelineEnvelope",
    "PipelineList",
    "PipelineName",
    "PipelineRunDetail",
    "PipelineRunEnvelope",
    "PipelineRunList",
    "PipelineRunOut",
    "PipelineSummary",
    "PlanStep",
    "ResourcesOut",
    "RetryRequest",
    "RetryResponse",
    "RunRef",
    "RunSlaOut",
    "RunTriggerOut",
    "StepOut",
    "TagText",
    "TickOut",
    "TriggerCreate",
    "TriggerDetail",
    "TriggerDetailEnvelope",
    "TriggerEnvelope",
    "TriggerFireRequest",
    "TriggerList",
    "TriggerName",
    "TriggerOut",
    "TriggerPatch",
    "TriggerRequest",
    "UpcomingList",
    "UpcomingOut",
    "VersionOut",
]

#: A pipeline name as the DSL allows it.
PipelineName = Annotated[str, StringConstraints(max_length=200, pattern=NAME_PATTERN.pattern)]
#: A user tag.
TagText = Annotated[str, StringConstraints(max_length=500)]

#: Ids are 32-bit in the store (PostgreSQL ``integer``); larger numbers name nothing.
MAX_ID = 2**31 - 1


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        # PostgreSQL text and JSONB cannot hold NUL characters: refuse them at the door.
        if _has_nul(data):
            raise ValueError("text may not contain NUL (\\u0000) characters")
        return data


def _has_nul(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if depth > 64:
        return False
    if isinstance(value, dict):
        return any(_has_nul(k, depth + 1) or _has_nul(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v, depth + 1) for v in value)
    return False


# -- errors -----------------------------------------------------------------------------------


class ErrorDetail(_Out):
    """One problem found in a request (validation errors list every one)."""

    loc: list[str | int] = Field(
        description="Where: e.g. ['query', 'status', 0] or ['body', 'ids']."
    )
    msg: str = Field(description="What is wrong there.")
    type: str = Field(description="Machine-readable kind of problem (Pydantic's error type).")


class ErrorBody(_Out):
    """What went wrong, for a person and for a script."""

    type: str = Field(
        description="The error class: NotFoundError, ParameterError, InvalidTransitionError, "
        "ValidationError, AuthenticationError, …"
    )
    message: str = Field(description="A sentence naming the object, the bad value and the fix.")
    details: list[ErrorDetail] | None = Field(
        default=None, description="Each invalid field, for validation errors."
    )


class ErrorEnvelope(_Out):
    """Every 4xx and 5xx response of the API has this body."""

    error: ErrorBody


# -- pipeline runs ----------------------------------------------------------------------------


class RunTriggerOut(_Out):
    """What started a run."""

    kind: str = Field(
        description="cli, api, retry, reproduce, or a trigger's kind: cron, interval, once, "
        "always_on, after, manual (a trigger fired by hand)."
    )
    name: str | None = Field(description="The trigger that started it, if one did.")
    scheduled_at: datetime | None = Field(description="The tick it ran for (UTC).")
    upstream: str | None = Field(description="For an after trigger: the upstream run's pathspec.")


class RunSlaOut(_Out):
    """A run's SLA: by when it should have ended, and whether it did."""

    due_at: datetime = Field(description="When the run should have ended by (UTC).")
    state: Literal["pending", "met", "missed"] = Field(description="pending, met or missed.")
    missed_at: datetime | None = Field(description="When it was found late.")


class PipelineRunOut(_Out):
    """One pipeline run as recorded (Mage: pipeline run)."""

    id: int = Field(description="The run id, unique in the store.")
    pathspec: str = Field(description="Stable address ``pipeline/id``.")
    pipeline: str = Field(description="Name of the pipeline.")
    version: str = Field(description="Hash of the pipeline's steps' code and wiring.")
    status: RunStatus = Field(description="initial, running, completed, failed or cancelled.")
    created_at: datetime = Field(description="When the run was recorded (UTC).")
    started_at: datetime | None = Field(description="When it started running (UTC).")
    finished_at: datetime | None = Field(description="When it ended (UTC).")
    duration_s: float | None = Field(description="Seconds from start to end; null until it ends.")
    user: str = Field(description="Who started it.")
    host: str = Field(description="Machine it was started on.")
    trigger: RunTriggerOut = Field(description="What started it, and which trigger if one did.")
    sla: RunSlaOut | None = Field(description="Its trigger's SLA; null when it has none.")
    params: dict[str, JsonValue] = Field(description="Resolved parameter values.")
    param_types: dict[str, str] = Field(description="Declared type label of each parameter.")
    variables: dict[str, str] = Field(description="Runtime variables.")
    tags: list[str] = Field(description="User tags (editable).")
    system_tags: list[str] = Field(description="Tags set by pipetrail (immutable).")
    origin_run_id: int | None = Field(description="The run this one retries or reproduces.")
    origin_pathspec: str | None = Field(description="Pathspec of the origin run.")
    error: str | None = Field(description="Why the run failed or was cancelled.")
    cancel_requested_at: datetime | None = Field(description="When a cancel was asked for.")
    heartbeat_at: datetime | None = Field(description="Last sign of life of its runner.")
    timeout_s: float | None = Field(description="Run timeout in seconds, if any.")
    block_runs_url: str = Field(description="Where this run's block runs are listed.")


class EventOut(_Out):
    """A status change (or another event) of the run or one of its tasks; append-only history."""

    at: datetime = Field(description="When (UTC).")
    block_run_id: int | None = Field(description="The task it concerns; null for the run.")
    kind: str = Field(description="status, cancel_requested, timeout, reused, …")
    status: str = Field(description="Status after the event.")
    previous: str | None = Field(description="Status before, for a status change.")
    message: str | None = Field(description="Reason or note.")
    actor: str | None = Field(
        default=None,
        description="Who caused it, when a person did (a cancel, a tag change): a token's user.",
    )


class StepCostOut(_Out):
    """What one step's attempts used in the run (retries included, reused tasks not)."""

    step: str = Field(description="The step.")
    tasks: int = Field(description="Its tasks (foreach items).")
    attempts: int = Field(description="Attempts that ran in this run, retries included.")
    reused: int = Field(description="Tasks completed by reusing an earlier run's outputs.")
    wall_time_s: float | None = Field(
        description="Seconds from its first attempt's start to its last attempt's end."
    )
    task_time_s: float = Field(description="Its attempts' durations summed.")
    cpu_time_s: float = Field(description="CPU seconds of its attempts (subprocesses included).")
    peak_memory_bytes: int | None = Field(description="Largest peak memory of one attempt.")
    gpu_time_s: float | None = Field(description="GPU seconds, where measured.")
    gpu_peak_memory_bytes: int | None = Field(
        description="Largest GPU memory peak of one attempt, where measured."
    )
    share: float = Field(description="Its part (0 to 1) of the run's costliest_by measure.")


class RunCostOut(_Out):
    """A run's cost: totals, each step's part, its slowest and its costliest step."""

    wall_time_s: float | None = Field(description="The run's duration (to now while it runs).")
    task_time_s: float = Field(description="Every attempt's duration summed.")
    cpu_time_s: float = Field(description="CPU seconds of every attempt.")
    peak_memory_bytes: int | None = Field(description="Largest peak memory of one attempt.")
    gpu_time_s: float | None = Field(description="GPU seconds of every attempt, where measured.")
    gpu_peak_memory_bytes: int | None = Field(
        description="Largest GPU memory peak of one attempt, where measured."
    )
    slowest_step: str | None = Field(description="The step with the longest wall time.")
    costliest_step: str | None = Field(
        description="The step with the most GPU seconds if the run used a GPU, else CPU seconds."
    )
    costliest_by: Literal["cpu_time_s", "gpu_time_s"] = Field(
        description="The measure costliest_step and each step's share are taken over."
    )
    steps: list[StepCostOut] = Field(description="Each step with a task, in the run's order.")


class PipelineRunDetail(PipelineRunOut):
    """A pipeline run with its latest metrics, cost, code and status history."""

    metrics: dict[str, float] = Field(
        description="Latest value of each metric: the user's first, then system/* samples."
    )
    cost: RunCostOut = Field(description="CPU, memory and GPU use per step and in total.")
    git: dict[str, JsonValue] | None = Field(description="Commit, branch and dirty flag.")
    code_key: str | None = Field(description="Artifact key of the stored code snapshot.")
    environment_hash: str | None = Field(description="Hash of the recorded environment.")
    dag: dict[str, JsonValue] = Field(description="The pipeline exactly as it ran.")
    events: list[EventOut] = Field(description="Status history, oldest first.")


class PipelineRunList(_Out):
    """A page of pipeline runs."""

    pipeline_runs: list[PipelineRunOut] = Field(description="Runs of this page.")
    count: int = Field(description="Number of runs on this page.")
    next_cursor: str | None = Field(
        description="Pass as ``cursor`` for the next page; null on the last page."
    )


class PipelineRunEnvelope(_Out):
    """One pipeline run."""

    pipeline_run: PipelineRunDetail


# -- block runs (tasks) -----------------------------------------------------------------------


class ResourcesOut(_Out):
    """What a task attempt used."""

    cpu_time_s: float | None = Field(description="CPU seconds (user + system).")
    peak_memory_bytes: int | None = Field(description="Peak resident memory.")
    gpu_peak_memory_bytes: int | None = Field(description="Peak GPU memory, where measured.")
    gpu_time_s: float | None = Field(
        description="GPU seconds (utilisation times wall time over devices), where measured."
    )
    host: str | None = Field(description="Machine it ran on.")
    pid: int | None = Field(description="Process id it ran in.")
    worker: str | None = Field(
        description="The executor's worker it ran on (a Dask worker's address), if any."
    )


class BlockRunOut(_Out):
    """One attempt of one task of a step (Mage: block run)."""

    id: int = Field(description="Block run id, unique in the store.")
    pipeline_run_id: int = Field(description="The run it belongs to.")
    pathspec: str = Field(description="``pipeline/run/step/task_index``.")
    step: str = Field(description="Step name (Mage: block uuid).")
    task_index: int = Field(description="Index of the task (foreach item) within the step.")
    attempt: int = Field(description="0 for the first attempt, 1 for the first retry, …")
    status: TaskStatus = Field(description="Task status.")
    created_at: datetime = Field(description="When it was recorded (UTC).")
    started_at: datetime | None = Field(description="When it started (UTC).")
    finished_at: datetime | None = Field(description="When it ended (UTC).")
    duration_s: float | None = Field(description="Seconds it ran.")
    resources: ResourcesOut
    exception_type: str | None = Field(description="Class of the exception it raised.")
    exception_message: str | None = Field(description="Message of the exception it raised.")
    failed_upstream: str | None = Field(description="The failed step it did not run because of.")
    reused_from_block_run_id: int | None = Field(
        description="For a retry: the task of the origin run whose outputs this one reuses."
    )
    allowed_failure: bool = Field(description="Whether its failure does not fail the run.")
    note: str | None = Field(description="Why it ended the way it did, when that is not obvious.")
    logs_url: str = Field(description="Where its stdout and stderr are.")
    outputs_url: str = Field(description="Where previews of its outputs are.")


class BlockRunList(_Out):
    """Every attempt of every task of a run, in the order they were created."""

    block_runs: list[BlockRunOut]


class ArtifactLinkOut(_Out):
    """An artifact a task consumed or produced (a lineage edge)."""

    name: str = Field(description="Name of the input or output.")
    direction: Literal["input", "output"] = Field(description="Consumed or produced.")
    kind: str = Field(description="output, logged, upstream or external.")
    hash: str = Field(
        description="Content hash of the bytes: the artifact's identity, as in /api/artifacts/{hash}."
    )
    size: int = Field(description="Size in bytes.")
    serializer: str = Field(description="How the value was stored (json, npy, parquet, file, …).")
    content_type: str = Field(description="Media type of the stored bytes.")
    type_name: str = Field(description="Python type of the value.")
    source_uri: str | None = Field(description="Where an external input or logged file came from.")
    producer_block_run_id: int | None = Field(description="The task that produced it.")
    download_url: str | None = Field(
        description="Where to download the bytes; null for external inputs, stored by hash only."
    )


class BlockRunDetail(BlockRunOut):
    """A block run with its traceback and lineage."""

    traceback: str | None = Field(description="Traceback of the exception, on failure.")
    inputs: list[ArtifactLinkOut] = Field(description="What it consumed.")
    outputs: list[ArtifactLinkOut] = Field(description="What it produced.")


class BlockRunEnvelope(_Out):
    """One block run."""

    block_run: BlockRunDetail


class LogsOut(_Out):
    """Captured output of one block run."""

    block_run_id: int
    stdout: str = Field(description="Captured standard output (the last ``tail`` lines if set).")
    stderr: str = Field(description="Captured standard error (the last ``tail`` lines if set).")


class OutputPreview(_Out):
    """A preview of one output of a block run (Mage: block run output)."""

    name: str = Field(description="Output name.")
    hash: str = Field(description="Content hash of the stored bytes, as in /api/artifacts/{hash}.")
    type: Literal["table", "array", "object", "text", "image", "binary", "external", "error"] = (
        Field(description="What kind of preview ``sample_data`` holds.")
    )
    content_type: str = Field(description="Media type of the stored bytes.")
    type_name: str = Field(description="Python type of the value.")
    size: int = Field(description="Size of the stored bytes.")
    shape: list[int] | None = Field(description="Rows and columns of a table, shape of an array.")
    sample_data: JsonValue = Field(
        description="table: {columns, rows: [records]}; array: nested list of the first items; "
        "object: JSON of a small value or its repr; text: the first characters of a file; "
        "null for images, binary files and external inputs."
    )
    truncated: bool = Field(description="Whether the sample is shorter than the whole output.")
    download_url: str | None = Field(description="Where to download the whole output.")
    preview_error: str | None = Field(description="Why no preview could be made, if so.")


class OutputList(_Out):
    """Previews of every output of a block run."""

    block_run_id: int
    outputs: list[OutputPreview]


# -- metrics ----------------------------------------------------------------------------------


class MetricSummary(_Out):
    """A metric series of a run."""

    name: str
    latest: float = Field(description="The last value logged.")
    url: str = Field(description="Where its history is.")


class MetricList(_Out):
    """Every metric of a run with its latest value."""

    metrics: list[MetricSummary]


class MetricPointOut(_Out):
    """One logged value."""

    index: int = Field(description="Position in the series, from 0, in the order logged.")
    value: float
    step: int | None = Field(description="The step (epoch, iteration) given when logged.")
    timestamp: datetime = Field(description="When it was logged (UTC).")
    block_run_id: int = Field(description="The task that logged it.")


class MetricBucket(_Out):
    """Consecutive points summarised so that no spike is lost: min, max and last value."""

    start_index: int = Field(description="Index of the first point in the bucket.")
    end_index: int = Field(description="Index of the last point in the bucket.")
    count: int = Field(description="Number of points in the bucket.")
    step_start: int | None = Field(description="Step of the first point.")
    step_end: int | None = Field(description="Step of the last point.")
    time_start: datetime = Field(description="Timestamp of the first point.")
    time_end: datetime = Field(description="Timestamp of the last point.")
    min: float = Field(description="Smallest value in the bucket.")
    max: float = Field(description="Largest value in the bucket.")
    last: float = Field(description="Value of the last point in the bucket.")


class MetricHistoryOut(_Out):
    """A metric's history: exact points, or envelopes when longer than asked for."""

    run_id: int
    name: str
    total: int = Field(description="Number of points in the whole series.")
    mode: Literal["exact", "envelope"] = Field(
        description="exact: ``points`` are logged values; envelope: ``buckets`` summarise them."
    )
    points: list[MetricPointOut] = Field(description="The points (exact mode), maybe one page.")
    buckets: list[MetricBucket] = Field(description="The envelopes (envelope mode).")
    next_cursor: str | None = Field(description="Next page of exact points; null at the end.")


# -- pipelines --------------------------------------------------------------------------------


class ParamOut(_Out):
    """A pipeline parameter as declared."""

    name: str
    type: str = Field(description="Declared type label: int, float, bool, str, list, dict, any.")
    default: JsonValue = Field(description="Default value.")
    steps: list[str] = Field(description="Steps that read it.")


class StepOut(_Out):
    """A step as defined in the latest run."""

    name: str
    upstream: list[str] = Field(description="Steps it reads from.")
    params: list[str] = Field(description="Parameters it reads.")
    outputs: list[str] = Field(description="Named outputs it returns.")
    retries: int
    timeout_s: float | None
    foreach: str | None = Field(description="The input it fans out over, if any.")
    condition: str | None = Field(description="The condition that decides whether it runs.")
    allow_failure: bool
    file: str | None = Field(description="Source file of the step.")
    line: int | None = Field(description="Line of the step in its file.")


class DagEdge(_Out):
    """Data flows from ``source`` to ``target``."""

    source: str
    target: str


class DagOut(_Out):
    """The pipeline's DAG: step names in definition order and the edges between them."""

    nodes: list[str]
    edges: list[DagEdge]


class VersionOut(_Out):
    """A version of the pipeline seen in recorded runs."""

    version: str
    run_count: int
    first_seen_at: datetime = Field(description="Creation time of its oldest run.")
    last_seen_at: datetime = Field(description="Creation time of its newest run.")
    latest_run_id: int


class PipelineSummary(_Out):
    """A pipeline known from its recorded runs."""

    name: str
    run_count: int = Field(description="Runs recorded.")
    run_counts: dict[str, int] = Field(description="Runs by status.")
    latest_run_id: int
    latest_status: RunStatus
    latest_created_at: datetime
    version: str = Field(description="Version of the latest run.")
    url: str = Field(description="Where its details are.")


class PipelineList(_Out):
    """Every pipeline with at least one recorded run, by name."""

    pipelines: list[PipelineSummary]


class PipelineDetail(PipelineSummary):
    """A pipeline: its steps and DAG as the latest run had them, its versions and run counts."""

    file: str | None = Field(description="The pipeline file the latest run came from.")
    steps: list[StepOut]
    dag: DagOut
    params: list[ParamOut]
    versions: list[VersionOut] = Field(description="Versions seen, newest first.")


class PipelineEnvelope(_Out):
    """One pipeline."""

    pipeline: PipelineDetail


# -- actions ----------------------------------------------------------------------------------

Executor = Literal["process", "inline"]


class TriggerRequest(_In):
    """Start a new run of a pipeline."""

    parameters: dict[str, JsonValue] = Field(
        default_factory=dict, description="Parameter overrides, name → JSON value."
    )
    variables: dict[str, str] = Field(
        default_factory=dict, description="Runtime variables, readable as ``pt.current.vars``."
    )
    tags: list[str] = Field(default_factory=list, description="User tags.")
    executor: Executor | None = Field(
        default=None,
        description="process (worker processes) or inline (the server's own process; one "
        "step at a time, for debugging); the server's setting by default.",
    )
    file: str | None = Field(
        default=None,
        description="Pipeline file to load; by default the file of the pipeline's latest run.",
    )
    max_parallel: int | None = Field(default=None, ge=1, le=1024, description="Most tasks at once.")


class RetryRequest(_In):
    """Retry a run as a new run that reuses what completed (the origin is not changed)."""

    from_step: str | None = Field(
        default=None,
        description="Re-run this step and everything downstream of it, whatever their status; "
        "by default only what did not complete re-runs.",
    )
    parameters: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="Parameter changes; steps that read them (and their dependants) re-run.",
    )
    executor: Executor | None = Field(default=None, description="process or inline.")


class CancelRequest(_In):
    """Cancel a waiting or running run."""

    reason: str | None = Field(default=None, max_length=2000, description="Recorded with it.")
    wait_s: float = Field(
        default=10.0,
        ge=0.0,
        le=120.0,
        description="How long to wait for the run's runner to stop it before forcing it.",
    )


class BatchFilter(_In):
    """Selects runs for a batch action."""

    pipeline: PipelineName | None = Field(default=None, description="Only runs of this pipeline.")
    status: list[RunStatus] = Field(
        default_factory=list,
        description="Only runs with one of these statuses; by default the ones the action "
        "applies to (cancel: initial and running; retry: failed and cancelled).",
    )
    tag: list[TagText] = Field(default_factory=list, description="Only runs with all these tags.")


class BatchRequest(_In):
    """Runs to act on: a list of ids, or a filter ("cancel all running of pipeline X")."""

    ids: list[int] | None = Field(
        default=None, max_length=1000, description="Run ids (at most 1000)."
    )
    filter: BatchFilter | None = Field(default=None, description="Or: the runs matching this.")
    from_step: str | None = Field(default=None, description="Retry only: as for one run.")
    executor: Executor | None = Field(default=None, description="Retry only: process or inline.")
    reason: str | None = Field(default=None, max_length=2000, description="Cancel only.")
    wait_s: float = Field(default=10.0, ge=0.0, le=120.0, description="Cancel only.")

    @model_validator(mode="after")
    def _one_selector(self) -> BatchRequest:
        if (self.ids is None) == (self.filter is None):
            raise ValueError("give either 'ids' or 'filter', not both and not neither")
        if self.ids is not None and any(not 1 <= i <= MAX_ID for i in self.ids):
            raise ValueError(f"run ids are integers from 1 to {MAX_ID}")
        return self


class PlanStep(_Out):
    """What a retry does with one step."""

    step: str
    action: str = Field(description="reuse or run.")
    reason: str
    reused_tasks: int = Field(description="Tasks whose outputs are reused.")


class RetryResponse(_Out):
    """The new run started by a retry (it runs in the background) and its plan."""

    pipeline_run: PipelineRunOut
    plan: list[PlanStep]


class BatchItemResult(_Out):
    """The outcome of a batch action on one run."""

    id: int = Field(description="The run acted on.")
    ok: bool
    pipeline_run: PipelineRunOut | None = Field(
        description="retry: the new run; cancel: the run as it ended."
    )
    error: ErrorBody | None = Field(description="Why the action failed on this run.")


class BatchResponse(_Out):
    """Per-run outcomes of a batch action, in the order of the runs."""

    matched: int = Field(description="Runs selected.")
    succeeded: int
    results: list[BatchItemResult]


# -- triggers -----------------------------------------------------------------------------------

#: A trigger's name: any non-empty text of at most 200 characters.
TriggerName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00]*$")]
_Short = Annotated[str, StringConstraints(max_length=500)]
#: A duration: text such as "10m", "2h", "1d", or a number of seconds.
_Duration = _Short | float


class _TriggerFields(_In):
    """The fields of a trigger, as the CLI options, YAML files and Python keyword arguments
    name them (exactly one of cron, every, once_at, always_on, after and api)."""

    pipeline: _Short | None = Field(
        default=None,
        description="FILE[:PIPELINE]: a pipeline file under the server's project directory "
        "(relative paths are taken from it) and the pipeline's name when the file has several.",
    )
    cron: _Short | None = Field(
        default=None, description="A cron expression ('0 2 * * *'), in ``timezone``."
    )
    every: _Duration | None = Field(default=None, description="An interval: '10m', '1h', 3600.")
    once_at: _Short | None = Field(
        default=None, description="Once, at this ISO 8601 time with its zone."
    )
    always_on: bool | None = Field(
        default=None, description="Keep one run going: a new one starts when the last ends."
    )
    after: _Short | None = Field(
        default=None, description="After each run of this pipeline ends (see ``on``)."
    )
    on: Literal["completed", "failed", "any"] | None = Field(
        default=None, description="With after: which endings of the upstream run fire it."
    )
    api: bool | None = Field(
        default=None, description="Fired only by POST /api/triggers/{name}/runs."
    )
    timezone: _Short | None = Field(
        default=None, description="IANA zone of a cron; UTC by default."
    )
    start: _Short | None = Field(default=None, description="With every: the first tick (ISO 8601).")
    end: _Short | None = Field(default=None, description="With every: no tick after this.")
    params: dict[str, JsonValue] | None = Field(
        default=None, description="Parameter values of its runs, name → JSON value."
    )
    variables: dict[str, str] | None = Field(default=None, description="Runtime variables.")
    tags: list[TagText] | None = Field(default=None, description="User tags of its runs.")
    sla: _Duration | None = Field(
        default=None, description="A run not ended this long after its tick has missed its SLA."
    )
    timeout: _Duration | None = Field(default=None, description="Run timeout.")
    on_timeout: Literal["failed", "cancelled", "warning"] | None = Field(
        default=None, description="What a run that times out becomes."
    )
    max_concurrent: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="Most runs of this trigger at once."
    )
    overlap: Literal["wait", "skip"] | None = Field(
        default=None, description="A tick while runs are at max_concurrent: wait or skip it."
    )
    catchup: Literal["latest", "all", "none"] | None = Field(
        default=None, description="Ticks missed while no scheduler ran: latest, all or none."
    )


class TriggerCreate(_TriggerFields):
    """A new trigger."""

    name: TriggerName = Field(description="Its name, unique in the store.")
    pipeline: _Short = Field(
        description="FILE[:PIPELINE]: a pipeline file under the server's project directory "
        "(relative paths are taken from it) and the pipeline's name when the file has several."
    )


class TriggerPatch(_TriggerFields):
    """Fields to change; the others keep their values. A field set to null goes back to its
    default; giving another kind (``every`` for a cron trigger) replaces the kind."""

    name: TriggerName | None = Field(default=None, description="Cannot change; may be repeated.")


class TriggerFireRequest(_In):
    """Fire a trigger once, now."""

    params: dict[str, JsonValue] = Field(
        default_factory=dict, description="Parameter overrides for this run, name → JSON value."
    )
    variables: dict[str, str] = Field(
        default_factory=dict, description="Runtime variables for this run."
    )
    executor: Executor | None = Field(default=None, description="process or inline.")


class RunRef(_Out):
    """A run, briefly."""

    id: int
    pathspec: str
    status: RunStatus


class TriggerOut(_Out):
    """A trigger, its schedule and how it went."""

    name: str
    definition: dict[str, JsonValue] = Field(
        description="The trigger in the fields POST /api/triggers takes (defaults left out)."
    )
    kind: str = Field(description="cron, interval, once, always_on, after or api.")
    schedule: str = Field(description="The schedule in words.")
    paused: bool
    next_at: datetime | None = Field(
        description="When it fires next by the clock; null when paused, done or not a clock kind."
    )
    last_run: RunRef | None = Field(description="The newest run it started.")
    sla_missed: int = Field(description="Runs it started that missed their SLA.")
    created_at: datetime
    updated_at: datetime
    url: str = Field(description="Where its details are.")
    runs_url: str = Field(description="Where the runs it started are listed.")


class TickOut(_Out):
    """A tick a scheduler (or a fire by hand) claimed: its run, or why it has none."""

    scheduled_at: datetime = Field(description="The time it was due (UTC).")
    claimed_at: datetime = Field(description="When it was claimed (UTC).")
    run: RunRef | None = Field(description="The run it started.")
    skip_reason: str | None = Field(description="Why it started no run.")
    note: str | None = Field(description="What claimed it (backfill, fired: api, …).")


class AlertOut(_Out):
    """An alert about the trigger or its runs, and how its delivery went."""

    event: str = Field(description="failed, sla_missed, start_failed, …")
    notifier: str = Field(description="The notifier it goes to.")
    state: Literal["delivered", "failed", "pending"]
    attempts: int
    last_error: str | None
    run_id: int | None
    created_at: datetime


class TriggerDetail(TriggerOut):
    """A trigger with its recent ticks, alerts and next fire times."""

    ticks: list[TickOut] = Field(description="Recent ticks, newest first.")
    alerts: list[AlertOut] = Field(description="Recent alerts, newest first.")
    upcoming: list[datetime] = Field(description="Its next fire times.")


class TriggerList(_Out):
    """Every trigger, by name."""

    triggers: list[TriggerOut]


class TriggerEnvelope(_Out):
    """One trigger."""

    trigger: TriggerOut


class TriggerDetailEnvelope(_Out):
    """One trigger with its detail."""

    trigger: TriggerDetail


class UpcomingOut(_Out):
    """A fire time of a trigger."""

    trigger: str = Field(description="The trigger's name.")
    at: datetime


class UpcomingList(_Out):
    """The next fire times of the active clock triggers, soonest first."""

    upcoming: list[UpcomingOut]
