"""Fill a metadata store with many realistic runs through the store's bulk API (``import_runs``).

Usage: ``python benchmarks/seed.py --runs 1000000 --db postgresql+psycopg://…/db [--batch 5000]
[--jobs 2]``.

Runs of a few pipelines, 5 params and 5 metrics each (one task that logged them), with a
realistic spread of statuses (mostly completed, some failed and cancelled, a few still
running or waiting), users, tags and times (over the last year, newest last). Seeded, so two
stores seeded alike hold the same runs. Prints the rate; exits 2 on a bad argument.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipetrail.storage.metadata.base import ImportedRun, MetadataStore

PIPELINES = ("train-classifier", "etl-daily", "feature-build", "evaluate")
USERS = ("ana", "bo", "chen", "dara", "eli", "ci")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
METRICS = ("accuracy", "loss", "f1", "precision", "recall")
#: (status, share of runs): most complete, some fail or are cancelled, a few still go.
STATUS_MIX = (
    ("completed", 0.82),
    ("failed", 0.11),
    ("cancelled", 0.04),
    ("running", 0.02),
    ("initial", 0.01),
)
SPAN = timedelta(days=365)


@dataclass(frozen=True)
class SeedResult:
    """What a seeding did: runs written, seconds taken, the ids of the first and last."""

    runs: int
    seconds: float
    first_id: int
    last_id: int

    @property
    def rate(self) -> float:
        return self.runs / self.seconds if self.seconds else float("inf")


def _spec(name: str) -> object:
    import pipetrail as pt

    def train(lr: float = 0.01, batch_size: int = 32, epochs: int = 10) -> float:
        return lr

    def load(source: str = "s3://data") -> str:
        return source

    return pt.Pipeline(name, [pt.step(load), pt.step(train)]).spec


def runs(count: int, *, seed: int = 12, end: datetime | None = None) -> Iterator[ImportedRun]:
    """``count`` seeded runs, created evenly over the year before ``end`` (oldest first)."""
    from pipetrail.core.status import RunStatus, TaskStatus
    from pipetrail.storage.metadata.base import ImportedRun, ImportedTask, NewRun

    rng = random.Random(seed)
    end = end or datetime.now(UTC)
    start = end - SPAN
    step_s = SPAN.total_seconds() / max(count, 1)
    specs = {name: _spec(name) for name in PIPELINES}
    statuses = [RunStatus(s) for s, _ in STATUS_MIX]
    weights = [w for _, w in STATUS_MIX]
    for i in range(count):
        name = PIPELINES[rng.randrange(len(PIPELINES))]
        user = USERS[rng.randrange(len(USERS))]
        created = start + timedelta(seconds=i * step_s)
        # The newest runs are the ones still going; older ones have all ended.
        mixed = i >= count - 500
        status = RunStatus(rng.choices(statuses, weights)[0] if mixed else _ended(rng))
        params = {
            "lr": rng.choice((0.0001, 0.001, 0.003, 0.01, 0.03, 0.1)),
            "batch_size": rng.choice((16, 32, 64, 128)),
            "epochs": rng.randint(1, 50),
            "optimizer": OPTIMIZERS[rng.randrange(3)],
            "dropout": round(rng.uniform(0.0, 0.5), 3),
        }
        quality = rng.betavariate(8, 2)
        started = created + timedelta(seconds=rng.uniform(0.1, 5)) if status != "initial" else None
        duration = rng.lognormvariate(4, 1)
        finished = started + timedelta(seconds=duration) if started else None
        ended = status in ("completed", "failed", "cancelled")
        if not ended:
            finished = None
        stamp = (started or created).timestamp() + 1
        metrics = [
            ("accuracy", quality, 0, stamp),
            ("loss", 1 - quality + rng.uniform(0, 0.1), 0, stamp),
            ("f1", quality * rng.uniform(0.9, 1.0), 0, stamp),
            ("precision", quality * rng.uniform(0.9, 1.05), 0, stamp),
            ("recall", quality * rng.uniform(0.85, 1.0), 0, stamp),
        ]
        task_status = {
            RunStatus.COMPLETED: TaskStatus.COMPLETED,
            RunStatus.FAILED: TaskStatus.FAILED,
            RunStatus.CANCELLED: TaskStatus.CANCELLED,
            RunStatus.RUNNING: TaskStatus.RUNNING,
            RunStatus.INITIAL: TaskStatus.INITIAL,
        }[status]
        failed = status is RunStatus.FAILED
        task = ImportedTask(
            step="train",
            status=task_status,
            started_at=started,
            finished_at=finished,
            cpu_time_s=duration * rng.uniform(0.5, 1.9) if finished else None,
            peak_memory_bytes=rng.randint(50, 4000) * 1_000_000 if finished else None,
            exception_type="ValueError" if failed else None,
            exception_message="loss went to nan" if failed else None,
            host=f"worker-{rng.randrange(8)}" if started else None,
            pid=rng.randint(1000, 60000) if started else None,
            metrics=metrics if started else (),
        )
        tags = [f"team:{rng.choice(('vision', 'nlp', 'ops'))}"]
        if rng.random() < 0.3:
            tags.append(rng.choice(("phase:baseline", "phase:experiment", "release")))
        yield ImportedRun(
            new=NewRun(
                spec=specs[name],  # type: ignore[arg-type]
                params=params,
                param_types={
                    "lr": "float",
                    "batch_size": "int",
                    "epochs": "int",
                    "optimizer": "str",
                    "dropout": "float",
                },
                variables={},
                user=user,
                host=f"laptop-{user}",
                trigger="cli" if rng.random() < 0.7 else "cron",
                user_tags=tuple(tags),
                system_tags=(f"user:{user}", "runtime:python3.11"),
            ),
            status=status,
            created_at=created,
            started_at=started,
            finished_at=finished,
            error="step 'train' failed: ValueError: loss went to nan" if failed else None,
            tasks=[task],
        )


def _ended(rng: random.Random) -> str:
    roll = rng.random()
    return "completed" if roll < 0.85 else "failed" if roll < 0.96 else "cancelled"


def seed(
    store: MetadataStore,
    count: int,
    *,
    batch: int = 5000,
    seed: int = 12,
    progress: bool = False,
    end: datetime | None = None,
    part: tuple[int, int] = (0, 1),
) -> SeedResult:
    """Write ``count`` runs into ``store`` with ``import_runs``, ``batch`` per transaction.

    ``part`` ``(k, n)``: only batches k, k+n, k+2n, … (n processes seed one store together).
    """
    end = end or datetime.now(UTC)
    started = time.perf_counter()
    first = last = 0
    pending: list[ImportedRun] = []
    written = 0
    index, parts = part
    for number, run in enumerate(runs(count, seed=seed, end=end)):
        if (number // batch) % parts != index:
            continue
        pending.append(run)
        if len(pending) >= batch:
            ids = store.import_runs(pending)
            first, last = first or ids[0], ids[-1]
            written += len(ids)
            pending.clear()
            if progress:
                elapsed = time.perf_counter() - started
                print(
                    f"  {written * parts:,} runs, {written * parts / elapsed:,.0f} runs/s",
                    file=sys.stderr,
                    flush=True,
                )
    if pending:
        ids = store.import_runs(pending)
        first, last = first or ids[0], ids[-1]
        written += len(ids)
    return SeedResult(written, time.perf_counter() - started, first, last)


def seed_url(
    url: str,
    count: int,
    *,
    batch: int = 5000,
    jobs: int = 1,
    rng_seed: int = 12,
    progress: bool = False,
) -> SeedResult:
    """Seed the store at ``url`` from ``jobs`` processes (each its own connection)."""
    from pipetrail.storage.metadata.sql.store import SqlMetadataStore

    end = datetime.now(UTC)
    SqlMetadataStore(url).close()  # migrate once, before the jobs start
    started = time.perf_counter()
    if jobs == 1:
        store = SqlMetadataStore(url, migrate_schema=False)
        try:
            result = seed(store, count, batch=batch, seed=rng_seed, progress=progress, end=end)
        finally:
            store.close()
        return result
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs) as pool:
        futures = [
            pool.submit(
                _seed_part, url, count, batch, rng_seed, end, (k, jobs), progress and k == 0
            )
            for k in range(jobs)
        ]
        results = [f.result() for f in futures]
    return SeedResult(
        sum(r.runs for r in results),
        time.perf_counter() - started,
        min(r.first_id for r in results if r.runs),
        max(r.last_id for r in results),
    )


def _seed_part(
    url: str,
    count: int,
    batch: int,
    seed_: int,
    end: datetime,
    part: tuple[int, int],
    progress: bool,
) -> SeedResult:
    from pipetrail.storage.metadata.sql.store import SqlMetadataStore

    store = SqlMetadataStore(url, migrate_schema=False)
    try:
        return seed(store, count, batch=batch, seed=seed_, progress=progress, end=end, part=part)
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, required=True, help="how many runs to write")
    parser.add_argument("--db", required=True, help="SQLAlchemy URL of the store (PIPETRAIL_DB)")
    parser.add_argument("--batch", type=int, default=5000, help="runs per transaction")
    parser.add_argument("--seed", type=int, default=12, help="random seed")
    parser.add_argument("--jobs", type=int, default=2, help="processes writing at once")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs {args.runs} must be at least 1")
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs} must be at least 1")
    if args.batch < 1:
        parser.error(f"--batch {args.batch} must be at least 1")

    from pipetrail.errors import PipetrailError

    try:
        result = seed_url(
            args.db, args.runs, batch=args.batch, jobs=args.jobs, rng_seed=args.seed, progress=True
        )
    except PipetrailError as exc:
        print(f"seed: {exc}", file=sys.stderr)
        return 1
    print(
        f"seeded {result.runs:,} runs (ids {result.first_id}..{result.last_id}) in "
        f"{result.seconds:.1f} s: {result.rate:,.0f} runs/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
