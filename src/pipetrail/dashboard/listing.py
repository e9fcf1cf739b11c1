"""The runs tables: filters read from the query string, one page of runs, headline numbers."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from time import monotonic
from typing import Any
from urllib.parse import urlencode

from pipetrail.client import Reader, Run, list_runs
from pipetrail.core.bounds import EARLIEST, LATEST, MAX_COUNT
from pipetrail.core.status import RUN_TERMINAL, RunStatus, TaskStatus
from pipetrail.errors import PipetrailError
from pipetrail.storage.metadata.base import RunQuery

__all__ = ["Headline", "PipelineNames", "RunFilters", "RunPage", "RunRow", "load_page"]

#: Runs a text search's headline numbers are computed over (the newest it matched); without a
#: text search they are aggregates over every matching run, computed in the store.
STATS_WINDOW = 200
#: Runs a text search looks through (the newest that match the other filters).
SEARCH_WINDOW = 2000
PAGE_SIZE = 50
#: The last page a URL may ask for: its offset stays a count the stores accept.
MAX_PAGE = MAX_COUNT // (2 * PAGE_SIZE)
ACTIVE = (RunStatus.INITIAL, RunStatus.RUNNING)
#: Trigger names are at most this long.
MAX_TRIGGER_NAME = 200
_YES = ("1", "true", "yes", "on")
_NO = ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class RunFilters:
    """What the person asked for, as read from the URL; bad values become ``problems``."""

    pipeline: str | None = None
    statuses: tuple[RunStatus, ...] = ()
    tag: str | None = None
    since: date | None = None
    until: date | None = None
    q: str | None = None
    filter: str | None = None
    #: Only the runs this trigger started.
    trigger: str | None = None
    #: Only the runs that missed their SLA.
    sla_missed: bool = False
    page: int = 1
    problems: tuple[str, ...] = ()
    #: The pipeline the page is about (``/pipelines/{name}/runs``): not a filter one can drop.
    fixed_pipeline: bool = False

    @classmethod
    def from_query(
        cls, items: Sequence[tuple[str, str]], *, pipeline: str | None = None
    ) -> RunFilters:
        """Read ``pipeline``, ``status`` (repeatable), ``tag``, ``since``, ``until``, ``q``,
        ``filter``, ``trigger``, ``sla_missed`` and ``page``; ``pipeline`` given here overrides
        the query string."""
        values: dict[str, str] = {}
        statuses: list[RunStatus] = []
        problems: list[str] = []
        for key, raw in items:
            text = raw.strip()
            if key == "status":
                for part in filter(None, (p.strip() for p in text.split(","))):
                    try:
                        status = RunStatus(part)
                    except ValueError:
                        valid = ", ".join(s.value for s in RunStatus)
                        problems.append(f"unknown status {part!r}; statuses: {valid}")
                        continue
                    if status not in statuses:
                        statuses.append(status)
            elif text:
                values[key] = text
        since = _date(values.get("since"), "since", problems)
        until = _date(values.get("until"), "until", problems)
        if since and until and until < since:
            problems.append(f"until {until} is before since {since}; showing nothing between")
        sla_missed = False
        if "sla_missed" in values:
            flag = values["sla_missed"].lower()
            if flag in _YES:
                sla_missed = True
            elif flag not in _NO:
                problems.append(f"sla_missed {values['sla_missed']!r} is not yes or no; use 1 or 0")
        trigger = values.get("trigger")
        if trigger is not None and len(trigger) > MAX_TRIGGER_NAME:
            problems.append(
                f"trigger {trigger[:40]!r}… is longer than {MAX_TRIGGER_NAME} characters; "
                "no trigger has that name"
            )
        page = 1
        if "page" in values:
            try:
                page = max(1, int(values["page"]))
            except ValueError:
                problems.append(f"page {values['page']!r} is not a number; showing page 1")
            if page > MAX_PAGE:
                problems.append(f"page {page} is out of range (1 to {MAX_PAGE}); showing page 1")
                page = 1
        return cls(
            pipeline=pipeline or values.get("pipeline"),
            statuses=tuple(statuses),
            tag=values.get("tag"),
            since=since,
            until=until,
            q=values.get("q"),
            filter=values.get("filter"),
            trigger=trigger,
            sla_missed=sla_missed,
            page=page,
            problems=tuple(problems),
            fixed_pipeline=pipeline is not None,
        )

    @property
    def active(self) -> bool:
        """Whether any filter narrows the list (the pipeline of a pipeline's page does not)."""
        return bool(
            (self.pipeline and not self.fixed_pipeline)
            or self.statuses
            or self.tag
            or self.since
            or self.until
            or self.q
            or self.filter
            or self.trigger
            or self.sla_missed
        )

    def query(self, **changes: Any) -> str:
        """The query string of these filters (with ``changes``), for links and refreshes."""
        current = replace(self, **changes)
        pairs: list[tuple[str, str]] = []
        if current.pipeline and not current.fixed_pipeline:
            pairs.append(("pipeline", current.pipeline))
        pairs += [("status", s.value) for s in current.statuses]
        for name in ("tag", "since", "until", "q", "filter", "trigger"):
            value = getattr(current, name)
            if value:
                pairs.append((name, str(value)))
        if current.sla_missed:
            pairs.append(("sla_missed", "1"))
        if current.page > 1:
            pairs.append(("page", str(current.page)))
        return urlencode(pairs)


def _date(text: str | None, name: str, problems: list[str]) -> date | None:
    if not text:
        return None
    try:
        day = datetime.fromisoformat(text).date() if "T" in text else date.fromisoformat(text)
    except ValueError:
        problems.append(f"{name} {text!r} is not a date; use YYYY-MM-DD")
        return None
    if not EARLIEST.date() <= day < LATEST.date():
        problems.append(
            f"{name} {text!r} is out of range; give a date from {EARLIEST:%Y-%m-%d} "
            f"to {LATEST - timedelta(days=1):%Y-%m-%d}"
        )
        return None
    return day


@dataclass(frozen=True)
class RunRow:
    """One line of a runs table."""

    run: Run
    #: ``(finished tasks, tasks)`` for a run still going, to draw its progress.
    progress: tuple[int, int] | None = None
    #: Seconds since a run still going started.
    elapsed: float | None = None

    @property
    def active(self) -> bool:
        return self.run.record.status in ACTIVE


@dataclass(frozen=True)
class Headline:
    """The numbers above the table, over ``considered`` matching runs (all of them unless
    ``capped``: a text search's, over the newest it matched)."""

    considered: int
    capped: bool
    success_rate: float | None
    average_duration: float | None
    last_24h: int
    last_24h_capped: bool
    running: int


@dataclass(frozen=True)
class RunPage:
    """One page of a runs table, its headline numbers and whether to keep refreshing."""

    filters: RunFilters
    rows: list[RunRow]
    headline: Headline
    has_more: bool
    pipelines: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def live(self) -> bool:
        """Whether some run in view (or in the pipeline) is still initial or running."""
        return self.headline.running > 0 or any(r.active for r in self.rows)


class PipelineNames:
    """Names for the pipeline menu: every pipeline with a run, re-read at most every ``ttl_s``.

    ``sample`` is kept for callers; the names come from the store's per-pipeline counts.
    """

    def __init__(self, reader: Reader, ttl_s: float = 30.0, sample: int = 200) -> None:
        self._reader = reader
        self._ttl_s = ttl_s
        self._sample = sample
        self._names: set[str] = set()
        self._read_at = -ttl_s

    def __call__(self, seen: Iterable[str] = ()) -> list[str]:
        now = monotonic()
        if now - self._read_at >= self._ttl_s:
            try:
                # Every pipeline with a run (an aggregate), not only those of the newest runs.
                self._names = {p.name for p in self._reader.store.pipeline_stats()}
            except PipetrailError:
                self._names = set()
            self._read_at = now
        return sorted(self._names.union(seen))


def load_page(
    reader: Reader,
    filters: RunFilters,
    *,
    now: datetime | None = None,
    page_size: int = PAGE_SIZE,
    names: PipelineNames | None = None,
) -> RunPage:
    """Read one page of runs matching ``filters``, newest first, with headline numbers.

    The page reads only its own runs; the headline numbers are aggregates over every matching
    run in the store (one GROUP BY), so they stay right and fast at a million runs. A text
    search (``q``) is matched in Python, so its numbers are over the runs it looked through.
    """
    now = now or datetime.now(UTC)
    offset = (filters.page - 1) * page_size
    error: str | None = None
    headline = Headline(0, False, None, None, 0, False, 0)
    matching: list[Run] = []
    try:
        query = _query(filters)
        store = reader.store
        running = store.count_runs(RunQuery(pipeline=filters.pipeline, statuses=ACTIVE, limit=None))
        if filters.q:
            looked = _search_text(reader, filters, filters.q, offset + page_size + 1)
            matching = looked
            headline = _headline(looked[:STATS_WINDOW], running, now)
        else:
            matching = _fetch(reader, filters, offset + page_size + 1)
            summary = store.summarize_runs(query, recent_since=now - timedelta(hours=24))
            headline = Headline(
                considered=summary.total,
                capped=False,
                success_rate=summary.success_rate,
                average_duration=summary.average_duration_s,
                last_24h=summary.recent,
                last_24h_capped=False,
                running=running,
            )
    except PipetrailError as exc:
        matching, error = [], str(exc)
    shown = matching[offset : offset + page_size]
    rows = [
        RunRow(run, _progress(run), _elapsed(run, now))
        if run.record.status in ACTIVE
        else RunRow(run)
        for run in shown
    ]
    return RunPage(
        filters=filters,
        rows=rows,
        headline=headline,
        has_more=len(matching) > offset + page_size,
        pipelines=(names or PipelineNames(reader))(
            [r.pipeline_name for r in shown] + ([filters.pipeline] if filters.pipeline else [])
        ),
        error=error,
    )


def _query(filters: RunFilters, limit: int | None = None) -> RunQuery:
    """The store query of ``filters`` (every namespace: the dashboard shows everyone's runs)."""
    since = datetime.combine(filters.since, time(), UTC) if filters.since else None
    until = (
        datetime.combine(filters.until + timedelta(days=1), time(), UTC) if filters.until else None
    )
    return RunQuery(
        pipeline=filters.pipeline,
        statuses=filters.statuses,
        tags=(filters.tag,) if filters.tag else (),
        since=since,
        until=until,
        limit=limit,
        filter=filters.filter,
        trigger=filters.trigger,
        sla_missed=filters.sla_missed,
    )


def _fetch(reader: Reader, filters: RunFilters, limit: int) -> list[Run]:
    query = _query(filters, limit)
    runs: list[Run] = list_runs(
        pipeline=query.pipeline,
        statuses=query.statuses,
        tags=query.tags,
        since=query.since,
        limit=limit,
        filter=_search(filters.filter, query.until),
        all_namespaces=True,
        reader=reader,
        trigger=filters.trigger,
        sla_missed=filters.sla_missed,
    )
    return runs


def _search(text: str | None, until: datetime | None) -> str | None:
    """The search-language filter: the person's own, and the end of the date range."""
    parts = []
    if text:
        parts.append(f"({text})")
    if until is not None:
        parts.append(f"created < '{until.strftime('%Y-%m-%dT%H:%M:%S')}'")
    return " and ".join(parts) or None


def _search_text(reader: Reader, filters: RunFilters, q: str, wanted: int) -> list[Run]:
    """Runs matching the other filters whose text contains ``q``: read in growing chunks
    until ``wanted`` match or ``SEARCH_WINDOW`` runs are read."""
    limit = max(STATS_WINDOW, 2 * wanted)
    while True:
        runs = _fetch(reader, filters, limit)
        found = [r for r in runs if _matches(r, q)]
        if len(runs) < limit or limit >= SEARCH_WINDOW or len(found) >= wanted:
            return found
        limit = min(limit * 2, SEARCH_WINDOW)


def _matches(run: Run, q: str) -> bool:
    """Every word of ``q`` appears in the run's pipeline, id, status, user, tags, params,
    variables or error (case-insensitive)."""
    record = run.record
    haystack = " ".join(
        [
            record.pipeline,
            f"#{record.id} {record.pathspec}",
            record.status.value,
            record.user,
            record.trigger,
            record.cause.trigger if record.cause else "",
            *record.user_tags,
            *record.system_tags,
            json.dumps(record.params, default=repr),
            json.dumps(record.variables, default=repr),
            record.error or "",
        ]
    ).lower()
    return all(word in haystack for word in q.lower().split())


def _progress(run: Run) -> tuple[int, int]:
    """How many of the run's tasks have ended (latest attempt of each), of how many."""
    latest: dict[tuple[str, int], str] = {}
    for step in run.steps:
        for task in step.tasks:
            latest[(step.name, task.record.task_index)] = task.status
    waiting = {TaskStatus.INITIAL.value, TaskStatus.QUEUED.value, TaskStatus.RUNNING.value}
    done = sum(1 for status in latest.values() if status not in waiting)
    return done, max(len(latest), len(run.dag.get("steps", [])))


def _elapsed(run: Run, now: datetime) -> float | None:
    started = run.started_at
    return None if started is None else max(0.0, (now - started).total_seconds())


def _headline(runs: list[Run], running: int, now: datetime) -> Headline:
    finished = [r for r in runs if r.record.status in RUN_TERMINAL]
    completed = sum(1 for r in finished if r.record.status is RunStatus.COMPLETED)
    durations = [d for r in finished if (d := r.duration) is not None]
    day_ago = now - timedelta(hours=24)
    recent = sum(1 for r in runs if r.created_at >= day_ago)
    capped = len(runs) >= STATS_WINDOW
    return Headline(
        considered=len(runs),
        capped=capped,
        success_rate=completed / len(finished) if finished else None,
        average_duration=sum(durations) / len(durations) if durations else None,
        last_24h=recent,
        last_24h_capped=capped and recent == len(runs),
        running=running,
    )
