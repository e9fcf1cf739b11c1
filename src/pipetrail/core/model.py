"""Plain typed records: pipeline specs as defined, and runs, tasks, metrics and artifacts as recorded."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipetrail.core.hashing import digest_json
from pipetrail.core.status import RunStatus, TaskStatus

__all__ = [
    "ArtifactLink",
    "ArtifactRecord",
    "EventRecord",
    "InputSpec",
    "MetricPoint",
    "ParamSpec",
    "PipelineSpec",
    "RunCause",
    "RunRecord",
    "StepSpec",
    "TaskRecord",
]


@dataclass(frozen=True)
class InputSpec:
    """One argument of a step fed by an upstream step (``output`` set when it names a named output)."""

    arg: str
    step: str
    output: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"arg": self.arg, "step": self.step, "output": self.output}


@dataclass(frozen=True)
class ParamSpec:
    """A pipeline parameter: its name, declared type label, JSON default and the steps that read it."""

    name: str
    type: str
    default: Any
    steps: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "steps": list(self.steps),
        }


@dataclass(frozen=True)
class StepSpec:
    """A step as defined: its inputs, parameters, named outputs, options and source."""

    name: str
    inputs: tuple[InputSpec, ...] = ()
    params: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    source: str = ""
    source_hash: str = ""
    module: str = ""
    qualname: str = ""
    file: str | None = None
    line: int | None = None
    retries: int = 0
    timeout_s: float | None = None
    retry_delay_s: float = 0.0
    backoff: float = 1.0
    retry_on: tuple[str, ...] = ("Exception",)
    on_timeout: str = "failed"
    condition: str | None = None
    condition_args: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    allow_failure: bool = False
    foreach: str | None = None
    max_parallel: int | None = None

    @property
    def upstream(self) -> tuple[str, ...]:
        """Names of the steps this one reads from, in argument order, without repeats."""
        return tuple(dict.fromkeys(i.step for i in self.inputs))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inputs": [i.to_dict() for i in self.inputs],
            "params": list(self.params),
            "outputs": list(self.outputs),
            "source": self.source,
            "source_hash": self.source_hash,
            "module": self.module,
            "qualname": self.qualname,
            "file": self.file,
            "line": self.line,
            "retries": self.retries,
            "timeout_s": self.timeout_s,
            "retry_delay_s": self.retry_delay_s,
            "backoff": self.backoff,
            "retry_on": list(self.retry_on),
            "on_timeout": self.on_timeout,
            "condition": self.condition,
            "condition_args": list(self.condition_args),
            "optional": list(self.optional),
            "allow_failure": self.allow_failure,
            "foreach": self.foreach,
            "max_parallel": self.max_parallel,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepSpec:
        return cls(
            name=data["name"],
            inputs=tuple(InputSpec(**i) for i in data.get("inputs", ())),
            params=tuple(data.get("params", ())),
            outputs=tuple(data.get("outputs", ())),
            source=data.get("source", ""),
            source_hash=data.get("source_hash", ""),
            module=data.get("module", ""),
            qualname=data.get("qualname", ""),
            file=data.get("file"),
            line=data.get("line"),
            retries=int(data.get("retries", 0)),
            timeout_s=data.get("timeout_s"),
            retry_delay_s=float(data.get("retry_delay_s", 0.0)),
            backoff=float(data.get("backoff", 1.0)),
            retry_on=tuple(data.get("retry_on", ("Exception",))),
            on_timeout=data.get("on_timeout", "failed"),
            condition=data.get("condition"),
            condition_args=tuple(data.get("condition_args", ())),
            optional=tuple(data.get("optional", ())),
            allow_failure=bool(data.get("allow_failure", False)),
            foreach=data.get("foreach"),
            max_parallel=data.get("max_parallel"),
        )


@dataclass(frozen=True)
class PipelineSpec:
    """A whole pipeline as defined: the DAG exactly as it will run, hashable into a version."""

    name: str
    steps: tuple[StepSpec, ...]
    params: tuple[ParamSpec, ...] = ()
    file: str | None = None
    max_concurrent_runs: int | None = None
    timeout_s: float | None = None
    on_timeout: str = "failed"

    @functools.cached_property
    def version(self) -> str:
        """Hash of the steps' code and wiring: equal for equal pipelines, whatever the comments say.

        Computed once per spec (a frozen value: its steps cannot change).
        """
        shape = [
            {
                "name": s.name,
                "inputs": [i.to_dict() for i in s.inputs],
                "params": list(s.params),
                "outputs": list(s.outputs),
                "source_hash": s.source_hash,
            }
            for s in self.steps
        ]
        return digest_json({"pipeline": self.name, "steps": shape})[:16]

    @functools.cached_property
    def dag_hash(self) -> str:
        """Hash of the whole definition (``to_dict()``): the identity of a pipeline version row."""
        return digest_json(self.to_dict())

    def step(self, name: str) -> StepSpec:
        """The step called ``name``; KeyError listing the valid names otherwise."""
        for spec in self.steps:
            if spec.name == name:
                return spec
        raise KeyError(f"no step {name!r} in pipeline {self.name!r}; steps: {self.step_names}")

    @property
    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "file": self.file,
            "steps": [s.to_dict() for s in self.steps],
            "params": [p.to_dict() for p in self.params],
            "max_concurrent_runs": self.max_concurrent_runs,
            "timeout_s": self.timeout_s,
            "on_timeout": self.on_timeout,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineSpec:
        return cls(
            name=data["name"],
            steps=tuple(StepSpec.from_dict(s) for s in data["steps"]),
            params=tuple(
                ParamSpec(p["name"], p["type"], p.get("default"), tuple(p.get("steps", ())))
                for p in data.get("params", ())
            ),
            file=data.get("file"),
            max_concurrent_runs=data.get("max_concurrent_runs"),
            timeout_s=data.get("timeout_s"),
            on_timeout=data.get("on_timeout", "failed"),
        )


@dataclass(frozen=True)
class RunCause:
    """What a trigger started a run for: the trigger, its tick, and for ``after`` the upstream run.

    ``scheduled_at`` is the tick's time (the actual start for a run fired by hand or over REST).
    """

    trigger: str
    scheduled_at: datetime
    upstream_run_id: int | None = None
    upstream_pathspec: str | None = None


@dataclass(frozen=True)
class RunRecord:
    """A pipeline run as recorded in the store."""

    id: int
    pipeline: str
    version: str
    status: RunStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    user: str
    host: str
    trigger: str
    params: dict[str, Any]
    param_types: dict[str, str]
    variables: dict[str, str]
    user_tags: tuple[str, ...]
    system_tags: tuple[str, ...]
    origin_run_id: int | None = None
    error: str | None = None
    git: dict[str, Any] | None = None
    code_key: str | None = None
    environment_hash: str | None = None
    dag: dict[str, Any] = field(default_factory=dict)
    heartbeat_at: datetime | None = None
    runner_host: str | None = None
    runner_pid: int | None = None
    cancel_requested_at: datetime | None = None
    timeout_s: float | None = None
    #: The runner's lease (a generation): moved on when the run is taken from its runner.
    lease: int = 1
    #: Set when a trigger started the run (``trigger`` is then the trigger's kind).
    cause: RunCause | None = None
    #: When the run must have completed by (its trigger's SLA), and whether it did:
    #: ``None`` while undecided, ``met`` or ``missed`` (at ``sla_missed_at``).
    sla_due_at: datetime | None = None
    sla_state: str | None = None
    sla_missed_at: datetime | None = None

    @property
    def pathspec(self) -> str:
        return f"{self.pipeline}/{self.id}"

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class TaskRecord:
    """One attempt of one task (Mage: block run)."""

    id: int
    run_id: int
    step: str
    task_index: int
    attempt: int
    status: TaskStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cpu_time_s: float | None = None
    peak_memory_bytes: int | None = None
    gpu_peak_memory_bytes: int | None = None
    gpu_time_s: float | None = None
    exception_type: str | None = None
    exception_message: str | None = None
    traceback: str | None = None
    failed_upstream: str | None = None
    host: str | None = None
    pid: int | None = None
    #: The executor's worker it ran on, where that is more than a host (a Dask worker address).
    worker: str | None = None
    reused_from_task_id: int | None = None
    allowed_failure: bool = False
    note: str | None = None
    #: Bytes of the task's spool (metric points) already drained into the store.
    spool_offset: int = 0

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class EventRecord:
    """A status change of a run or task, with its time; the history is append-only."""

    run_id: int
    task_id: int | None
    status: str
    at: datetime
    previous: str | None = None
    message: str | None = None
    #: ``status`` for a status change; ``cancel_requested``, ``timeout``, ``reused`` otherwise.
    kind: str = "status"
    #: Who caused it, when a person did (a cancel, a tag change): a token's user or local user.
    actor: str | None = None


@dataclass(frozen=True)
class MetricPoint:
    """One value of a named metric series."""

    name: str
    value: float
    step: int | None
    timestamp: datetime


@dataclass(frozen=True)
class ArtifactRecord:
    """Stored content: hash, size and how it was serialized."""

    key: str
    size: int
    serializer: str
    content_type: str
    type_name: str


@dataclass(frozen=True)
class ArtifactLink:
    """A lineage edge: a task consumed (``input``) or produced (``output``) an artifact."""

    task_id: int
    run_id: int
    direction: str
    name: str
    kind: str
    artifact: ArtifactRecord
    source_uri: str | None = None
    producer_task_id: int | None = None
