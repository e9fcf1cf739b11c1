"""Run, Step and Task handles over the store, addressed by pathspec (Metaflow's shape)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipetrail.core.ids import parse_pathspec
from pipetrail.core.model import ArtifactLink, EventRecord, MetricPoint, RunRecord, TaskRecord
from pipetrail.core.status import RunStatus, TaskStatus
from pipetrail.errors import NotFoundError, UsageError
from pipetrail.storage.metadata.base import MetadataStore, RunQuery

if TYPE_CHECKING:
    from pipetrail.storage.artifacts.cas import ContentAddressedStore
    from pipetrail.storage.artifacts.serializers import SerializerRegistry

__all__ = ["DataArtifacts", "Reader", "Run", "Step", "Task", "list_runs", "set_default_reader"]


class Reader:
    """The stores a client handle reads from; the artifact store is opened on first use.

    Args:
        store: the metadata store.
        artifacts: returns the artifact store and serializers (called at most once).
    """

    def __init__(
        self,
        store: MetadataStore,
        artifacts: Callable[[], tuple[ContentAddressedStore, SerializerRegistry]],
    ) -> None:
        self.store = store
        self._artifacts = artifacts

    @functools.cached_property
    def _opened(self) -> tuple[ContentAddressedStore, SerializerRegistry]:
        return self._artifacts()

    @property
    def cas(self) -> ContentAddressedStore:
        return self._opened[0]

    @property
    def registry(self) -> SerializerRegistry:
        return self._opened[1]

    def load(self, link: ArtifactLink) -> Any:
        """The Python value of a stored artifact (bytes for files)."""
        from pipetrail.storage.artifacts.serializers import load_from_store

        if link.artifact.serializer in ("file", "archive"):
            return self.cas.get_bytes(link.artifact.key)
        if link.artifact.serializer == "external":
            raise UsageError(
                f"artifact {link.name!r} is an external input recorded by hash only "
                f"({link.source_uri}); it was not copied into the store"
            )
        return load_from_store(self.cas, link.artifact.key, link.artifact.serializer, self.registry)


_default_reader: Callable[[], Reader] | None = None


def set_default_reader(factory: Callable[[], Reader]) -> None:
    """Install how handles built without a ``reader`` find the store (the workspace does this)."""
    global _default_reader
    _default_reader = factory


def _reader(reader: Reader | None) -> Reader:
    if reader is not None:
        return reader
    if _default_reader is None:
        raise UsageError("no store configured: import pipetrail (not pipetrail.client) first")
    return _default_reader()


class DataArtifacts:
    """Artifacts by name, loaded on first access: ``run.data.model``."""

    def __init__(self, reader: Reader, links: list[ArtifactLink]) -> None:
        self._reader = reader
        self._links = {link.name: link for link in links}
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self._links:
            raise AttributeError(f"no artifact {name!r}; artifacts: {sorted(self._links)}")
        return self[name]

    def __getitem__(self, name: str) -> Any:
        if name not in self._links:
            raise KeyError(f"no artifact {name!r}; artifacts: {sorted(self._links)}")
        if name not in self._cache:
            self._cache[name] = self._reader.load(self._links[name])
        return self._cache[name]

    def __contains__(self, name: object) -> bool:
        return name in self._links

    def __iter__(self) -> Iterator[str]:
        return iter(self._links)

    def __dir__(self) -> list[str]:
        return sorted(self._links)

    def __repr__(self) -> str:
        return f"<data {sorted(self._links)}>"


class Run:
    """One pipeline run: ``Run("iris/42")`` or ``Run(42)``.

    Raises:
        NotFoundError: no such run, or the pathspec names another pipeline.
    """

    def __init__(self, pathspec: str | int, *, reader: Reader | None = None) -> None:
        self._reader = _reader(reader)
        spec = parse_pathspec(str(pathspec))
        self._record = self._reader.store.get_run(spec.run_id)
        if spec.pipeline is not None and spec.pipeline != self._record.pipeline:
            raise NotFoundError(
                f"run {spec.run_id} belongs to pipeline {self._record.pipeline!r}, "
                f"not {spec.pipeline!r}"
            )
        self._tasks: list[TaskRecord] | None = None
        self._links: list[ArtifactLink] | None = None

    @classmethod
    def _of(cls, record: RunRecord, reader: Reader) -> Run:
        run = cls.__new__(cls)
        run._reader, run._record, run._tasks, run._links = reader, record, None, None
        return run

    def refresh(self) -> Run:
        """Re-read the run from the store (it may still be running)."""
        self._record = self._reader.store.get_run(self._record.id)
        self._tasks = self._links = None
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
        return self._record.status is RunStatus.COMPLETED

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
    def trigger(self) -> str:
        return self._record.trigger

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
    def code(self) -> dict[str, str] | None:
        """The stored source snapshot: file name → text."""
        if self._record.code_key is None:
            return None
        from pipetrail.provenance.code import read_archive

        return read_archive(self._reader.cas.get_bytes(self._record.code_key))

    @property
    def environment(self) -> dict[str, Any] | None:
        if self._record.environment_hash is None:
            return None
        return self._reader.store.get_environment(self._record.environment_hash)

    @property
    def metrics(self) -> dict[str, float]:
        """The latest value of each metric."""
        return self._reader.store.latest_metrics(self._record.id)

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
        """Every named artifact the run's tasks produced (the last attempt of each), by name."""
        last = {t.step: t.id for t in self._task_records()}
        links = [
            link
            for link in self._link_records()
            if link.direction == "output" and link.task_id in set(last.values())
        ]
        return DataArtifacts(self._reader, links)

    def __repr__(self) -> str:
        return f"Run('{self.pathspec}', status={self.status!r})"


