"""The run page's model: steps and their attempts, the DAG, the timeline and the root cause."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipetrail.client import Run, Task
from pipetrail.core.cost import RunCost
from pipetrail.core.model import ArtifactLink, TaskRecord
from pipetrail.core.status import RUN_TERMINAL, RunStatus, TaskStatus
from pipetrail.dashboard.formatting import format_duration
from pipetrail.dashboard.timeline import TimelineRow, timeline_rows

if TYPE_CHECKING:
    from pipetrail.storage.metadata.base import AlertRecord, MetadataStore

__all__ = [
    "ArtifactView",
    "AttemptView",
    "RootCause",
    "RunDetail",
    "StepView",
    "aggregate_status",
    "run_detail",
    "step_states",
]

#: Logs longer than this are cut to their end on the page (the API serves them whole).
LOG_LIMIT = 20_000
#: Above this many attempts in a run, logs are not read for the page.
LOG_TASK_LIMIT = 200
#: Alerts of a run the page lists (the newest).
ALERT_LIMIT = 50

#: When a step's tasks disagree, the status that describes the step best comes first.
_PRECEDENCE = [
    TaskStatus.RUNNING,
    TaskStatus.QUEUED,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
    TaskStatus.UPSTREAM_FAILED,
    TaskStatus.INITIAL,
    TaskStatus.COMPLETED,
    TaskStatus.CONDITION_FAILED,
]


def aggregate_status(statuses: Sequence[str]) -> str:
    """One status for a step from its tasks' (latest attempt each); ``initial`` for none."""
    if not statuses:
        return TaskStatus.INITIAL.value
    present = set(statuses)
    if len(present) == 1:
        return statuses[0]
    for status in _PRECEDENCE:
        if status.value in present:
            return status.value
    return statuses[-1]


@dataclass(frozen=True)
class ArtifactView:
    """An input or output of an attempt, with where it came from."""

    link: ArtifactLink
    #: The run that produced an input, when it is another run (lineage across runs).
    producer_run: int | None = None

    @property
    def name(self) -> str:
        return self.link.name

    @property
    def hash(self) -> str:
        return self.link.artifact.key

    @property
    def external(self) -> bool:
        return self.link.artifact.serializer == "external"


@dataclass(frozen=True)
class AttemptView:
    """One attempt of one task, with its logs when the page shows them."""

    task: Task
    inputs: list[ArtifactView]
    outputs: list[ArtifactView]
    stdout: str | None = None
    stderr: str | None = None
    stdout_cut: bool = False
    stderr_cut: bool = False

    @property
    def record(self) -> TaskRecord:
        return self.task.record

    @property
    def label(self) -> str:
        r = self.task.record
        return f"task {r.task_index} · attempt {r.attempt}"


@dataclass
class StepView:
    """One step of the run: its definition, the parameters it reads and its attempts."""

    name: str
    spec: dict[str, Any]
    status: str
    attempts: list[AttemptView]
    params: list[tuple[str, Any]]
    upstream: list[str]
    tasks: int

    @property
    def latest(self) -> list[AttemptView]:
        """The latest attempt of each task."""
        last: dict[int, AttemptView] = {}
        for a in self.attempts:
            last[a.task.record.task_index] = a
        return [last[i] for i in sorted(last)]

    @property
    def duration(self) -> float | None:
        starts = [a.record.started_at for a in self.attempts if a.record.started_at]
        ends = [a.record.finished_at for a in self.attempts if a.record.finished_at]
        if not starts or not ends:
            return None
        return (max(ends) - min(starts)).total_seconds()

    @property
    def errors(self) -> list[AttemptView]:
        return [a for a in self.attempts if a.record.exception_type or a.record.traceback]


@dataclass(frozen=True)
class RootCause:
    """The first failure of a failed run, and the steps that only failed because of it."""

    step: str | None
    attempt: AttemptView | None
    message: str
    consequences: list[tuple[str, str, str | None]]
    other_failures: list[str]


@dataclass
class RunDetail:
    """Everything the run page shows, read once per page view."""

    run: Run
    steps: list[StepView]
    dag: dict[str, Any]
    timeline: list[TimelineRow]
    ticks: list[tuple[float, str]]
    root_cause: RootCause | None
    selected: str | None
    params: list[dict[str, Any]]
    live: bool
    lineage: dict[str, Any] = field(default_factory=dict)
    #: Alerts raised about the run, with their delivery state.
    alerts: list[AlertRecord] = field(default_factory=list)
    #: What the run used per step and in total; its slowest and costliest step.
    cost: RunCost | None = None


def step_states(run: Run) -> dict[str, str]:
    """Each step's status (over the latest attempt of its tasks), for live updates."""
    out: dict[str, str] = {}
    for step in run.steps:
        latest: dict[int, str] = {}
        for task in step.tasks:
            latest[task.record.task_index] = task.status
        out[step.name] = aggregate_status([latest[i] for i in sorted(latest)])
    return out


