"""The model registry's rules over its rows: what may be registered, promoted and approved.

The store numbers versions, keeps aliases and requests and writes the log (``RegistryStore``);
here are the checks that need more than rows: which output of which task a registration
means, that only a completed run's model is promoted, that a requester does not approve their
own request. The CLI, REST and ``pt.register_model`` all come through here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pipetrail.core.ids import NAME_PATTERN, parse_pathspec
from pipetrail.core.model import ArtifactLink, RunRecord, TaskRecord
from pipetrail.core.status import RunStatus
from pipetrail.errors import NotFoundError, UsageError
from pipetrail.storage.metadata.base import MetadataStore
from pipetrail.storage.metadata.governance import (
    ModelVersionRecord,
    NewModelVersion,
    PromotionRequest,
)

__all__ = [
    "ModelRef",
    "Promotion",
    "check_alias",
    "check_model_name",
    "decide",
    "find_output",
    "guarded",
    "parse_model_ref",
    "promote",
    "register",
    "remove_alias",
    "resolve",
    "set_policy",
]

#: The longest model and alias names the store keeps.
MAX_NAME, MAX_ALIAS = 200, 100
#: Aliases that would read as a version or as the latest one in ``name@alias``.
_RESERVED = re.compile(r"^(latest|v?\d+)$", re.IGNORECASE)
_MODEL = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")


def check_model_name(name: str) -> str:
    """``name`` if it can name a model (letters, digits, ``_``, ``-``, ``.``), else UsageError."""
    if not isinstance(name, str) or len(name) > MAX_NAME or not _MODEL.match(name):
        raise UsageError(
            f"invalid model name {name!r}: use letters, digits, '_', '-' or '.', starting with a "
            f"letter, at most {MAX_NAME} characters"
        )
    return name


def check_alias(alias: str) -> str:
    """``alias`` if it can name an alias, else UsageError (``latest`` and ``3``/``v3`` are taken)."""
    if not isinstance(alias, str) or len(alias) > MAX_ALIAS or not NAME_PATTERN.match(alias):
        raise UsageError(
            f"invalid alias {alias!r}: use letters, digits, '_' or '-', starting with a letter, "
            f"at most {MAX_ALIAS} characters"
        )
    if _RESERVED.match(alias):
        raise UsageError(f"alias {alias!r} is reserved: it reads as a version; pick another")
    return alias


@dataclass(frozen=True)
class ModelRef:
    """What ``churn``, ``churn/3`` or ``churn@production`` names."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name if self.version is None else f"{self.name}/{self.version}"


def parse_model_ref(text: str) -> ModelRef:
    """Parse ``NAME`` (its latest version), ``NAME/VERSION`` or ``NAME@ALIAS``.

    Raises:
        UsageError: naming the text and the shapes it may take.
    """
    shapes = "expected NAME, NAME/VERSION or NAME@ALIAS, e.g. 'churn@production'"
    if not isinstance(text, str):
        raise UsageError(f"invalid model reference {text!r}: {shapes}")
    name, at, alias = text.strip().partition("@")
    name, slash, version = name.partition("/")
    try:
        check_model_name(name)
        if at and slash:
            raise UsageError("both a version and an alias")
        if at:
            return ModelRef(name, alias=check_alias(alias))
        if slash:
            if not version.isdigit() or int(version) < 1 or len(version) > 18:
                raise UsageError(f"version {version!r} is not a number from 1")
            return ModelRef(name, version=int(version))
    except UsageError as exc:
        raise UsageError(f"invalid model reference {text!r} ({exc}): {shapes}") from None
    return ModelRef(name)


def resolve(store: MetadataStore, ref: ModelRef | str) -> ModelVersionRecord:
    """The version ``ref`` names: by number, by alias, or the latest.

    Raises:
        NotFoundError: no such model, version or alias (naming the aliases there are).
    """
    ref = parse_model_ref(ref) if isinstance(ref, str) else ref
    if ref.version is not None:
        return store.get_model_version(ref.name, ref.version)
    model = store.get_model(ref.name)
    if ref.alias is None:
        if model.latest_version is None:
            raise NotFoundError(f"model {ref.name!r} has no versions")
        return store.get_model_version(ref.name, model.latest_version)
    if ref.alias not in model.aliases:
        there = ", ".join(sorted(model.aliases)) or "none"
        raise NotFoundError(f"model {ref.name!r} has no alias {ref.alias!r}; its aliases: {there}")
    return store.get_model_version(ref.name, model.aliases[ref.alias])


