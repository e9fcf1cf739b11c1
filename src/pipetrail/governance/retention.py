"""Retention: which runs a rule selects, which runs may never be deleted, and deleting runs.

A run is deleted with everything recorded under it (parameters, tags, tasks, events, metrics,
logs, artifact links) in one transaction per run, and a ``run_deleted`` governance event that
outlives it. Several runs are deleted one by one and reported per run: one refused run does
not keep the others. A run is refused, with the reason, when it

- has not ended (``initial``, ``running``): cancel it first;
- produced a registered model version, or its outputs are the artifact a version (and so an
  alias or a pending promotion of it) is bound to;
- is upstream of a model version's run (that run's tasks consumed its outputs, directly or
  through other runs): the version's lineage, which its audit report shows;
- is tagged ``keep`` (``pipetrail runs tag RUN --add keep``; ``--remove keep`` lifts it);
- is the origin (retry, resume) or the upstream of a run that has not ended yet.

Runs that point at a deleted run (a retry's origin, an ``after`` run's upstream) keep their own
record; the pointer becomes empty and a ``note`` event on them says which run was deleted.
The artifacts the deleted runs used stay until ``pipetrail gc`` (``governance.gc``) finds that
nothing references them any more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pipetrail.core.status import RUN_TERMINAL, RunStatus
from pipetrail.errors import ConfigError, DefinitionError
from pipetrail.storage.metadata.base import MetadataStore, RunQuery
from pipetrail.storage.metadata.retention import KEEP_TAG, DeletedRun, RunFacts

__all__ = [
    "KEEP_TAG",
    "PASS_LIMIT",
    "RETENTION_ACTOR",
    "DeletionReport",
    "RetentionRule",
    "apply_rules",
    "delete_runs",
    "parse_rules",
    "refusal",
    "retention_job",
    "select_runs",
]

#: What a rule's actor is in the record when the scheduler applies it.
RETENTION_ACTOR = "retention"
#: Most runs one rule deletes in one scheduler pass.
PASS_LIMIT = 1000
_RULE_FIELDS = ("pipeline", "older_than", "status", "keep_last")


@dataclass(frozen=True)
class RetentionRule:
    """Runs to delete: created more than ``older_than_s`` ago, of ``pipeline`` (any when
    None), in one of ``statuses`` (any ended status when empty), except the newest
    ``keep_last`` of each pipeline that the rule would otherwise select."""

    older_than_s: float
    pipeline: str | None = None
    statuses: tuple[RunStatus, ...] = ()
    keep_last: int = 0

    def describe(self) -> str:
        parts = [f"older than {_duration(self.older_than_s)}"]
        if self.pipeline is not None:
            parts.insert(0, f"pipeline {self.pipeline!r}")
        if self.statuses:
            parts.append("status " + "/".join(s.value for s in self.statuses))
        if self.keep_last:
            parts.append(f"keeping the newest {self.keep_last}")
        return ", ".join(parts)


@dataclass(frozen=True)
class DeletionReport:
    """Per run, what ``delete_runs`` did (or, with ``dry_run``, would do)."""

    outcomes: tuple[DeletedRun, ...]
    dry_run: bool = False

    @property
    def deleted(self) -> list[DeletedRun]:
        return [o for o in self.outcomes if o.refused is None]

    @property
    def refused(self) -> list[DeletedRun]:
        return [o for o in self.outcomes if o.refused is not None]


def refusal(facts: RunFacts, lineage: Mapping[int, Sequence[str]] | None = None) -> str | None:
    """Why the run may not be deleted, or None when it may.

    ``lineage`` maps runs upstream of a model version's run to those versions
    (``MetadataStore.model_lineage``): their record is the version's lineage, which an audit
    of the version reads.
    """
    where = f"run {facts.pathspec}"
    if RunStatus(facts.status) not in RUN_TERMINAL:
        return (
            f"{where} is still {facts.status}; wait for it to end or cancel it first: "
            f"pipetrail runs cancel {facts.run_id}"
        )
    if facts.versions:
        uses = []
        for v in facts.versions:
            extra = [f"alias {a}" for a in v.aliases]
            extra += [f"pending promotion to {a}" for a in v.pending]
            uses.append(v.ref + (f" ({', '.join(extra)})" if extra else ""))
        return (
            f"{where} produced registered model version {', '.join(uses)}; "
            "a run a model version comes from is kept"
        )
    upstream_of = (lineage or {}).get(facts.run_id)
    if upstream_of:
        return (
            f"{where} is upstream of registered model version {', '.join(upstream_of)}: "
            "a run whose outputs a model version's run consumed is part of its lineage"
        )
    if KEEP_TAG in facts.tags:
        return (
            f"{where} is tagged {KEEP_TAG!r}; to delete it, remove the tag first: "
            f"pipetrail runs tag {facts.run_id} --remove {KEEP_TAG}"
        )
    if facts.unfinished_dependents:
        ids = ", ".join(str(i) for i in facts.unfinished_dependents)
        return f"{where} is the origin or upstream of run {ids}, which has not ended yet"
    return None


def delete_runs(
    store: MetadataStore,
    run_ids: Iterable[int],
    *,
    actor: str,
    dry_run: bool = False,
    message: str | None = None,
) -> DeletionReport:
    """Delete each run (oldest first), each in its own transaction, or refuse it with the
    reason (:func:`refusal`). With ``dry_run`` nothing is written.

    Raises:
        NotFoundError: a run id that is not in the store (before anything is deleted).
    """
    ids = sorted(dict.fromkeys(run_ids))
    for run_id in ids:
        store.get_run(run_id)  # every id is checked before the first deletion
    lineage = store.model_lineage() if ids else {}

    def refuse(facts: RunFacts) -> str | None:
        return refusal(facts, lineage)

    outcomes = [
        store.delete_run(run_id, actor=actor, refuse=refuse, dry_run=dry_run, message=message)
        for run_id in ids
    ]
    return DeletionReport(tuple(outcomes), dry_run=dry_run)


def select_runs(store: MetadataStore, rule: RetentionRule, now: datetime) -> list[int]:
    """The ids of the runs ``rule`` selects at ``now``, oldest first."""
    statuses = rule.statuses or tuple(RUN_TERMINAL)
    query = RunQuery(
        pipeline=rule.pipeline,
        statuses=statuses,
        until=now - timedelta(seconds=rule.older_than_s),
        limit=None,
    )
    runs = store.list_runs(query)
    kept: set[int] = set()
    if rule.keep_last:
        for name in sorted({r.pipeline for r in runs}):
            newest = store.list_runs(
                RunQuery(pipeline=name, statuses=statuses, limit=rule.keep_last)
            )
            kept.update(r.id for r in newest)
    return sorted(r.id for r in runs if r.id not in kept)


def apply_rules(
    store: MetadataStore,
    rules: Sequence[RetentionRule],
    now: datetime,
    *,
    actor: str = RETENTION_ACTOR,
    dry_run: bool = False,
    limit: int | None = None,
) -> DeletionReport:
    """Delete the runs each rule selects (with the same refusals as by hand), at most
    ``limit`` per rule (the oldest first); one report."""
    outcomes: list[DeletedRun] = []
    seen: set[int] = set()
    for rule in rules:
        ids = [i for i in select_runs(store, rule, now) if i not in seen][:limit]
        seen.update(ids)
        message = f"retention rule: {rule.describe()}"
        outcomes.extend(
            delete_runs(store, ids, actor=actor, dry_run=dry_run, message=message).outcomes
        )
    return DeletionReport(tuple(outcomes), dry_run=dry_run)


def parse_rules(raw: Any, source: str) -> tuple[RetentionRule, ...]:
    """Rules from settings: a list of ``{pipeline?, older_than, status?, keep_last?}``.

    Raises:
        ConfigError: one line naming ``source``, the entry (from 1) and the field.
    """
    if not isinstance(raw, list):
        raise ConfigError(
            f"{source} must be a list of rules such as "
            f'[{{"older_than": "90d", "status": ["failed"]}}], got {type(raw).__name__}'
        )
    return tuple(_rule(entry, f"{source}: rule {i}") for i, entry in enumerate(raw, start=1))


def _rule(entry: Any, where: str) -> RetentionRule:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a table/object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(_RULE_FIELDS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {unknown[0]!r}; a rule has {', '.join(_RULE_FIELDS)}"
        )
    pipeline = entry.get("pipeline")
    if pipeline is not None and (not isinstance(pipeline, str) or not pipeline.strip()):
        raise ConfigError(f"{where}: pipeline must be a pipeline's name, got {pipeline!r}")
    if "older_than" not in entry:
        raise ConfigError(f"{where}: older_than is required (a duration such as '90d')")
    older = _older_than(entry["older_than"], where)
    statuses = _statuses(entry.get("status", []), where)
    keep_last = entry.get("keep_last", 0)
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0:
        raise ConfigError(f"{where}: keep_last must be a whole number >= 0, got {keep_last!r}")
    return RetentionRule(older, pipeline, statuses, keep_last)


def _older_than(value: Any, where: str) -> float:
    from pipetrail.dsl import parse_duration

    try:
        seconds = parse_duration(value, what=f"{where}: older_than")
    except DefinitionError as exc:
        raise ConfigError(str(exc)) from None
    if seconds is None or seconds <= 0:
        raise ConfigError(f"{where}: older_than must be a positive duration, got {value!r}")
    return seconds


def _statuses(value: Any, where: str) -> tuple[RunStatus, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ConfigError(f"{where}: status must be a list of run statuses, got {value!r}")
    ended = [s.value for s in RunStatus if s in RUN_TERMINAL]
    result = []
    for item in items:
        if item not in ended:
            raise ConfigError(
                f"{where}: status {item!r} is not a status of an ended run; use {', '.join(ended)}"
            )
        result.append(RunStatus(item))
    return tuple(dict.fromkeys(result))


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def retention_job(
    store: MetadataStore, rules: Sequence[Mapping[str, Any]]
) -> Callable[[datetime], str | None]:
    """What the scheduler calls to apply the ``retention`` setting's rules at a time: it
    deletes as actor ``retention``, at most :data:`PASS_LIMIT` runs per rule (a backlog goes
    over several passes, so a pass never holds up the schedules for long), and returns a line
    saying what it did (None: nothing)."""
    parsed = parse_rules(list(rules), "retention")

    def job(now: datetime) -> str | None:
        report = apply_rules(store, parsed, now, limit=PASS_LIMIT)
        if not report.deleted:
            return None
        shown = ", ".join(o.facts.pathspec for o in report.deleted[:10])
        more = len(report.deleted) - 10
        line = f"retention: deleted {len(report.deleted)} runs ({shown}{', ...' * (more > 0)})"
        if report.refused:
            line += f"; {len(report.refused)} refused, e.g. {report.refused[0].refused}"
        return line

    return job
