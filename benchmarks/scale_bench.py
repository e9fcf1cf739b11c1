"""The record at scale: a million runs in PostgreSQL, seeded through the store, then read.

Scenario ``pg_million`` (off by default; ``python benchmarks/run.py --scale`` or
``make bench-scale``): seeds runs with ``benchmarks/seed.py`` (``import_runs``, the store's bulk
API) into a fresh database on ``PIPETRAIL_BENCH_PG``, reports the rate, then times warm reads,
each the median of repeats: a filtered, ordered search, the first page of the runs list (REST
and the Python client), one run's page (REST detail and ``pt.Run``), the dashboard's headline
numbers and ``/api/pipelines``. ``--quick`` seeds 2,000 runs; ``PIPETRAIL_SCALE_RUNS`` overrides.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scenarios import Outcome, Sizes

FULL_RUNS = 1_000_000
QUICK_RUNS = 2_000
#: The search the scenario times (the ``pipetrail runs search`` language).
SEARCH_FILTER = "params.lr > 0.01 and metrics.accuracy > 0.9"
SEARCH_ORDER = ("metrics.accuracy desc",)
SEARCH_LIMIT = 50
READ_TARGET_MS = 50.0
SEED_TARGET = 5000.0


def _median_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    result = fn()  # warm: the first call compiles statements and fills caches
    walls = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        walls.append((time.perf_counter() - started) * 1000)
    return statistics.median(walls), result


def pg_million(home: Path, sizes: Sizes) -> Outcome:
    import seed
    from scenarios import DEFAULT_BENCH_PG, Figure, Outcome, VerificationError, _bench_pg_database

    quick = sizes.search_runs < 10_000
    count = int(os.environ.get("PIPETRAIL_SCALE_RUNS", QUICK_RUNS if quick else FULL_RUNS))
    repeats = 5 if quick else 20
    pg_url = os.environ.get("PIPETRAIL_BENCH_PG", DEFAULT_BENCH_PG)
    with _bench_pg_database(pg_url) as (url, problem):
        if url is None:
            return Outcome(
                [
                    Figure(
                        "pg_million.seed_rate",
                        float("nan"),
                        "runs/s",
                        note=f"skipped, no PostgreSQL ({problem[:60]}); set PIPETRAIL_BENCH_PG",
                    )
                ],
                {"postgresql": f"skipped: {problem}"},
            )
        result = seed.seed_url(url, count, jobs=2)
        if result.runs != count:
            raise VerificationError(f"seeded {result.runs} runs of {count}")
        figures = [
            Figure(
                "pg_million.seed_rate",
                result.rate,
                "runs/s",
                ">",
                SEED_TARGET,
                note=f"{count:,} runs (5 params, 5 metrics, 1 task each) via import_runs, "
                "2 processes",
            )
        ]
        details: dict[str, Any] = {"runs": count, "seed_s": result.seconds}
        figures += _reads(home, url, count, repeats, details)
    return Outcome(figures, details)


def _reads(home: Path, url: str, count: int, repeats: int, details: dict[str, Any]) -> list[Any]:
    from fastapi.testclient import TestClient
    from scenarios import Figure, VerificationError

    import pipetrail as pt
    from pipetrail.client import list_runs
    from pipetrail.config import Settings
    from pipetrail.dashboard.listing import RunFilters, load_page
    from pipetrail.server import create_app
    from pipetrail.storage.metadata.base import RunQuery
    from pipetrail.workspace import Workspace

    ws = Workspace(Settings.for_home(home / "store-pg", db_url=url))
    figures: list[Any] = []
    try:
        with ws.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # A store that has been running has statistics; a fresh bulk load has none yet.
            conn.exec_driver_sql("VACUUM ANALYZE")
        store = ws.store
        reader = ws.reader()
        client = TestClient(create_app(ws))
        newest = store.list_runs(RunQuery(limit=1))[0]
        middle = store.get_run(newest.id - count // 2)
        query = RunQuery(filter=SEARCH_FILTER, order_by=SEARCH_ORDER, limit=SEARCH_LIMIT)

        def rest(path: str) -> Any:
            answer = client.get(path)
            if answer.status_code != 200:
                raise VerificationError(f"GET {path} answered {answer.status_code}")
            return answer.json()

        def run_page() -> Any:
            run = pt.Run(middle.pathspec, reader=reader)
            return run.params, run.metrics, run.tags, [s.name for s in run]

        day_ago = datetime.now(UTC) - timedelta(hours=24)
        cases: list[tuple[str, Callable[[], Any], str]] = [
            (
                "search",
                lambda: store.list_runs(query),
                f"list_runs({SEARCH_FILTER!r} order by {SEARCH_ORDER[0]} limit {SEARCH_LIMIT})",
            ),
            (
                "rest_list",
                lambda: rest("/api/pipeline_runs?limit=50"),
                "GET /api/pipeline_runs?limit=50 (first page, newest first)",
            ),
            (
                "client_list",
                lambda: list_runs(limit=50, all_namespaces=True, reader=reader),
                "pt client list_runs(limit=50)",
            ),
            (
                "rest_run",
                lambda: (
                    rest(f"/api/pipeline_runs/{middle.id}"),
                    rest(f"/api/pipeline_runs/{middle.id}/block_runs"),
                ),
                "GET /api/pipeline_runs/{id} + /block_runs (params, metrics, tasks)",
            ),
            ("client_run", run_page, "pt.Run(pathspec): params, metrics, tags, steps"),
            (
                "headline",
                lambda: store.summarize_runs(RunQuery(limit=None), recent_since=day_ago),
                "the dashboard's headline numbers (summarize_runs over every run)",
            ),
            (
                "dashboard_list",
                lambda: load_page(reader, RunFilters()),
                "the dashboard's runs page data (page + headline + running count)",
            ),
            ("rest_pipelines", lambda: rest("/api/pipelines"), "GET /api/pipelines (counts)"),
        ]
        for name, fn, note in cases:
            ms, result = _median_ms(fn, repeats)
            details[name] = ms
            figures.append(
                Figure(
                    f"pg_million.{name}",
                    ms,
                    "ms",
                    "<",
                    READ_TARGET_MS,
                    note=f"{note}, {count:,} runs, warm median of {repeats}",
                )
            )
            if name == "search" and not result:
                raise VerificationError("the search found no runs")
            if name == "headline" and result.total != count:
                raise VerificationError(f"headline counts {result.total} runs of {count}")
        client.close()
    finally:
        ws.close()
    return figures
