"""Run handles over the store, addressed by pathspec (Metaflow's shape), and run listings."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipetrail.client.artifacts import DataArtifacts
from pipetrail.client.reader import Reader, resolve_reader
from pipetrail.client.steps import Step, Task
from pipetrail.core.cost import RunCost, run_cost
from pipetrail.core.ids import parse_pathspec, validate_user_tags
from pipetrail.core.model import ArtifactLink, EventRecord, MetricPoint, RunRecord, TaskRecord
from pipetrail.core.status import RunStatus, TaskStatus
from pipetrail.errors import NotFoundError, UsageError
from pipetrail.storage.metadata.base import RunQuery

__all__ = [
    "Code",
    "Run",
    "RunList",
    "RunTrigger",
    "list_runs",
    "namespace",
    "search_runs",
]


@dataclass(frozen=True, eq=False)
class RunTrigger:
    """What started a run: its ``kind`` (cli, api, retry, reproduce, or a trigger's kind: cron,
    interval, once, always_on, after, api, manual), and when a trigger did, the trigger's
    ``name``, the tick's ``scheduled_at`` and, for ``after``, the ``upstream`` run's pathspec.

    It compares equal to its kind (``run.trigger == "cron"``) and prints as it.
    """

    kind: str
    name: str | None = None
    scheduled_at: datetime | None = None
    upstream: str | None = None

    @classmethod
    def of(cls, record: RunRecord) -> RunTrigger:
        cause = record.cause
        if cause is None:
            return cls(record.trigger)
        return cls(record.trigger, cause.trigger, cause.scheduled_at, cause.upstream_pathspec)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``runs show --json``, REST): kind, name, scheduled_at (ISO), upstream."""
        return {
            "kind": self.kind,
            "name": self.name,
            "scheduled_at": self.scheduled_at.isoformat() if self.scheduled_at else None,
            "upstream": self.upstream,
        }

    def __str__(self) -> str:
        return self.kind

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.kind == other
        if isinstance(other, RunTrigger):
            return self.to_dict() == other.to_dict()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.kind)


def sla_of(record: RunRecord) -> dict[str, Any] | None:
    """The run's SLA as JSON (due_at, state: pending/met/missed, missed_at), None without one."""
    if record.sla_due_at is None:
        return None
    return {
        "due_at": record.sla_due_at.isoformat(),
        "state": record.sla_state or "pending",
        "missed_at": record.sla_missed_at.isoformat() if record.sla_missed_at else None,
    }