def find_output(
    store: MetadataStore, run_or_task: str | int, artifact: str, step: str | None = None
) -> tuple[RunRecord, ArtifactLink]:
    """The run and the output link that ``artifact`` of ``run_or_task`` is.

    ``run_or_task`` is a run (``churn/12``, ``12``), a step (``churn/12/train``) or a task
    (``churn/12/train/0``); among a run's tasks only the last attempt of each counts.

    Raises:
        NotFoundError: no such run, or no output of that name (naming the outputs there are).
        UsageError: several steps or tasks output that name (naming them and how to choose).
    """
    spec = parse_pathspec(str(run_or_task))
    run = store.get_run(spec.run_id)
    if spec.pipeline is not None and spec.pipeline != run.pipeline:
        raise NotFoundError(f"run {spec.run_id} is {run.pathspec}, not a run of {spec.pipeline!r}")
    if spec.step is not None and step is not None and spec.step != step:
        raise UsageError(f"{run_or_task!r} names step {spec.step!r}, but --step is {step!r}")
    step = spec.step or step
    latest: dict[tuple[str, int], TaskRecord] = {}
    for task in store.tasks(run.id):
        latest[(task.step, task.task_index)] = task
    tasks = {t.id: t for t in latest.values()}
    outputs = [
        link for link in store.links(run.id) if link.direction == "output" and link.task_id in tasks
    ]
    found = [
        link
        for link in outputs
        if link.name == artifact
        and (step is None or tasks[link.task_id].step == step)
        and (spec.task is None or tasks[link.task_id].task_index == spec.task)
    ]
    where = run.pathspec + (f"/{step}" if step else "")
    if not found:
        names = sorted(
            {link.name for link in outputs if step is None or tasks[link.task_id].step == step}
        )
        raise NotFoundError(
            f"{where} has no output artifact {artifact!r}; its outputs: {', '.join(names) or 'none'}"
        )
    steps = sorted({tasks[link.task_id].step for link in found})
    if len(steps) > 1:
        raise UsageError(
            f"artifact {artifact!r} is an output of steps {', '.join(steps)} of {run.pathspec}; "
            "name one with --step"
        )
    if len(found) > 1:
        paths = ", ".join(f"{where}/{tasks[k.task_id].task_index}" for k in found)
        raise UsageError(
            f"artifact {artifact!r} is an output of {len(found)} tasks of {where} ({paths}); "
            "give the task's address instead of the run's"
        )
    if found[0].artifact.serializer == "external":
        raise UsageError(f"artifact {artifact!r} of {where} was recorded by hash only")
    return run, found[0]


def register(
    store: MetadataStore,
    name: str,
    run_or_task: str | int,
    *,
    artifact: str,
    actor: str,
    step: str | None = None,
    description: str | None = None,
) -> ModelVersionRecord:
    """Register ``artifact`` of ``run_or_task`` as the next version of model ``name``.

    Raises:
        NotFoundError, UsageError: as :func:`find_output`, or a bad model name; nothing is
            written then.
    """
    check_model_name(name)
    _, link = find_output(store, run_or_task, artifact, step)
    return store.register_model_version(
        NewModelVersion(
            model=name,
            run_id=link.run_id,
            task_id=link.task_id,
            artifact_name=link.name,
            artifact_key=link.artifact.key,
            actor=actor,
            description=description,
        )
    )


def _completed_run(store: MetadataStore, version: ModelVersionRecord) -> None:
    run = store.get_run(version.run_id)
    if run.status is not RunStatus.COMPLETED:
        raise UsageError(
            f"{version.ref} comes from run {run.pathspec}, which is {run.status.value}, not "
            "completed: only a completed run's model can be promoted"
        )


