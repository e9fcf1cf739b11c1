"""The benchmark scenarios: each builds its own workload in a fresh home and returns figures."""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import flowgen
import read_bench
import scale_bench
import scheduler_bench

if TYPE_CHECKING:
    from pipetrail.client import Run
    from pipetrail.dsl import Pipeline
    from pipetrail.storage.artifacts.serializers import StoredValue
    from pipetrail.workspace import Workspace

__all__ = ["SCENARIOS", "Figure", "Outcome", "VerificationError"]

MB = 1024 * 1024


class VerificationError(Exception):
    """A scenario ran but its result is wrong (a missing point, a failed run, a duplicated blob)."""


@dataclass(frozen=True)
class Figure:
    """One measured number, with the target it is judged against (if any).

    Attributes:
        name: ``scenario.figure``.
        value: the measurement.
        unit: ``ms``, ``s``, ``points/s``, ``MB/s``, ``bytes``.
        target: ``"<"``, ``">"`` or ``"=="``, with ``threshold``; None means information only.
        threshold: the number ``value`` is compared with.
        note: how it was measured, in a few words.
    """

    name: str
    value: float
    unit: str
    target: str | None = None
    threshold: float | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        """``PASS``, ``MISS`` or ``INFO`` (no target)."""
        if self.target is None or self.threshold is None:
            return "INFO"
        ok = {
            "<": self.value < self.threshold,
            ">": self.value > self.threshold,
            "==": self.value == self.threshold,
        }[self.target]
        return "PASS" if ok else "MISS"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "target": None if self.target is None else f"{self.target} {self.threshold:g}",
            "verdict": self.verdict,
            "note": self.note,
        }


@dataclass
class Outcome:
    """What a scenario returns: figures for the table, details for the JSON file."""

    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sizes:
    """Workload sizes: full by default, tiny with ``--quick``."""

    chain_steps: int
    chain_repeats: int
    branches: int
    fanout_repeats: int
    metric_points: int
    metric_repeats: int
    array_mb: int
    artifact_rounds: int
    import_repeats: int
    read_repeats: int
    search_runs: int
    search_repeats: int
    triggers: int = 1000
    tick_runs: int = 8

    @classmethod
    def pick(cls, quick: bool) -> Sizes:
        if quick:
            return cls(5, 2, 10, 2, 10_000, 1, 20, 1, 3, 5, 1_000, 5, 100, 3)
        return cls(20, 5, 100, 3, 100_000, 3, 200, 5, 5, 20, 10_000, 20, 1000, 8)


# -- helpers -----------------------------------------------------------------------------------


def _workspace(home: Path) -> Workspace:
    from pipetrail.config import Settings
    from pipetrail.workspace import Workspace

    return Workspace(Settings.for_home(home / "store"))


def _load(file: Path, name: str) -> Pipeline:
    from pipetrail.runtime.loader import load_pipeline_file

    return load_pipeline_file(file, name)


def _timed_run(
    pipeline: Pipeline, ws: Workspace, executor: str, params: dict[str, Any] | None = None
) -> tuple[Run, float]:
    import pipetrail as pt

    started = time.perf_counter()
    run = pt.run(pipeline, params or {}, executor=executor, workspace=ws)
    wall = time.perf_counter() - started
    steps = list(run)
    if run.status != "completed":
        failed = [(s.name, s.status) for s in steps if s.status != "completed"]
        raise VerificationError(
            f"run {run.pathspec} ended {run.status!r} ({run.error}); steps not completed: {failed}"
        )
    if len(steps) != len(pipeline.steps):
        raise VerificationError(
            f"run {run.pathspec} recorded {len(steps)} steps, expected {len(pipeline.steps)}"
        )
    return run, wall