class Run:
    """One pipeline run: ``Run("iris/42")`` or ``Run(42)``.

    Raises:
        NotFoundError: no such run, or the pathspec names another pipeline.
    """

    def __init__(self, pathspec: str | int, *, reader: Reader | None = None) -> None:
        self._reader = resolve_reader(reader)
        spec = parse_pathspec(str(pathspec))
        self._record = self._reader.store.get_run(spec.run_id)
        if spec.pipeline is not None and spec.pipeline != self._record.pipeline:
            raise NotFoundError(
                f"run {spec.run_id} belongs to pipeline {self._record.pipeline!r}, "
                f"not {spec.pipeline!r}"
            )
        self._tasks: list[TaskRecord] | None = None
        self._links: list[ArtifactLink] | None = None
        self._page: _Page | None = None

    @classmethod
    def _of(cls, record: RunRecord, reader: Reader, page: _Page | None = None) -> Run:
        run = cls.__new__(cls)
        run._reader, run._record, run._tasks, run._links = reader, record, None, None
        run._page = page
        return run

    def refresh(self) -> Run:
        """Re-read the run from the store (it may still be running)."""
        self._record = self._reader.store.get_run(self._record.id)
        self._tasks = self._links = self._page = None
        return self

    @property
    def record(self) -> RunRecord:
        return self._record

    @property
    def id(self) -> int:
        return self._record.id

    @property
    def pathspec(self) -> str:
        return self._record.pathspec

    @property
    def pipeline_name(self) -> str:
        return self._record.pipeline

    @property
    def version(self) -> str:
        return self._record.version

    @property
    def status(self) -> str:
        return self._record.status.value

    @property
    def finished(self) -> bool:
        return self._record.status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)

    @property
    def successful(self) -> bool:
        """Completed with no failed task (a step with ``allow_failure`` that failed counts)."""
        if self._record.status is not RunStatus.COMPLETED:
            return False
        latest: dict[tuple[str, int], TaskRecord] = {}
        for task in self._task_records():
            latest[(task.step, task.task_index)] = task
        return all(t.status is not TaskStatus.FAILED for t in latest.values())

    @property
    def path_components(self) -> list[str]:
        return [self._record.pipeline, str(self._record.id)]

    @property
    def parent(self) -> PipelineHistory:
        """The pipeline this run belongs to, as its recorded history (Metaflow's ``Flow``)."""
        return PipelineHistory(self._record.pipeline, reader=self._reader)

    @property
    def end_task(self) -> Task | None:
        """The task of the run's last step in execution order, once it exists."""
        steps = self.steps
        return steps[-1].task if steps else None

    @property
    def created_at(self) -> datetime:
        return self._record.created_at

    @property
    def started_at(self) -> datetime | None:
        return self._record.started_at

    @property
    def finished_at(self) -> datetime | None:
        return self._record.finished_at

    @property
    def duration(self) -> float | None:
        return self._record.duration_s

    @property
    def user(self) -> str:
        return self._record.user

    @property
    def host(self) -> str:
        return self._record.host

    @property
    def trigger(self) -> RunTrigger:
        """What started the run (kind; trigger name, scheduled time, upstream run)."""
        return RunTrigger.of(self._record)

    @property
    def sla(self) -> dict[str, Any] | None:
        """The SLA its trigger set: due_at, state (pending, met, missed), missed_at; or None."""
        return sla_of(self._record)

    @property
    def sla_missed(self) -> bool:
        return self._record.sla_state == "missed"

    @property
    def error(self) -> str | None:
        return self._record.error

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._record.params)

    @property
    def param_types(self) -> dict[str, str]:
        return dict(self._record.param_types)

    @property
    def variables(self) -> dict[str, str]:
        return dict(self._record.variables)

    @property
    def tags(self) -> frozenset[str]:
        return frozenset(self._record.user_tags) | frozenset(self._record.system_tags)

    @property
    def user_tags(self) -> frozenset[str]:
        return frozenset(self._record.user_tags)

    @property
    def system_tags(self) -> frozenset[str]:
        return frozenset(self._record.system_tags)

    @property
    def origin_pathspec(self) -> str | None:
        origin = self._record.origin_run_id
        if origin is None:
            return None
        return self._reader.store.get_run(origin).pathspec

    @property
    def git(self) -> dict[str, Any] | None:
        return self._record.git

    @property
    def dag(self) -> dict[str, Any]:
        """The pipeline exactly as it ran: steps, wiring, parameters and each step's source."""
        return self._record.dag

    @property
    def code(self) -> Code | None:
        """The stored source snapshot: ``code["flow.py"]``, ``code.files``, ``code.steps["train"]``."""
        if self._record.code_key is None:
            return None
        from pipetrail.provenance.code import read_archive

        files = read_archive(self._reader.cas.get_bytes(self._record.code_key))
        steps = {s["name"]: s.get("source", "") for s in self._record.dag.get("steps", [])}
        return Code(files, steps, self._record.code_key)

    # -- tags ---------------------------------------------------------------------------------

    def add_tag(self, tag: str) -> None:
        """Add a user tag; a tag the run has as a system tag already is left alone."""
        self.add_tags([tag])

    def add_tags(self, tags: Iterable[str]) -> None:
        self.replace_tags([], tags)

    def remove_tag(self, tag: str) -> None:
        """Remove a user tag (no-op when absent); removing a system tag is an error."""
        self.remove_tags([tag])

    def remove_tags(self, tags: Iterable[str]) -> None:
        self.replace_tags(tags, [])

    def replace_tag(self, old: str, new: str) -> None:
        self.replace_tags([old], [new])

    def replace_tags(
        self, old: Iterable[str], new: Iterable[str], *, actor: str | None = None
    ) -> None:
        """Remove ``old`` then add ``new``, atomically; with ``actor`` (who changes them), the
        change is also an event of the run naming them."""
        system = set(self._record.system_tags)
        adding = [t for t in new if t not in system]
        self._record = self._reader.store.change_tags(
            self._record.id, add=validate_user_tags(adding), remove=list(old), actor=actor
        )

    @property
    def environment(self) -> dict[str, Any] | None:
        if self._record.environment_hash is None:
            return None
        return self._reader.store.get_environment(self._record.environment_hash)

    @property
    def metrics(self) -> dict[str, float]:
        """The latest value of each metric (read with those of the runs listed with it)."""
        if self._page is not None:
            return self._page.latest_metrics(self._record.id)
        return self._reader.store.latest_metrics(self._record.id)

    @property
    def cost(self) -> RunCost:
        """What the run used: CPU seconds, peak memory and GPU seconds per step and in total,
        its wall time, and which step is slowest and which costs most.

        Every attempt counts (a retry was paid for); tasks reused from an earlier run do not.
        While the run goes on, its wall time and running attempts are measured to now.
        """
        now = None if self.finished else datetime.now(UTC)
        return run_cost(self._record, self._task_records(), now=now)

    def metric_history(self, name: str) -> list[MetricPoint]:
        return [p for _, p in self._reader.store.metric_history(self._record.id, name)]

    @property
    def events(self) -> list[EventRecord]:
        return self._reader.store.events(self._record.id)

    def _task_records(self) -> list[TaskRecord]:
        if self._tasks is None:
            self._tasks = self._reader.store.tasks(self._record.id)
        return self._tasks

    def _link_records(self) -> list[ArtifactLink]:
        if self._links is None:
            self._links = self._reader.store.links(self._record.id)
        return self._links

    def _task_handle(self, task_id: int) -> Task | None:
        """The Task handle of a task id: of this run, or of the run that recorded it."""
        tasks = self._task_records()
        record = next((t for t in tasks if t.id == task_id), None)
        if record is None:
            found = self._reader.store.get_tasks([task_id])
            if not found:
                return None
            return Run._of(self._reader.store.get_run(found[0].run_id), self._reader)._task_handle(
                task_id
            )
        return Task(Step(self, record.step, [t for t in tasks if t.step == record.step]), record)

    @property
    def steps(self) -> list[Step]:
        """Steps in execution order."""
        order = [s["name"] for s in self._record.dag.get("steps", [])]
        tasks = self._task_records()
        return [Step(self, name, [t for t in tasks if t.step == name]) for name in order]

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __getitem__(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(
            f"run {self.pathspec} has no step {name!r}; steps: {[s.name for s in self.steps]}"
        )

    def __contains__(self, name: object) -> bool:
        return any(s.name == name for s in self.steps)

    @property
    def data(self) -> DataArtifacts:
        """Every named artifact the run's tasks produced so far (last attempt of each), by name.

        For a run still going, that is what its finished tasks produced until now.
        """
        last: dict[tuple[str, int], TaskRecord] = {}
        for task in self._task_records():
            last[(task.step, task.task_index)] = task
        order = {t.id: (t.step, t.task_index) for t in last.values()}
        groups: dict[str, list[ArtifactLink]] = {}
        for link in sorted(
            (k for k in self._link_records() if k.direction == "output" and k.task_id in order),
            key=lambda k: order[k.task_id][1],
        ):
            groups.setdefault(link.name, []).append(link)
        return DataArtifacts(self._reader, groups)

    def _repr_html_(self) -> str:
        rows = [
            ("run", self.pathspec),
            ("status", self.status),
            ("created", str(self.created_at)),
            ("duration", f"{self.duration:.3f} s" if self.duration is not None else "-"),
            ("params", ", ".join(f"{k}={v!r}" for k, v in self.params.items())),
            ("metrics", ", ".join(f"{k}={v:.4g}" for k, v in self.metrics.items())),
            ("tags", ", ".join(sorted(self.user_tags))),
        ]
        return _html_table(["field", "value"], rows)

    def __repr__(self) -> str:
        return f"Run('{self.pathspec}', status={self.status!r})"


class Code:
    """A run's stored source: the files as they ran, and the source of each step."""

    def __init__(self, files: dict[str, str], steps: dict[str, str], key: str) -> None:
        self.files = files
        self.steps = steps
        self.key = key

    def __getitem__(self, name: str) -> str:
        if name not in self.files:
            raise KeyError(f"no file {name!r} in the code snapshot; files: {sorted(self.files)}")
        return self.files[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __contains__(self, name: object) -> bool:
        return name in self.files

    def __len__(self) -> int:
        return len(self.files)

    def values(self) -> Iterator[str]:
        return iter(self.files.values())

    def __repr__(self) -> str:
        return f"<code {self.key[:12]} files={sorted(self.files)}>"


class _Page:
    """Runs listed together: the first to read its metrics reads those of all, in one query.

    A search of 1,000 runs whose metrics are read one by one costs one query, not 1,000.
    """

    __slots__ = ("_metrics", "_reader", "run_ids")

    def __init__(self, reader: Reader, run_ids: list[int]) -> None:
        self._reader = reader
        self.run_ids = run_ids
        self._metrics: dict[int, dict[str, float]] | None = None

    def latest_metrics(self, run_id: int) -> dict[str, float]:
        if self._metrics is None:
            self._metrics = self._reader.store.latest_metrics_of(self.run_ids)
        found = self._metrics.get(run_id)
        if found is None:
            return self._reader.store.latest_metrics(run_id)
        return dict(found)


def _handles(records: list[RunRecord], reader: Reader) -> Iterator[Run]:
    """Run handles of records fetched together (they load what they lazily load together)."""
    page = _Page(reader, [r.id for r in records])
    return (Run._of(record, reader, page) for record in records)


class RunList(list[Run]):
    """Runs, newest first; ``to_pandas()`` gives one row per run with params and metrics."""

    def to_pandas(self) -> Any:
        try:
            import pandas as pd
        except ImportError:
            raise UsageError("to_pandas() needs pandas: pip install pandas") from None
        rows = []
        for run in self:
            row: dict[str, Any] = {
                "pathspec": run.pathspec,
                "pipeline": run.pipeline_name,
                "status": run.status,
                "created_at": run.created_at,
                "duration_s": run.duration,
                "user": run.user,
            }
            row.update({f"params.{k}": v for k, v in run.params.items()})
            row.update({f"metrics.{k}": v for k, v in run.metrics.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def _repr_html_(self) -> str:
        rows = [(r.pathspec, r.status, str(r.created_at), f"{r.duration or 0:.2f} s") for r in self]
        return _html_table(["run", "status", "created", "duration"], rows)


#: ``None``: all runs; a tag such as ``user:alice``: runs with it; unset: the current user's.
_namespace: list[str | None] = []


def namespace(ns: str | object | None = ..., /) -> str | None:
    """Set (and return) the namespace that listings are scoped to, as in Metaflow.

    By default runs of the current user (``user:<name>``) are listed; ``namespace(None)`` lists
    everyone's; ``namespace("user:alice")`` or any tag scopes to that tag. Called with no
    argument it returns the namespace in force. Fetching one run by pathspec is never scoped.
    """
    if ns is not ...:
        if ns is not None and not isinstance(ns, str):
            raise UsageError(f"a namespace is a tag such as 'user:alice', or None; got {ns!r}")
        _namespace[:] = [ns]
    return _namespace[0] if _namespace else default_namespace()


def default_namespace() -> str:
    from pipetrail.provenance.environment import current_user

    return f"user:{current_user()}"


def list_runs(
    *,
    pipeline: str | None = None,
    statuses: tuple[RunStatus, ...] = (),
    tags: tuple[str, ...] = (),
    since: datetime | None = None,
    limit: int | None = 100,
    filter: str | None = None,
    order_by: tuple[str, ...] = (),
    all_namespaces: bool = False,
    reader: Reader | None = None,
    trigger: str | None = None,
    sla_missed: bool = False,
) -> RunList:
    """Runs newest first (or by ``order_by``), filtered, in the current namespace; with
    ``trigger`` only the runs that trigger started, with ``sla_missed`` only late ones."""
    r = resolve_reader(reader)
    scope = None if all_namespaces else namespace()
    records = r.store.list_runs(
        RunQuery(
            pipeline=pipeline,
            statuses=statuses,
            tags=tuple(tags) + ((scope,) if scope else ()),
            since=since,
            limit=limit,
            filter=filter,
            order_by=tuple(order_by),
            trigger=trigger,
            sla_missed=sla_missed,
        ),
        lazy=True,
    )
    return RunList(_handles(records, r))


def search_runs(
    filter: str | None = None,
    *,
    order_by: list[str] | tuple[str, ...] = (),
    limit: int | None = 100,
    pipeline: str | None = None,
    reader: Reader | None = None,
) -> RunList:
    """Runs matching the search language, across all pipelines and users unless narrowed.

    ``search_runs("metrics.accuracy > 0.9 and params.lr = 0.01", order_by=["metrics.accuracy desc"])``
    """
    return list_runs(
        pipeline=pipeline,
        filter=filter,
        order_by=tuple(order_by),
        limit=limit,
        all_namespaces=True,
        reader=reader,
    )


class PipelineHistory:
    """A pipeline's recorded runs: ``runs(...)``, ``latest_run``, ``latest_successful_run``.

    Iterating it yields the runs, newest first, in the current namespace. ``pt.Pipeline`` is
    one of these too; a run's ``parent`` is one without the definition.
    """

    def __init__(self, name: str, *, reader: Reader | None = None) -> None:
        self.name = name
        self._history_reader = reader

    def runs(
        self,
        status: str | Iterable[str] | None = None,
        tags: Iterable[str] = (),
        since: datetime | None = None,
        limit: int | None = None,
        filter: str | None = None,
    ) -> RunList:
        """This pipeline's runs, newest first, in the current namespace."""
        wanted = [status] if isinstance(status, str) else list(status or [])
        try:
            statuses = tuple(RunStatus(s) for s in wanted)
        except ValueError:
            valid = ", ".join(s.value for s in RunStatus)
            raise UsageError(f"unknown status in {wanted}; statuses: {valid}") from None
        return list_runs(
            pipeline=self.name,
            statuses=statuses,
            tags=tuple(tags),
            since=since,
            limit=limit,
            filter=filter,
            reader=resolve_reader(self._history_reader),
        )

    @property
    def latest_run(self) -> Run | None:
        found = self.runs(limit=1)
        return found[0] if found else None

    @property
    def latest_successful_run(self) -> Run | None:
        for run in self.runs(status="completed", limit=50):
            if run.successful:
                return run
        return None

    def __iter__(self) -> Iterator[Run]:
        """The runs newest first, fetched a page at a time as they are consumed: the first
        100 of a million cost what the first 100 of ten do."""
        reader = resolve_reader(self._history_reader)
        scope = namespace()
        before: int | None = None
        size = 100
        while True:
            page = reader.store.list_runs(
                RunQuery(
                    pipeline=self.name,
                    tags=(scope,) if scope else (),
                    limit=size,
                    before_id=before,
                ),
                lazy=True,
            )
            yield from _handles(page, reader)
            if len(page) < size:
                return
            before = page[-1].id
            size = min(size * 4, 1000)

    def __repr__(self) -> str:
        return f"Pipeline('{self.name}')"


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    from html import escape

    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