@dataclass(frozen=True)
class Promotion:
    """What a promotion did: moved the alias at once (``request`` is None) or opened a request."""

    version: ModelVersionRecord
    alias: str
    previous: int | None
    request: PromotionRequest | None

    @property
    def moved(self) -> bool:
        return self.request is None


def promote(
    store: MetadataStore, name: str, version: int, alias: str, *, actor: str, reason: str | None
) -> Promotion:
    """Point ``alias`` at ``version``: at once, or through a request when a policy needs approvers.

    Raises:
        NotFoundError: no such model or version.
        UsageError: a bad alias, a run that did not complete, the alias points there already,
            or the same request is pending.
    """
    check_alias(alias)
    target = store.get_model_version(name, version)
    _completed_run(store, target)
    model = store.get_model(name)
    previous = model.aliases.get(alias)
    if previous == version:
        raise UsageError(f"{name}@{alias} points at version {version} already")
    required = model.policies.get(alias, 0)
    if required > 0:
        request = store.open_promotion(name, version, alias, reason, actor, required)
        return Promotion(target, alias, previous, request)
    store.move_alias(name, alias, version, actor, reason)
    return Promotion(store.get_model_version(name, version), alias, previous, None)


def remove_alias(
    store: MetadataStore, name: str, alias: str, *, actor: str, reason: str | None
) -> int:
    """Remove ``alias`` of ``name`` (the versions stay); the version it pointed at.

    An alias guarded by a policy is an admin's to remove: callers check the role (the CLI
    with :func:`guarded`), as for setting the policy.

    Raises:
        NotFoundError: no such model or alias.
    """
    model = store.get_model(name)
    if alias not in model.aliases:
        there = ", ".join(sorted(model.aliases)) or "none"
        raise NotFoundError(f"model {name!r} has no alias {alias!r}; its aliases: {there}")
    store.move_alias(name, alias, None, actor, reason)
    return model.aliases[alias]


def guarded(store: MetadataStore, name: str, alias: str) -> bool:
    """Whether moving or removing ``alias`` of ``name`` needs approvals (it has a policy)."""
    return store.get_model(name).policies.get(alias, 0) > 0


def set_policy(store: MetadataStore, name: str, alias: str, approvers: int, *, actor: str) -> None:
    """Require ``approvers`` approvals to move ``alias`` of ``name`` (0: no approval needed).

    Raises:
        NotFoundError: no such model.
        UsageError: a bad alias or a negative count.
    """
    check_alias(alias)
    if approvers < 0 or approvers > 100:
        raise UsageError(f"--approvers must be from 0 to 100, got {approvers}")
    store.set_model_policy(name, alias, approvers, actor)


def decide(
    store: MetadataStore,
    request_id: int,
    decision: Literal["approved", "rejected", "withdrawn"],
    *,
    actor: str,
    comment: str | None,
) -> PromotionRequest:
    """Approve, reject or withdraw request ``request_id`` as ``actor``.

    Approvers decide on others' requests only; a requester withdraws their own. An approval
    of a version whose run is no longer completed (it cannot become so again) is refused.

    Raises:
        NotFoundError: no such request.
        UsageError: the request is closed, ``actor`` requested it (approve, reject) or did not
            (withdraw), or decided on it before; nothing is written then.
    """
    request = store.get_promotion(request_id)
    if request.status != "pending":
        raise UsageError(f"request {request_id} is {request.status} already; nothing to decide")
    verb = {"approved": "approve", "rejected": "reject", "withdrawn": "withdraw"}[decision]
    if decision == "withdrawn":
        if actor != request.requested_by:
            raise UsageError(
                f"only {request.requested_by!r}, who requested it, may withdraw request "
                f"{request_id}; {actor!r} may reject it"
            )
    elif actor == request.requested_by:
        raise UsageError(
            f"{actor!r} requested promotion {request_id} and may not {verb} it: another approver "
            f"must decide (withdraw it with: pipetrail models withdraw {request_id})"
        )
    if decision == "approved":
        _completed_run(store, store.get_model_version(request.model, request.version))
    return store.decide_promotion(request_id, decision, actor, comment)