def _dag_overhead(
    name: str, executor: str, pipeline: Pipeline, ws: Workspace, repeats: int
) -> Outcome:
    """Runs of a DAG of no-op steps: per-step overhead cold, repeated and steady-state."""
    n = len(pipeline.steps)
    limit = 5.0 if executor == "inline" else 50.0
    runs: list[dict[str, float]] = []
    for _ in range(repeats):
        run, wall = _timed_run(pipeline, ws, executor)
        starts = sorted(s.task.started_at for s in run if s.task and s.task.started_at)
        if len(starts) != n:
            raise VerificationError(f"run {run.pathspec}: {len(starts)} of {n} tasks have a start")
        span = (starts[-1] - starts[0]).total_seconds()
        recorded = run.duration or 0.0
        runs.append(
            {
                "wall_s": wall,
                "recorded_duration_s": recorded,
                "prepare_s": wall - recorded,
                "first_task_start_s": (starts[0] - run.started_at).total_seconds()
                if run.started_at
                else float("nan"),
                "start_span_s": span,
            }
        )
    first, rest = runs[0], runs[1:] or runs
    med = statistics.median
    per_step_rest = med(r["wall_s"] for r in rest) / n * 1000
    steady = med(r["start_span_s"] for r in runs) / (n - 1) * 1000
    figures = [
        Figure(
            f"{name}.first_run_per_step",
            first["wall_s"] / n * 1000,
            "ms",
            "<",
            limit,
            "1st run wall / steps (cold: lazy imports"
            + (", forkserver + pool start)" if executor == "process" else ")"),
        ),
        Figure(
            f"{name}.per_step",
            per_step_rest,
            "ms",
            "<",
            limit,
            f"median of runs 2..{repeats}: wall / steps"
            + (" (each run starts its own pool)" if executor == "process" else ""),
        ),
        Figure(
            f"{name}.steady_per_step",
            steady,
            "ms",
            "<",
            limit,
            "(last task start - first task start) / (steps-1): no prepare, no pool start",
        ),
        Figure(
            f"{name}.total",
            med(r["wall_s"] for r in rest),
            "s",
            note=f"median wall of runs 2..{repeats}, {n} steps",
        ),
        Figure(
            f"{name}.prepare",
            med(r["prepare_s"] for r in rest) * 1000,
            "ms",
            note="wall - recorded run duration (provenance + run row + executor start)",
        ),
    ]
    return Outcome(figures, {"steps": n, "executor": executor, "runs": runs})


# -- scenarios ---------------------------------------------------------------------------------


def chain(home: Path, sizes: Sizes, executor: str) -> Outcome:
    """A chain of no-op steps."""
    pipeline = _load(flowgen.write_chain(home / "flows", sizes.chain_steps), "chain")
    ws = _workspace(home)
    try:
        return _dag_overhead(f"chain20_{executor}", executor, pipeline, ws, sizes.chain_repeats)
    finally:
        ws.close()


def fanout(home: Path, sizes: Sizes, executor: str) -> Outcome:
    """One root, many independent no-op branches, one join taking them all."""
    pipeline = _load(flowgen.write_fanout(home / "flows", sizes.branches), "fanout")
    ws = _workspace(home)
    try:
        outcome = _dag_overhead(
            f"fanout100_{executor}", executor, pipeline, ws, sizes.fanout_repeats
        )
    finally:
        ws.close()
    outcome.details["branches"] = sizes.branches
    return outcome


#: A step logging ``points`` points as ``log_metrics`` calls of 10 names each (metrics_batched).
BATCHED_FLOW = """
import time

import pipetrail as pt

TIMINGS: dict[str, float] = {}
NAMES = [f"m{k}" for k in range(10)]


@pt.step
def log_points(points: int = 1000):
    started = time.perf_counter()
    for i in range(points // 10):
        value = 1.0 / (i + 1)
        pt.log_metrics({name: value for name in NAMES}, step=i)
    TIMINGS["loop_s"] = time.perf_counter() - started


metrics = pt.Pipeline("metrics", [log_points])
"""


