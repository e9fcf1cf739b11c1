"""Triggers from Python: ``pt.create_trigger``, ``pt.Trigger``, ``pt.triggers``, ``pt.apply_triggers``.

The same vocabulary as the CLI, the YAML files and REST (``scheduling.spec``), the same checks
(``scheduling.triggers``) and the same store calls (``scheduling.service``). Heavy modules are
imported inside the functions, so ``import pipetrail`` stays light.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipetrail.errors import UsageError

if TYPE_CHECKING:
    from pipetrail.client import Run
    from pipetrail.scheduling.service import ApplyReport, TriggerOverview, TriggerService
    from pipetrail.storage.metadata.base import (
        AlertRecord,
        TickRecord,
        TriggerDefinition,
        TriggerRecord,
    )
    from pipetrail.workspace import Workspace

__all__ = [
    "SentAlert",
    "Tick",
    "Trigger",
    "apply_triggers",
    "checked_definition",
    "create_trigger",
    "load_trigger_file",
    "triggers",
]

#: The longest trigger name the store keeps.
MAX_NAME = 200


def _iso(at: datetime | None) -> str | None:
    from datetime import UTC

    return at.astimezone(UTC).isoformat() if at is not None else None


@dataclass(frozen=True)
class Tick:
    """A tick a scheduler (or a fire by hand) claimed, and what became of it.

    ``decision`` is ``run`` (``run`` is its pathspec, ``status`` the run's status), ``skipped``
    (``skip_reason`` says why) or ``pending`` (claimed, its run not started yet). ``note`` is
    the scheduler's remark, such as a catch-up or a backfill.
    """

    scheduled_at: datetime
    claimed_at: datetime
    run: str | None
    status: str | None
    skip_reason: str | None
    note: str | None
    launches: int

    @property
    def decision(self) -> str:
        if self.run is not None:
            return "run"
        return "skipped" if self.skip_reason is not None else "pending"

    @classmethod
    def of(cls, tick: TickRecord, overview: TriggerOverview) -> Tick:
        run = overview.runs.get(tick.run_id) if tick.run_id is not None else None
        return cls(
            scheduled_at=tick.scheduled_at,
            claimed_at=tick.claimed_at,
            run=run.pathspec if run is not None else None,
            status=run.status.value if run is not None else None,
            skip_reason=tick.skip_reason,
            note=tick.note,
            launches=tick.launches,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheduled_at": _iso(self.scheduled_at),
            "claimed_at": _iso(self.claimed_at),
            "decision": self.decision,
            "run": self.run,
            "status": self.status,
            "skip_reason": self.skip_reason,
            "note": self.note,
            "launches": self.launches,
        }


@dataclass(frozen=True)
class SentAlert:
    """An alert about a trigger's run and how its delivery went (``state``: delivered, failed
    (given up; ``last_error`` says why) or pending (to be retried))."""

    event: str
    notifier: str
    state: str
    attempts: int
    created_at: datetime
    delivered_at: datetime | None
    last_error: str | None
    run: str | None

    @classmethod
    def of(cls, alert: AlertRecord) -> SentAlert:
        run = alert.payload.get("run") if isinstance(alert.payload, Mapping) else None
        return cls(
            event=alert.event,
            notifier=alert.notifier,
            state=alert.state,
            attempts=alert.attempts,
            created_at=alert.created_at,
            delivered_at=alert.delivered_at,
            last_error=alert.last_error,
            run=run if isinstance(run, str) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "notifier": self.notifier,
            "state": self.state,
            "attempts": self.attempts,
            "created_at": _iso(self.created_at),
            "delivered_at": _iso(self.delivered_at),
            "last_error": self.last_error,
            "run": self.run,
        }


def checked_definition(
    fields: Mapping[str, Any],
    *,
    base_dir: Path | None = None,
    where: str = "trigger",
    from_text: bool = False,
) -> TriggerDefinition:
    """A trigger written in the common vocabulary, read and checked against its pipeline and the
    clock, before anything is stored.

    ``from_text``: ``params`` are command-line text (``-p lr=0.1``), coerced to their types.

    Raises:
        UsageError: one line naming the field or value and what is expected.
    """
    from datetime import UTC

    from pipetrail.scheduling.spec import check_pipeline, definition_from
    from pipetrail.scheduling.triggers import validate

    name = fields.get("name")
    if isinstance(name, str) and len(name.strip()) > MAX_NAME:
        raise UsageError(
            f"{where}: trigger name {name[:40]!r}… is {len(name.strip())} characters long; "
            f"use at most {MAX_NAME}"
        )
    definition = definition_from(fields, base_dir=base_dir, where=where)
    source = "" if where == "trigger" else f"{where}: "
    try:
        definition = check_pipeline(definition, from_text=from_text)
    except UsageError as exc:
        raise UsageError(f"{source}trigger {definition.name!r}: {exc}") from None
    try:
        # Checked now; returned as written: storing validates again, and an interval without
        # a start keeps its stored anchor there (applying the same file twice changes nothing).
        validate(definition, now=datetime.now(UTC))
    except UsageError as exc:
        raise UsageError(f"{source}{exc}") from None  # it names the trigger
    return definition


def load_trigger_file(path: str | Path) -> list[TriggerDefinition]:
    """The triggers a YAML file declares (``triggers:``, a list of mappings in the common
    vocabulary), every one checked; relative pipeline paths are taken from the file's folder.

    Raises:
        UsageError: the file is missing or not YAML, not a ``triggers:`` list, or a trigger in
            it is invalid: one line naming the file, the trigger and the field.
    """
    import yaml

    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"triggers file {str(file)!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"triggers file {str(file)!r} cannot be read: {exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{file}: not valid YAML{at}: {problem}") from None
    if not isinstance(document, Mapping) or "triggers" not in document:
        raise UsageError(
            f"{file}: expected a mapping with a 'triggers:' list at the top, got "
            f"{type(document).__name__ if document is not None else 'an empty file'}"
        )
    other = sorted(str(k) for k in document if k != "triggers")
    if other:
        raise UsageError(f"{file}: unknown top-level key {other[0]!r}; only 'triggers' is read")
    items = document["triggers"] or []
    if not isinstance(items, list):
        raise UsageError(f"{file}: 'triggers' must be a list of triggers, got {items!r}")
    definitions = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, Mapping):
            raise UsageError(f"{file}: trigger #{number} must be a mapping of fields, got {item!r}")
        # YAML 1.1 reads a bare ``on:`` key as the boolean true: it means the field "on".
        item = {("on" if key is True else key): value for key, value in item.items()}
        named = isinstance(item.get("name"), str) and bool(item["name"].strip())
        where = str(file) if named else f"{file}: trigger #{number}"
        definitions.append(checked_definition(item, base_dir=file.parent, where=where))
    return definitions


def _target(pipeline: Any) -> str:
    """``FILE[:PIPELINE]`` from text, a path, or a pipeline object defined in a file."""
    if isinstance(pipeline, (str, Path)):
        return str(pipeline)
    spec = getattr(pipeline, "spec", None)
    file = getattr(spec, "file", None)
    if isinstance(file, str) and file:
        return f"{file}:{spec.name}"  # type: ignore[union-attr]
    raise UsageError(
        f"pipeline: expected 'FILE[:PIPELINE]' or a pipeline defined in a file, got {pipeline!r}"
    )


def _workspace(workspace: Workspace | None) -> Workspace:
    from pipetrail.workspace import _default_workspace

    return workspace or _default_workspace()


class Trigger:
    """A stored trigger: ``pt.Trigger("nightly")``. Every property reads the store afresh.

    Raises:
        NotFoundError: no trigger of that name.
    """

    def __init__(self, name: str, *, workspace: Workspace | None = None) -> None:
        self._ws = _workspace(workspace)
        self._record = self._service.get(name)
        self.name = name

    @property
    def _service(self) -> TriggerService:
        from pipetrail.scheduling.service import TriggerService

        return TriggerService(self._ws.store)

    def _fresh(self) -> TriggerRecord:
        self._record = self._service.get(self.name)
        return self._record

    def __repr__(self) -> str:
        return f"Trigger({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Trigger) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def definition(self) -> dict[str, Any]:
        """The definition in the common vocabulary (what ``create_trigger`` and YAML take)."""
        from pipetrail.scheduling.spec import to_fields

        return to_fields(self._fresh().definition)

    @property
    def kind(self) -> str:
        """cron, interval, once, always_on, after or api."""
        return self._fresh().definition.kind

    @property
    def schedule(self) -> str:
        """The schedule in words: ``every day at 02:00 (UTC)``."""
        from pipetrail.scheduling.triggers import describe

        return describe(self._fresh().definition)

    @property
    def paused(self) -> bool:
        return self._fresh().paused

    @property
    def next_at(self) -> datetime | None:
        """When it fires next by the clock; None when paused, done, or not a clock trigger."""
        return self._service.next_at(self._fresh())

    def upcoming(self, n: int = 10) -> list[datetime]:
        """Its next ``n`` fire times, soonest first."""
        return [u.at for u in self._service.upcoming(n, name=self.name)]

    @property
    def runs(self) -> list[Run]:
        """The runs it started, newest first."""
        from pipetrail.client import Run

        reader = self._ws.reader()
        return [Run._of(record, reader) for record in self._service.runs(self.name)]

    def _overview(self) -> TriggerOverview:
        return self._service.overview(self._fresh(), detail=True)

    @property
    def ticks(self) -> list[Tick]:
        """Its recent ticks, newest first, each with its run or why it has none."""
        overview = self._overview()
        return [Tick.of(t, overview) for t in overview.ticks]

    @property
    def alerts(self) -> list[SentAlert]:
        """The alerts raised about its runs, newest first, delivered or why not."""
        return [SentAlert.of(a) for a in self._overview().alerts]

    def pause(self) -> Trigger:
        self._record = self._service.pause(self.name)
        return self

    def resume(self) -> Trigger:
        self._record = self._service.resume(self.name)
        return self

    def delete(self) -> None:
        """Delete the trigger and its ticks (the runs it started stay)."""
        self._service.delete(self.name)

    def update(self, **fields: Any) -> Trigger:
        """Change fields of the definition (``update(cron="0 3 * * *", sla="1h")``); a field set
        to None goes back to its default. Giving another kind's field changes the kind.

        Raises:
            UsageError: a bad field or value; nothing is changed.
        """
        from pipetrail.scheduling.spec import KIND_FIELDS, to_fields

        if "name" in fields:
            raise UsageError(
                f"trigger {self.name!r}: a trigger cannot be renamed; create a new one and "
                "delete this one"
            )
        current = to_fields(self._fresh().definition)
        if any(fields.get(k) not in (None, False) for k in KIND_FIELDS):
            for key in (*KIND_FIELDS, "on", "start", "end"):
                current.pop(key, None)
        merged = {**current, **fields}
        definition = checked_definition(
            {k: v for k, v in merged.items() if v is not None}, where="trigger"
        )
        self._record = self._service.update(definition)
        return self

    def fire(
        self,
        params: Mapping[str, Any] | None = None,
        variables: Mapping[str, str] | None = None,
        *,
        executor: str | None = None,
    ) -> Run:
        """Fire it once, now, and run that run in this process to its end (as ``pt.run`` does).

        ``params`` and ``variables`` change the trigger's for this run only; the run's
        ``scheduled_at`` variable is now.

        Raises:
            UsageError: the trigger is paused, or a parameter is unknown or ill-typed.
        """
        from pipetrail.client import Run
        from pipetrail.runtime.loader import ImportOnly, importing
        from pipetrail.scheduling.fire import fire_now

        if importing():
            raise ImportOnly  # as pt.run: a file being imported by pipetrail defines, never runs
        record = self._fresh()
        engine = self._ws.engine(executor=executor)
        run, request = fire_now(self._ws.store, engine, record, params=params, variables=variables)
        ended = engine.execute(run, request)
        return Run(ended.id, reader=self._ws.reader())


def create_trigger(
    name: str,
    pipeline: Any,
    *,
    cron: str | None = None,
    every: str | float | None = None,
    once_at: str | datetime | None = None,
    always_on: bool = False,
    after: str | None = None,
    on: str | None = None,
    api: bool = False,
    timezone: str | None = None,
    start: str | datetime | None = None,
    end: str | datetime | None = None,
    params: Mapping[str, Any] | None = None,
    variables: Mapping[str, str] | None = None,
    tags: Sequence[str] = (),
    sla: str | float | None = None,
    timeout: str | float | None = None,
    on_timeout: str | None = None,
    max_concurrent: int | None = None,
    overlap: str | None = None,
    catchup: str | None = None,
    workspace: Workspace | None = None,
) -> Trigger:
    """Create a trigger that runs ``pipeline`` (``"flow.py:etl"``, or a pipeline defined in a
    file) on a schedule: exactly one of ``cron``, ``every``, ``once_at``, ``always_on``,
    ``after`` (with ``on``: completed, failed or any) and ``api``.

    The other arguments are those of ``pipetrail triggers create``: durations are seconds or
    text (``"30m"``), times ISO 8601 with a zone or aware datetimes.

    Raises:
        UsageError: a bad field or value, or the name exists; nothing is stored.
    """
    fields: dict[str, Any] = {
        "name": name,
        "pipeline": _target(pipeline),
        "cron": cron,
        "every": every,
        "once_at": once_at,
        "always_on": always_on or None,
        "after": after,
        "on": on,
        "api": api or None,
        "timezone": timezone,
        "start": start,
        "end": end,
        "params": dict(params) if params else None,
        "variables": dict(variables) if variables else None,
        "tags": list(tags) or None,
        "sla": sla,
        "timeout": timeout,
        "on_timeout": on_timeout,
        "max_concurrent": max_concurrent,
        "overlap": overlap,
        "catchup": catchup,
    }
    definition = checked_definition({k: v for k, v in fields.items() if v is not None})
    from pipetrail.scheduling.service import TriggerService

    ws = _workspace(workspace)
    TriggerService(ws.store).create(definition)
    return Trigger(definition.name, workspace=ws)


def triggers(*, workspace: Workspace | None = None) -> list[Trigger]:
    """Every trigger in the store, by name."""
    from pipetrail.scheduling.service import TriggerService

    ws = _workspace(workspace)
    return [Trigger(r.name, workspace=ws) for r in TriggerService(ws.store).all()]


def apply_triggers(
    path: str | Path,
    *,
    prune: bool = False,
    dry_run: bool = False,
    workspace: Workspace | None = None,
) -> ApplyReport:
    """Make the store's triggers match a YAML file (triggers as code); applying it twice changes
    nothing. Triggers not in the file are reported as ``missing``, and deleted with ``prune``.

    Raises:
        UsageError: the file or a trigger in it is invalid; nothing is written.
    """
    from pipetrail.scheduling.service import TriggerService

    definitions = load_trigger_file(path)
    ws = _workspace(workspace)
    return TriggerService(ws.store).apply(definitions, prune=prune, dry_run=dry_run)
