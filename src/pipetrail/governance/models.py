"""Registered models from Python: ``pt.register_model``, ``pt.load_model``, ``pt.ModelVersion``.

The same rules as the CLI and REST (``governance.registry``). A model loads through the
client's stores, with its stored bytes checked against the version's content hash first.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from pipetrail.client.reader import Reader, resolve_reader
from pipetrail.core.model import ArtifactLink
from pipetrail.errors import NotFoundError
from pipetrail.governance import registry
from pipetrail.governance.identity import acting_user
from pipetrail.storage.metadata.governance import ModelVersionRecord, PromotionRequest

if TYPE_CHECKING:
    from pipetrail.client import Artifact, Run, Task

__all__ = ["ModelVersion", "load_model", "register_model"]


class _Stores(Protocol):
    """A workspace: what ``pt.run(..., workspace=ws)`` takes, reduced to what is read here."""

    def reader(self) -> Reader: ...


def _reader(workspace: _Stores | None) -> Reader:
    return workspace.reader() if workspace is not None else resolve_reader(None)


class ModelVersion:
    """One registered version of a model: ``ModelVersion("churn@production")``.

    ``ref`` is ``NAME`` (the latest version), ``NAME/VERSION`` or ``NAME@ALIAS``; an alias is
    resolved when the handle is made, so the handle keeps pointing at that version.

    Raises:
        NotFoundError: no such model, version or alias.
        UsageError: ``ref`` is not one of those shapes.
    """

    def __init__(self, ref: str, *, workspace: _Stores | None = None) -> None:
        self._reader = _reader(workspace)
        self._record = registry.resolve(self._reader.store, ref)

    @classmethod
    def _of(cls, record: ModelVersionRecord, reader: Reader) -> ModelVersion:
        handle = cls.__new__(cls)
        handle._reader, handle._record = reader, record
        return handle

    @property
    def record(self) -> ModelVersionRecord:
        return self._record

    @property
    def name(self) -> str:
        return self._record.model

    @property
    def version(self) -> int:
        return self._record.version

    @property
    def ref(self) -> str:
        """``name/version``: the address of exactly this version."""
        return self._record.ref

    @property
    def aliases(self) -> tuple[str, ...]:
        """The aliases that pointed here when the handle was made."""
        return self._record.aliases

    @property
    def description(self) -> str | None:
        return self._record.description

    @property
    def created_at(self) -> datetime:
        return self._record.created_at

    @property
    def created_by(self) -> str:
        return self._record.created_by

    @property
    def hash(self) -> str:
        """The content hash of the model's artifact (its identity in the artifact store)."""
        return self._record.artifact_key

    @property
    def run(self) -> Run:
        """The run that produced it."""
        from pipetrail.client import Run

        return Run(self._record.run_id, reader=self._reader)

    @property
    def task(self) -> Task:
        """The task (attempt) whose output it is."""
        task = self.run._task_handle(self._record.task_id)
        if task is None:
            raise NotFoundError(f"{self.ref}: task {self._record.task_id} is not in the store")
        return task

    @property
    def metrics(self) -> dict[str, float]:
        """The latest value of each metric of the producing run."""
        return self._reader.store.latest_metrics(self._record.run_id)

    def _link(self) -> ArtifactLink:
        for link in self._reader.store.links_of_tasks([self._record.task_id]):
            if (
                link.direction == "output"
                and link.name == self._record.artifact_name
                and link.artifact.key == self._record.artifact_key
            ):
                return link
        raise NotFoundError(
            f"{self.ref}: artifact {self._record.artifact_name!r} ({self.hash[:12]}) is no "
            f"longer recorded for task {self._record.task_id}"
        )

    @property
    def artifact(self) -> Artifact:
        """The model's artifact handle (name, hash, size, type; ``data`` loads it)."""
        from pipetrail.client import Artifact

        return Artifact(self._link(), self._reader, lambda: self.task)

    def load(self) -> Any:
        """The model's value, loaded from the artifact store once its bytes are checked
        against the version's content hash (a model is never loaded from altered bytes).

        Raises:
            IntegrityError: the stored bytes do not hash to the version's key.
        """
        from pipetrail.storage.artifacts.serializers import load_from_store

        link = self._link()
        if link.artifact.serializer in ("file", "archive"):
            return self._reader.cas.get_bytes(link.artifact.key, verify=True)
        return load_from_store(
            self._reader.cas,
            link.artifact.key,
            link.artifact.serializer,
            self._reader.registry,
            verify=True,
        )

    def promote(self, alias: str, *, reason: str | None = None) -> PromotionRequest | None:
        """Point ``alias`` at this version, as ``pipetrail models promote`` does.

        Returns None when the alias moved at once (it has no policy), else the request that
        approvers decide on (``pipetrail models approve ID``).

        Raises:
            UsageError: the producing run did not complete, a bad alias, or it points here.
        """
        store = self._reader.store
        actor = acting_user(store, os.environ.get("PIPETRAIL_TOKEN"))
        done = registry.promote(store, self.name, self.version, alias, actor=actor, reason=reason)
        self._record = store.get_model_version(self.name, self.version)
        return done.request

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelVersion) and other._record.id == self._record.id

    def __hash__(self) -> int:
        return hash(self._record.id)

    def __repr__(self) -> str:
        aliases = f", aliases={list(self.aliases)}" if self.aliases else ""
        return f"ModelVersion({self.ref!r}, run={self._record.run_id}{aliases})"


def register_model(
    name: str,
    run_or_task: Run | Task | str | int,
    artifact: str = "model",
    *,
    step: str | None = None,
    description: str | None = None,
    workspace: _Stores | None = None,
) -> ModelVersion:
    """Register ``artifact`` of a run (or of one task) as the next version of model ``name``.

    Args:
        name: the model; made at its first version.
        run_or_task: a ``Run`` or ``Task`` handle, or a pathspec (``churn/12``,
            ``churn/12/train/0``) or run id.
        artifact: the name of the output artifact.
        step: the step that outputs it, needed only when several steps output that name.
        description: what this version is.
        workspace: the stores to record into; by default those ``run_or_task`` was read from
            (a handle), else the configured ones.

    The acting user is the owner of ``PIPETRAIL_TOKEN`` when the store has named tokens,
    else the local user.

    Raises:
        NotFoundError: no such run or output artifact (naming the outputs there are).
        UsageError: a bad name, or several steps or tasks output ``artifact``.
    """
    if isinstance(run_or_task, (str, int)):
        reader, address = _reader(workspace), run_or_task
    else:
        # A handle records into the stores it was read from, unless told otherwise.
        from pipetrail.client import Run

        run = run_or_task if isinstance(run_or_task, Run) else run_or_task.step.run
        reader = workspace.reader() if workspace is not None else run._reader
        address = run_or_task.pathspec
    store = reader.store
    record = registry.register(
        store,
        name,
        address,
        artifact=artifact,
        actor=acting_user(store, os.environ.get("PIPETRAIL_TOKEN")),
        step=step,
        description=description,
    )
    return ModelVersion._of(record, reader)


def load_model(ref: str, *, workspace: _Stores | None = None) -> Any:
    """The value of the model version ``ref`` names: ``churn``, ``churn/3`` or ``churn@production``.

    Raises:
        NotFoundError: no such model, version or alias.
        IntegrityError: the stored bytes do not match the version's content hash.
    """
    return ModelVersion(ref, workspace=workspace).load()