class Step:
    """One step of a run, with its task attempts."""

    def __init__(self, run: Run, name: str, tasks: list[TaskRecord]) -> None:
        self.run = run
        self.name = name
        self._tasks = tasks

    @property
    def pathspec(self) -> str:
        return f"{self.run.pathspec}/{self.name}"

    @property
    def tasks(self) -> list[Task]:
        """Every attempt, oldest first."""
        return [Task(self, t) for t in self._tasks]

    @property
    def task(self) -> Task | None:
        """The latest attempt."""
        return Task(self, self._tasks[-1]) if self._tasks else None

    @property
    def status(self) -> str:
        return self._tasks[-1].status.value if self._tasks else TaskStatus.INITIAL.value

    def __repr__(self) -> str:
        return f"Step('{self.pathspec}', status={self.status!r})"


class Task:
    """One attempt of one task (Mage: block run)."""

    def __init__(self, step: Step, record: TaskRecord) -> None:
        self.step = step
        self._record = record

    @property
    def record(self) -> TaskRecord:
        return self._record

    @property
    def id(self) -> int:
        return self._record.id

    @property
    def pathspec(self) -> str:
        return f"{self.step.pathspec}/{self._record.task_index}"

    @property
    def attempt(self) -> int:
        return self._record.attempt

    @property
    def status(self) -> str:
        return self._record.status.value

    @property
    def successful(self) -> bool:
        return self._record.status is TaskStatus.COMPLETED

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
    def resources(self) -> dict[str, Any]:
        return {
            "cpu_time_s": self._record.cpu_time_s,
            "peak_memory_bytes": self._record.peak_memory_bytes,
            "gpu_peak_memory_bytes": self._record.gpu_peak_memory_bytes,
            "host": self._record.host,
            "pid": self._record.pid,
        }

    @property
    def exception(self) -> str | None:
        if self._record.exception_type is None:
            return None
        return f"{self._record.exception_type}: {self._record.exception_message}"

    @property
    def traceback(self) -> str | None:
        return self._record.traceback

    def _logs(self) -> dict[str, str]:
        return self.step.run._reader.store.logs(self._record.id)

    @property
    def stdout(self) -> str:
        return self._logs().get("stdout", "")

    @property
    def stderr(self) -> str:
        return self._logs().get("stderr", "")

    def _links(self, direction: str) -> list[ArtifactLink]:
        return [
            link
            for link in self.step.run._link_records()
            if link.task_id == self._record.id and link.direction == direction
        ]

    @property
    def inputs(self) -> list[ArtifactLink]:
        return self._links("input")

    @property
    def outputs(self) -> list[ArtifactLink]:
        return self._links("output")

    @property
    def data(self) -> DataArtifacts:
        return DataArtifacts(self.step.run._reader, self.outputs)

    def __repr__(self) -> str:
        return f"Task('{self.pathspec}', attempt={self.attempt}, status={self.status!r})"


def list_runs(
    *,
    pipeline: str | None = None,
    statuses: tuple[RunStatus, ...] = (),
    tags: tuple[str, ...] = (),
    since: datetime | None = None,
    limit: int | None = 100,
    reader: Reader | None = None,
) -> list[Run]:
    """Runs newest first, filtered."""
    r = _reader(reader)
    records = r.store.list_runs(
        RunQuery(pipeline=pipeline, statuses=statuses, tags=tags, since=since, limit=limit)
    )
    return [Run._of(record, r) for record in records]