def metrics(home: Path, sizes: Sizes, *, batched: bool = False) -> Outcome:
    """One inline step logging many points; throughput from run start to all points stored.

    With ``batched`` the points are ``log_metrics`` calls of 10 names each (``metrics_batched``).
    """
    import resource

    if batched:
        (home / "flows").mkdir(parents=True, exist_ok=True)
        (home / "flows" / "batched_flow.py").write_text(BATCHED_FLOW)
        pipeline = _load(home / "flows" / "batched_flow.py", "metrics")
    else:
        pipeline = _load(flowgen.write_metrics(home / "flows"), "metrics")
    timings: dict[str, float] = pipeline.steps["log_points"].func.__globals__["TIMINGS"]
    scenario, series = ("metrics_batched", "m0") if batched else ("metrics_100k", "loss")
    ws = _workspace(home)
    points = sizes.metric_points
    runs: list[dict[str, float]] = []
    try:
        for _ in range(sizes.metric_repeats):
            run, wall = _timed_run(pipeline, ws, "inline", {"points": points})
            stored = ws.store.count_metrics(run.id)
            if stored != points:
                raise VerificationError(
                    f"run {run.pathspec}: logged {points} metric points, the store has {stored}"
                )
            history = ws.store.metric_history(run.id, series)
            steps = points // 10 if batched else points
            if [p.step for _, p in history] != list(range(steps)):
                raise VerificationError(
                    f"run {run.pathspec}: stored {series} steps are not 0..{steps - 1} in order"
                )
            runs.append({"wall_s": wall, "loop_s": timings.get("loop_s", float("nan"))})
    finally:
        ws.close()
    wall = statistics.median(r["wall_s"] for r in runs)
    loop = statistics.median(r["loop_s"] for r in runs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    of = f"median of {len(runs)}"
    call = "log_metrics of 10 names" if batched else "log_metric"
    return Outcome(
        [
            Figure(
                f"{scenario}.points_per_s",
                points / wall,
                "points/s",
                ">",
                1_000_000 if batched else 400_000,
                f"{points} points ({call}) / pt.run wall (start -> all stored), {of}",
            ),
            Figure(
                f"{scenario}.log_metric_call",
                loop / points * 1e6,
                "us",
                note=f"step's {call} loop / points (incl. flushes it waits for), {of}",
            ),
            Figure(f"{scenario}.total", wall, "s", note=f"pt.run wall, count verified, {of}"),
            Figure(
                f"{scenario}.peak_rss",
                peak,
                "MB",
                note="the process's peak RSS (pending points are bounded: back-pressure)",
            ),
        ],
        {"points": points, "runs": runs, "peak_rss_mb": peak},
    )


def artifact(home: Path, sizes: Sizes) -> Outcome:
    """Store one big float64 array twice in a CAS: throughput and dedupe, median of rounds.

    Each round uses a fresh store (so its first store really writes) and also times a plain
    ``ndarray.tofile`` into the same folder, the machine's write ceiling, so a MISS can be told
    apart from a slow machine. Every timed write starts on a warm page pool (see
    :func:`_warm_page_pool`).
    """
    import numpy as np

    array = np.random.default_rng(0).random(sizes.array_mb * MB // 8)
    rounds = [_artifact_round(home / f"round{i}", array) for i in range(sizes.artifact_rounds)]
    mb = array.nbytes / MB
    med = statistics.median
    note = f"{mb:.0f} MB, median of {len(rounds)} fresh stores"
    return Outcome(
        [
            Figure(
                "artifact_200mb.first_store",
                mb / med(r["store_s"][0] for r in rounds),
                "MB/s",
                ">",
                300,
                note,
            ),
            Figure(
                "artifact_200mb.second_store",
                mb / med(r["store_s"][1] for r in rounds),
                "MB/s",
                ">",
                300,
                "same array again: hashed from its buffer, found stored, nothing written",
            ),
            Figure(
                "artifact_200mb.first_store_s",
                med(r["store_s"][0] for r in rounds),
                "s",
                "<",
                0.25,
                f"issue 13's target; {note}",
            ),
            Figure(
                "artifact_200mb.second_store_s",
                med(r["store_s"][1] for r in rounds),
                "s",
                "<",
                0.1,
                "issue 13's target: the same array again",
            ),
            Figure(
                "artifact_200mb.second_store_added",
                float(max(r["disk_bytes"][2] - r["disk_bytes"][1] for r in rounds)),
                "bytes",
                "==",
                0,
                "bytes on disk added by the second store (worst round)",
            ),
            Figure(
                "artifact_200mb.first_store_added",
                float(med(r["disk_bytes"][1] - r["disk_bytes"][0] for r in rounds)),
                "bytes",
                note=f"payload {rounds[0]['stored_size']} bytes (.npy)",
            ),
            Figure(
                "artifact_200mb.raw_write",
                mb / med(r["raw_write_s"] for r in rounds),
                "MB/s",
                note="ndarray.tofile, no pipetrail: this machine's ceiling",
            ),
            Figure(
                "artifact_200mb.load",
                mb / med(r["load_s"] for r in rounds),
                "MB/s",
                note="load_from_store, no verify",
            ),
        ],
        {"array_bytes": array.nbytes, "rounds": rounds},
    )


def _artifact_round(home: Path, array: Any) -> dict[str, Any]:
    import numpy as np

    from pipetrail.storage.artifacts.serializers import dump_to_store, load_from_store

    ws = _workspace(home)
    root = Path(ws.settings.artifacts_url)
    try:
        on_disk = [_disk_bytes(root)]
        timings: list[float] = []
        stored: list[StoredValue] = []
        for _ in range(2):
            _warm_page_pool(array.nbytes)
            started = time.perf_counter()
            stored.append(dump_to_store(ws.cas, array, ws.registry))
            timings.append(time.perf_counter() - started)
            # Read right after the store returns: a temp file not yet removed counts as added.
            on_disk.append(_disk_bytes(root))
        first, second = stored
        leftovers = _tmp_files(root)
        started = time.perf_counter()
        loaded = load_from_store(ws.cas, first.key, first.serializer, ws.registry)
        load_s = time.perf_counter() - started
        if first.key != second.key or first.size != second.size:
            raise VerificationError(f"same array stored under two keys: {first.key} {second.key}")
        if first.existed or not second.existed:
            raise VerificationError(
                f"dedupe flags wrong: first.existed={first.existed}, "
                f"second.existed={second.existed}"
            )
        if not np.array_equal(loaded, array):
            raise VerificationError(f"array loaded from {first.key} differs from the one stored")
        if leftovers:
            raise VerificationError(f"temporary files left in the store: {leftovers}")
        del loaded
        raw = root / "raw-baseline.bin"
        _warm_page_pool(array.nbytes)
        started = time.perf_counter()
        array.tofile(raw)
        raw_s = time.perf_counter() - started
        raw.unlink()
    finally:
        ws.close()
    return {
        "key": first.key,
        "stored_size": first.size,
        "store_s": timings,
        "load_s": load_s,
        "raw_write_s": raw_s,
        "disk_bytes": on_disk,
    }


def import_time(home: Path, sizes: Sizes) -> Outcome:
    """``python -c "import pipetrail"`` and ``pipetrail --help`` wall times, in subprocesses."""
    python = sys.executable
    script = Path(python).parent / "pipetrail"
    help_cmd = (
        [str(script), "--help"] if script.exists() else [python, "-m", "pipetrail.cli", "--help"]
    )
    env = {**os.environ, "PIPETRAIL_HOME": str(home / "store")}
    n = sizes.import_repeats
    baseline = _median_wall([python, "-c", "pass"], n, home, env)
    imp = _median_wall([python, "-c", "import pipetrail"], n, home, env)
    helped = _median_wall(help_cmd, n, home, env)
    profile = subprocess.run(
        [python, "-X", "importtime", "-c", "import pipetrail"],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    help_profile = subprocess.run(
        [python, "-X", "importtime", "-m", "pipetrail.cli", "--help"],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    return Outcome(
        [
            Figure("import_time.import_pipetrail", imp, "s", "<", 0.3, f"median of {n}, wall"),
            Figure(
                "import_time.pipetrail_help", helped, "s", "<", 0.3, f"median of {n}: {help_cmd[0]}"
            ),
            Figure("import_time.python_startup", baseline, "s", note='python -c "pass", for scale'),
        ],
        {
            "help_command": help_cmd,
            "import_top": _importtime_top(profile),
            "help_top": _importtime_top(help_profile),
        },
    )


def run_record_read(home: Path, sizes: Sizes) -> Outcome:
    """Client read latency: open a finished run by pathspec and read what a user looks at."""
    import pipetrail as pt

    pipeline = _load(flowgen.write_chain(home / "flows", sizes.chain_steps), "chain")
    ws = _workspace(home)
    try:
        run, _ = _timed_run(pipeline, ws, "inline")
        timings: list[float] = []
        open_only: list[float] = []
        for _ in range(sizes.read_repeats):
            started = time.perf_counter()
            handle = pt.Run(run.pathspec, reader=ws.reader())
            opened = time.perf_counter()
            _ = (handle.status, handle.params, handle.metrics)
            steps = [(s.name, s.status, s.task.duration if s.task else None) for s in handle]
            timings.append(time.perf_counter() - started)
            open_only.append(opened - started)
            if len(steps) != sizes.chain_steps or handle.status != "completed":
                raise VerificationError(f"read back {len(steps)} steps of {run.pathspec}")
    finally:
        ws.close()
    med = statistics.median
    return Outcome(
        [
            Figure(
                "run_record_read.full_read",
                med(timings) * 1000,
                "ms",
                note=f"Run(pathspec) + status/params/metrics + {sizes.chain_steps} steps' tasks",
            ),
            Figure(
                "run_record_read.open", med(open_only) * 1000, "ms", note="pt.Run(pathspec) only"
            ),
        ],
        {"repeats": sizes.read_repeats, "full_read_s": timings, "open_s": open_only},
    )


SEARCH_FILTER = (
    "metrics.accuracy > 0.9 and params.lr = 0.01 and tags.phase = 'experiment' "
    "and status = 'completed'"
)
SEARCH_ORDER = ("metrics.accuracy desc",)
SEARCH_LIMIT = 100
#: The PostgreSQL server (trust auth) search_10k also runs on; it makes a database of its own.
DEFAULT_BENCH_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def search(home: Path, sizes: Sizes) -> Outcome:
    """A filtered, ordered, limited search over many stored runs, on SQLite and PostgreSQL.

    PostgreSQL is the server at ``PIPETRAIL_BENCH_PG`` (default :data:`DEFAULT_BENCH_PG`); the
    scenario creates ``pipetrail_bench_<pid>`` there and drops it afterwards. Without a reachable
    server the PostgreSQL figure is reported as skipped. Nothing runs ANALYZE after the bulk
    load: the query is timed on the plans a freshly filled store gets.
    """
    runs = _search_corpus(sizes.search_runs)
    details: dict[str, Any] = {
        "runs": len(runs),
        "filter": SEARCH_FILTER,
        "order_by": list(SEARCH_ORDER),
        "limit": SEARCH_LIMIT,
    }
    ws = _workspace(home)
    try:
        figures = _search_backend("sqlite", ws, runs, sizes.search_repeats, details)
    finally:
        ws.close()
    pg_url = os.environ.get("PIPETRAIL_BENCH_PG", DEFAULT_BENCH_PG)
    with _bench_pg_database(pg_url) as (url, problem):
        if url is None:
            details["postgresql"] = f"skipped: {problem}"
            figures.append(
                Figure(
                    "search_10k.postgresql_query",
                    float("nan"),
                    "ms",
                    note=f"skipped, no PostgreSQL ({problem[:60]}); set PIPETRAIL_BENCH_PG",
                )
            )
        else:
            from pipetrail.config import Settings
            from pipetrail.workspace import Workspace

            ws = Workspace(Settings.for_home(home / "store-pg", db_url=url))
            try:
                figures += _search_backend("postgresql", ws, runs, sizes.search_repeats, details)
            finally:
                ws.close()
    return Outcome(figures, details)


def list_page(home: Path, sizes: Sizes) -> Outcome:
    """The dashboard's runs list, ``GET /pipeline-runs``, over a store of many runs (SQLite).

    The store is filled like ``search_10k``'s; the page is fetched through the real app with
    Starlette's TestClient (no network), first call apart, then the median of repeats, also
    with a status filter.
    """
    from fastapi.testclient import TestClient

    from pipetrail.server import create_app

    runs = _search_corpus(sizes.search_runs)
    ws = _workspace(home)
    try:
        _load_search_runs(ws, runs)
        client = TestClient(create_app(ws))
        figures: list[Figure] = []
        for label, path in (("list", "/pipeline-runs"), ("failed", "/pipeline-runs?status=failed")):
            started = time.perf_counter()
            first = client.get(path)
            cold = (time.perf_counter() - started) * 1000
            if first.status_code != 200 or "pipeline" not in first.text:
                raise VerificationError(f"GET {path} answered {first.status_code}")
            walls = []
            for _ in range(sizes.search_repeats):
                started = time.perf_counter()
                client.get(path)
                walls.append((time.perf_counter() - started) * 1000)
            figures.append(
                Figure(
                    f"list_page_10k.{label}",
                    statistics.median(walls),
                    "ms",
                    "<",
                    200.0,
                    note=f"GET {path} over {len(runs)} runs, median of {len(walls)}",
                )
            )
            figures.append(Figure(f"list_page_10k.{label}_cold", cold, "ms", note="first request"))
        client.close()
    finally:
        ws.close()
    return Outcome(figures, {"runs": len(runs)})


@dataclass(frozen=True)
class _SearchRun:
    params: dict[str, Any]
    accuracy: list[float]
    phase: str
    status: str


def _search_corpus(n: int) -> list[_SearchRun]:
    """``n`` runs: a few params, three metrics with short histories, a phase tag; seeded."""
    import random

    rng = random.Random(20240501)
    runs = []
    for _ in range(n):
        final = rng.uniform(0.5, 1.0)
        runs.append(
            _SearchRun(
                params={
                    "lr": rng.choice([0.001, 0.01, 0.1]),
                    "optimizer": {"name": rng.choice(["adam", "sgd", "rmsprop"])},
                    "epochs": rng.randint(5, 50),
                },
                accuracy=[final * f for f in (0.6, 0.8, 0.9, 0.95, 1.0)],
                phase=rng.choice(["experiment", "baseline"]),
                status="completed" if rng.random() < 0.8 else "failed",
            )
        )
    return runs


def _search_backend(
    backend: str, ws: Workspace, runs: list[_SearchRun], repeats: int, details: dict[str, Any]
) -> list[Figure]:
    from pipetrail.storage.metadata.base import RunQuery

    started = time.perf_counter()
    ids = _load_search_runs(ws, runs)
    load_s = time.perf_counter() - started
    query = RunQuery(filter=SEARCH_FILTER, order_by=SEARCH_ORDER, limit=SEARCH_LIMIT)
    expected = sorted(
        (
            (-r.accuracy[-1], -run_id)
            for run_id, r in zip(ids, runs, strict=True)
            if r.accuracy[-1] > 0.9
            and r.params["lr"] == 0.01
            and r.phase == "experiment"
            and r.status == "completed"
        )
    )
    timings: list[float] = []
    for attempt in range(repeats + 1):
        started = time.perf_counter()
        found = ws.store.list_runs(query)
        timings.append(time.perf_counter() - started)
        if attempt == 0 and [r.id for r in found] != [-i for _, i in expected[:SEARCH_LIMIT]]:
            raise VerificationError(
                f"{backend}: search returned {len(found)} runs "
                f"{[r.id for r in found][:5]}..., expected {len(expected[:SEARCH_LIMIT])} "
                f"{[-i for _, i in expected][:5]}..."
            )
    cold, warm = timings[0], timings[1:]
    details[backend] = {
        "load_s": load_s,
        "matching_runs": len(expected),
        "cold_s": cold,
        "query_s": warm,
    }
    name = f"search_10k.{backend}"
    return [
        Figure(
            f"{name}_query",
            statistics.median(warm) * 1000,
            "ms",
            "<",
            100,
            f"list_runs(filter, order_by, limit={SEARCH_LIMIT}) over {len(runs)} runs "
            f"({len(expected)} match), median of {len(warm)}, no ANALYZE after loading",
        ),
        Figure(f"{name}_cold", cold * 1000, "ms", note="first call: compiles the statement"),
        Figure(
            f"{name}_load",
            load_s,
            "s",
            note="run 0 via the store, the rest BULK-INSERTED rows + add_metrics batches",
        ),
    ]


def _load_search_runs(ws: Workspace, runs: list[_SearchRun]) -> list[int]:
    """Store ``runs``; returns their ids in order.

    Run 0 goes through the store's own methods. Creating 10,000 runs that way takes minutes
    (a handful of transactions each), so runs 1..N-1 are BULK-INSERTED here with SQLAlchemy:
    rows shaped like run 0's (same pipeline and version, params flattened by the store's own
    helper, one task each), with their metric points then logged through ``store.add_metrics``
    in batches, which keeps latest / min / max per series as in real runs.
    """
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert, select

    import pipetrail as pt
    from pipetrail.core.status import RunStatus
    from pipetrail.storage.metadata.base import MetricRow, NewRun
    from pipetrail.storage.metadata.sql.runs import _flat_params, _param_row
    from pipetrail.storage.metadata.sql.tables import block_run, pipeline_run, run_param, run_tag

    store = ws.store
    spec = pt.Pipeline("search", [pt.step(_train)]).spec
    first = runs[0]
    run = store.create_run(
        NewRun(
            spec=spec,
            params=first.params,
            param_types={"lr": "float", "optimizer": "dict", "epochs": "int"},
            variables={},
            user="bench",
            host="bench",
            trigger="cli",
            user_tags=(f"phase:{first.phase}",),
            system_tags=("user:bench",),
        )
    )
    key = ("train", 0, 0)
    task_ids = {run.id: store.create_tasks(run.id, [key])[key]}
    store.set_run_status(run.id, RunStatus.RUNNING)
    store.set_run_status(run.id, RunStatus(first.status))
    rest = runs[1:]
    with store.engine.begin() as conn:
        template = dict(
            conn.execute(select(pipeline_run).where(pipeline_run.c.id == run.id)).mappings().one()
        )
        del template["id"]
        now = datetime.now(UTC)
        conn.execute(
            insert(pipeline_run),
            [
                {
                    **template,
                    "params": r.params,
                    "status": r.status,
                    "created_at": now + timedelta(milliseconds=i),
                    "started_at": now + timedelta(milliseconds=i),
                    "finished_at": now + timedelta(milliseconds=i, seconds=30),
                    "duration_s": 30.0,
                }
                for i, r in enumerate(rest, 1)
            ],
        )
        ids = list(
            conn.execute(
                select(pipeline_run.c.id).where(pipeline_run.c.id > run.id).order_by("id")
            ).scalars()
        )
        if len(ids) != len(rest):
            raise VerificationError(f"bulk insert stored {len(ids)} runs of {len(rest)}")
        conn.execute(
            insert(run_param),
            [
                _param_row(i, k, v)
                for i, r in zip(ids, rest, strict=True)
                for k, v in _flat_params(r.params)
            ],
        )
        conn.execute(
            insert(run_tag),
            [
                {"run_id": i, "tag": tag, "system": system}
                for i, r in zip(ids, rest, strict=True)
                for tag, system in ((f"phase:{r.phase}", False), ("user:bench", True))
            ],
        )
        conn.execute(
            insert(block_run),
            [
                {
                    "run_id": i,
                    "step": "train",
                    "task_index": 0,
                    "attempt": 0,
                    "status": "completed",
                    "created_at": now,
                    "allowed_failure": False,
                }
                for i in ids
            ],
        )
        rows = conn.execute(
            select(block_run.c.run_id, block_run.c.id).where(block_run.c.run_id.in_(ids))
        )
        task_ids.update({run_id: task_id for run_id, task_id in rows})
    all_ids = [run.id, *ids]
    base = time.time()
    points = [
        MetricRow(i, task_ids[i], name, value, step, base + step)
        for i, r in zip(all_ids, runs, strict=True)
        for name, series in (
            ("accuracy", r.accuracy),
            ("loss", [1 - a for a in r.accuracy]),
            ("f1", [a * 0.97 for a in r.accuracy]),
        )
        for step, value in enumerate(series)
    ]
    for start in range(0, len(points), 20_000):
        store.add_metrics(points[start : start + 20_000])
    return all_ids


def _train(lr: float = 0.01) -> float:
    return lr


@contextlib.contextmanager
def _bench_pg_database(admin_url: str) -> Iterator[tuple[str | None, str]]:
    """A fresh database ``pipetrail_bench_<pid>`` on the server of ``admin_url``, dropped after.

    Yields ``(url, "")``, or ``(None, reason)`` when the server cannot be reached.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"pipetrail_bench_{os.getpid()}"
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no driver, no server, no rights: report, do not crash the suite
        yield None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False), ""
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# -- measurement helpers -----------------------------------------------------------------------


def _disk_bytes(root: Path) -> int:
    """Apparent bytes of the files under ``root``, each inode counted once (hard links)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            info = os.lstat(os.path.join(folder, name))
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total


def _warm_page_pool(nbytes: int) -> None:
    """Touch and free a bit more than ``nbytes`` of memory just before a timed write.

    On VMs with free-page reporting (Firecracker here) pages that sat free for a few seconds go
    back to the host, and the page cache's first touch of them runs at ~400 MB/s instead of
    ~4 GB/s, whatever writes them. Freeing freshly touched pages first makes the write land on
    resident ones, so the figure measures pipetrail rather than the hypervisor.
    """
    import numpy as np

    scratch = np.ones(int(nbytes * 1.1) // 8)
    del scratch


def _tmp_files(root: Path) -> list[str]:
    tmp = root / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def _median_wall(cmd: list[str], repeats: int, cwd: Path, env: dict[str, str]) -> float:
    walls = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise VerificationError(f"{cmd} exited {done.returncode}: {done.stderr[-500:]}")
    return statistics.median(walls)


_IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def _importtime_top(stderr: str, top: int = 10) -> dict[str, Any]:
    """Heaviest modules (cumulative) and packages (summed self time) from ``-X importtime``."""
    modules: list[tuple[str, int, int]] = []
    for line in stderr.splitlines():
        match = _IMPORTTIME.match(line)
        if match:
            modules.append((match.group(4), int(match.group(1)), int(match.group(2))))
    packages: dict[str, int] = {}
    for name, self_us, _ in modules:
        root = name.split(".")[0]
        packages[root] = packages.get(root, 0) + self_us
    heaviest = sorted(modules, key=lambda m: m[2], reverse=True)[:top]
    return {
        "total_ms": max((m[2] for m in modules), default=0) / 1000,
        "packages_self_ms": {
            k: v / 1000
            for k, v in sorted(packages.items(), key=lambda kv: kv[1], reverse=True)[:top]
        },
        "modules_cumulative_ms": {name: cum / 1000 for name, _, cum in heaviest},
    }


ScenarioFn = Callable[[Path, Sizes], Outcome]

SCENARIOS: dict[str, ScenarioFn] = {
    "chain20_inline": lambda home, sizes: chain(home, sizes, "inline"),
    "chain20_process": lambda home, sizes: chain(home, sizes, "process"),
    "chain20_dask": lambda home, sizes: __import__("dask_bench").chain_dask(home, sizes),
    "fanout100_inline": lambda home, sizes: fanout(home, sizes, "inline"),
    "fanout100_process": lambda home, sizes: fanout(home, sizes, "process"),
    "metrics_100k": metrics,
    "metrics_batched": lambda home, sizes: metrics(home, sizes, batched=True),
    "artifact_200mb": artifact,
    "artifact_200mb_s3": lambda home, sizes: __import__("s3_bench").artifact_s3(home, sizes),
    "import_time": import_time,
    "run_record_read": run_record_read,
    "search_10k": search,
    "list_page_10k": list_page,
    "reads": lambda home, sizes: read_bench.reads(home, sizes),
    "growth": lambda home, sizes: __import__("growth_bench").growth(home, sizes),
    "scheduler": lambda home, sizes: scheduler_bench.scheduler(home, sizes),
    "pg_million": lambda home, sizes: scale_bench.pg_million(home, sizes),
}