def run_detail(run: Run, store: MetadataStore, *, now: datetime | None = None) -> RunDetail:
    """Everything the run page shows, read once."""
    now = now or datetime.now(UTC)
    specs = {s["name"]: s for s in run.dag.get("steps", [])}
    param_specs = {p["name"]: p for p in run.dag.get("params", [])}
    links = store.links(run.id)
    producers = _producer_runs(run, store, links)
    total_tasks = sum(len(s.tasks) for s in run.steps)
    steps: list[StepView] = []
    for step in run.steps:
        spec = specs.get(step.name, {})
        attempts = [
            _attempt(task, store, links, producers, with_logs=total_tasks <= LOG_TASK_LIMIT)
            for task in step.tasks
        ]
        latest: dict[int, str] = {}
        for a in attempts:
            latest[a.record.task_index] = a.task.status
        steps.append(
            StepView(
                name=step.name,
                spec=spec,
                status=aggregate_status([latest[i] for i in sorted(latest)]),
                attempts=attempts,
                params=[(p, run.params.get(p)) for p in spec.get("params", [])],
                upstream=list(dict.fromkeys(i["step"] for i in spec.get("inputs", []))),
                tasks=len(latest),
            )
        )
    root = _root_cause(run, steps)
    timeline, ticks = timeline_rows(run, steps, now)
    return RunDetail(
        run=run,
        steps=steps,
        dag=_dag(steps),
        timeline=timeline,
        ticks=ticks,
        root_cause=root,
        selected=_selected(steps, root),
        params=_params(run, param_specs),
        live=run.record.status not in RUN_TERMINAL,
        alerts=store.alerts(run_id=run.id, limit=ALERT_LIMIT),
        cost=run.cost,
    )


def _producer_runs(run: Run, store: MetadataStore, links: list[ArtifactLink]) -> dict[int, int]:
    """Run of each producing task that is not in this run (inputs from other runs)."""
    own = {t.id for s in run.steps for t in s.tasks}
    wanted = sorted(
        {
            link.producer_task_id
            for link in links
            if link.direction == "input" and link.producer_task_id is not None
        }
        - own
    )
    if not wanted:
        return {}
    return {t.id: t.run_id for t in store.get_tasks(wanted)}


def _attempt(
    task: Task,
    store: MetadataStore,
    links: list[ArtifactLink],
    producers: dict[int, int],
    *,
    with_logs: bool,
) -> AttemptView:
    mine = [link for link in links if link.task_id == task.id]

    def view(link: ArtifactLink) -> ArtifactView:
        pid = link.producer_task_id
        return ArtifactView(link, producers.get(pid) if pid is not None else None)

    inputs = [view(link) for link in mine if link.direction == "input"]
    outputs = [view(link) for link in mine if link.direction == "output"]
    if not with_logs:
        return AttemptView(task, inputs, outputs)
    logs = store.logs(task.id)
    stdout, stderr = logs.get("stdout", ""), logs.get("stderr", "")
    return AttemptView(
        task,
        inputs,
        outputs,
        stdout=stdout[-LOG_LIMIT:],
        stderr=stderr[-LOG_LIMIT:],
        stdout_cut=len(stdout) > LOG_LIMIT,
        stderr_cut=len(stderr) > LOG_LIMIT,
    )


def _root_cause(run: Run, steps: list[StepView]) -> RootCause | None:
    if run.record.status is not RunStatus.FAILED:
        return None
    latest = [a for s in steps for a in s.latest]
    failed = sorted(
        (
            a
            for a in latest
            if a.record.status is TaskStatus.FAILED and not a.record.allowed_failure
        ),
        key=lambda a: (a.record.finished_at or a.record.created_at, a.record.id),
    )
    consequences = [
        (a.record.step, a.record.status.value, a.record.failed_upstream)
        for a in latest
        if a.record.status in (TaskStatus.UPSTREAM_FAILED, TaskStatus.CANCELLED)
    ]
    if not failed:
        return RootCause(None, None, run.error or "the run failed", consequences, [])
    first = failed[0]
    r = first.record
    message = (
        f"{r.exception_type}: {r.exception_message}"
        if r.exception_type
        else (r.note or run.error or "the step failed")
    )
    others = list(dict.fromkeys(a.record.step for a in failed[1:] if a.record.step != r.step))
    return RootCause(r.step, first, message, consequences, others)


def _selected(steps: list[StepView], root: RootCause | None) -> str | None:
    if root is not None and root.step is not None:
        return root.step
    for wanted in ("running", "failed", "queued"):
        for step in steps:
            if step.status == wanted:
                return step.name
    return steps[0].name if steps else None


def _dag(steps: list[StepView]) -> dict[str, Any]:
    """Cytoscape elements: a node per step (coloured by status), an edge per upstream step."""
    nodes = []
    edges = []
    names = {s.name for s in steps}
    for s in steps:
        label = s.name if s.tasks <= 1 else f"{s.name} \N{MULTIPLICATION SIGN}{s.tasks}"
        nodes.append(
            {
                "data": {
                    "id": s.name,
                    "label": label,
                    "status": s.status,
                    "duration": format_duration(s.duration),
                }
            }
        )
        outputs: dict[str, list[str]] = {}
        for i in s.spec.get("inputs", []):
            if i["step"] in names:
                outputs.setdefault(i["step"], [])
                if i.get("output"):
                    outputs[i["step"]].append(str(i["output"]))
        for up, named in outputs.items():
            edges.append(
                {
                    "data": {
                        "id": f"{up}->{s.name}",
                        "source": up,
                        "target": s.name,
                        "label": ", ".join(named),
                    }
                }
            )
    return {"nodes": nodes, "edges": edges}


def _params(run: Run, specs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name, value in sorted(run.params.items()):
        spec = specs.get(name, {})
        rows.append(
            {
                "name": name,
                "value": value,
                "type": run.param_types.get(name) or spec.get("type", ""),
                "default": spec.get("default"),
                "changed": "default" in spec and spec.get("default") != value,
                "steps": spec.get("steps", []),
            }
        )
    return rows
