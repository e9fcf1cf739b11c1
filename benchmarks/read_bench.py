"""The client's read paths over a store of many runs: a listing's first page, a search of
1,000 runs with their params and metrics, one run by pathspec (issue 13's targets), and for
scale the same search reading every field of every run.

The store is seeded with ``seed.py``'s runs through the bulk import (5 params, 5 metrics and
3 tags each). Each figure is the median of repeats after one warm-up call, with the SQL
statements of one call counted (SQLAlchemy's ``before_cursor_execute``) and the median thread
CPU time beside it (on a loaded machine the wall time waits for a core; the CPU time does not).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scenarios import Figure, Outcome, Sizes

    from pipetrail.workspace import Workspace

#: The search: most runs match, so it returns its whole limit.
SEARCH_FILTER = "metrics.accuracy > 0.3 and status = 'completed'"
SEARCH_ORDER = ["metrics.accuracy desc"]
SEARCH_RETURNS = 1000


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], float]:
    """(median wall seconds, every wall time, median thread CPU seconds) of ``repeats`` calls."""
    fn()
    timings, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.thread_time()
        fn()
        cpu.append(time.thread_time() - started_cpu)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), timings, statistics.median(cpu)


def _statements(ws: Workspace, fn: Callable[[], Any]) -> int:
    from sqlalchemy import event

    seen: list[str] = []

    def count(*args: Any) -> None:
        seen.append(args[2])

    event.listen(ws.store.engine, "before_cursor_execute", count)
    try:
        fn()
    finally:
        event.remove(ws.store.engine, "before_cursor_execute", count)
    return len(seen)


def reads(home: Path, sizes: Sizes) -> Outcome:
    """Listing, search and one run, over ``sizes.search_runs // 2`` seeded runs (SQLite)."""
    import seed
    from scenarios import Figure, Outcome, VerificationError, _workspace

    import pipetrail as pt
    from pipetrail.core.model import RunRecord
    from pipetrail.storage.metadata.base import RunQuery

    count = sizes.search_runs // 2
    returns = min(SEARCH_RETURNS, count // 2)
    repeats = sizes.search_repeats
    ws = _workspace(home)
    try:
        seeded = seed.seed(ws.store, count)
        reader = ws.reader()
        pt.namespace(None)
        busiest = max(seed.PIPELINES, key=lambda p: ws.store.count_runs(RunQuery(pipeline=p)))
        # The first 100 runs of the pipeline with the most runs, newest first.
        listed: list[Any] = []

        def listing() -> None:
            listed[:] = islice(pt.Pipeline(busiest, reader=reader), 100)

        def search() -> None:
            found = pt.search_runs(
                SEARCH_FILTER, order_by=SEARCH_ORDER, limit=returns, reader=reader
            )
            read = [(r.params, r.metrics) for r in found]
            if len(read) != returns or not all(p and m for p, m in read):
                raise VerificationError(f"search read {len(read)} runs, expected {returns}")

        fields = [f.name for f in dataclasses.fields(RunRecord)]
        params_at, dag_at = fields.index("params"), fields.index("dag")

        def search_all() -> None:
            # Every field: a listing reads its runs' tags and creation facts when first asked,
            # for all its runs at once, so this is the search's statements plus three.
            found = pt.search_runs(
                SEARCH_FILTER, order_by=SEARCH_ORDER, limit=returns, reader=reader
            )
            read = [([getattr(r.record, f) for f in fields], r.metrics) for r in found]
            if len(read) != returns or not all(v[params_at] and v[dag_at] and m for v, m in read):
                raise VerificationError(f"search read {len(read)} whole runs, expected {returns}")

        newest = ws.store.list_runs(RunQuery(limit=1))[0].pathspec

        def one() -> None:
            run = pt.Run(newest, reader=reader)
            if not (run.params and run.metrics):
                raise VerificationError(f"{newest} read back without params or metrics")

        cases = _cases(listing, search, one, search_all)
        timings = {name: _timed(fn, repeats) for name, fn in cases}
        if len(listed) != 100 or [r.id for r in listed] != sorted(
            (r.id for r in listed), reverse=True
        ):
            raise VerificationError(f"listing read {len(listed)} runs, not the newest 100")
        queries = {name: _statements(ws, fn) for name, fn in cases}
    finally:
        ws.close()
    of = f"median of {repeats}, {count:,} seeded runs (SQLite)"

    def cpu(name: str) -> str:
        return f"thread CPU {timings[name][2] * 1000:.2f} ms"

    figures: list[Figure] = [
        Figure(
            "reads.list_100",
            timings["list"][0] * 1000,
            "ms",
            "<",
            5,
            f"list(islice(pt.Pipeline(name), 100)), {queries['list']} statements, "
            f"{cpu('list')}, {of}",
        ),
        Figure(
            "reads.search_1000",
            timings["search"][0] * 1000,
            "ms",
            "<",
            15,
            f"search_runs returning {returns} + each run's .params and .metrics, "
            f"{queries['search']} statements, {cpu('search')}, {of}",
        ),
        Figure(
            "reads.run_open",
            timings["run"][0] * 1000,
            "ms",
            "<",
            1,
            f"pt.Run(pathspec) + .params + .metrics, {queries['run']} statements, "
            f"{cpu('run')}, {of}",
        ),
        Figure(
            "reads.search_1000_all",
            timings["search_all"][0] * 1000,
            "ms",
            None,
            None,
            f"search_runs returning {returns} + every field of each run's record and .metrics, "
            f"{queries['search_all']} statements, {cpu('search_all')}, {of}",
        ),
    ]
    return Outcome(
        figures,
        {
            "runs": count,
            "seed_s": seeded.seconds,
            "search_returns": returns,
            "statements": queries,
            "timings_s": {name: t for name, (_, t, _) in timings.items()},
            "cpu_median_s": {name: c for name, (_, _, c) in timings.items()},
        },
    )


def _cases(
    listing: Callable[[], None],
    search: Callable[[], None],
    one: Callable[[], None],
    search_all: Callable[[], None],
) -> list[tuple[str, Callable[[], None]]]:
    return [("list", listing), ("search", search), ("run", one), ("search_all", search_all)]
