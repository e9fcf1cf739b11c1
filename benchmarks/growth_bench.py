"""How pipetrail's costs grow with the store: the same reads and runs at 10 and at 100,000 runs.

Scenario ``growth`` (in ``make bench``; not in ``make test``): two fresh SQLite stores, one
seeded with 10 runs and one with 100,000 (``--quick``: 2,000; ``PIPETRAIL_GROWTH_RUNS``
overrides) through benchmarks/seed.py (``import_runs``, the store's bulk API). In each it
times the per-step overhead of the 20-step no-op chain (inline), ``pt.Run(pathspec)`` with
params and metrics, and listing a pipeline's 100 newest runs with ``islice(pt.Pipeline(name),
100)``. The two stores are measured in alternation, round after round, so a change in the
machine's load hits both alike. Figures are the ratios large/small: per-step and ``pt.Run``
should stay flat, listing grow at most logarithmically (ratio below log(large) / log(small)).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scenarios import Figure, Outcome, Sizes

    from pipetrail.client import Reader
    from pipetrail.dsl import Pipeline
    from pipetrail.workspace import Workspace

__all__ = ["growth"]

SMALL = 10
FULL_LARGE = 100_000
QUICK_LARGE = 2_000
#: The pipeline whose runs are listed (benchmarks/seed.py spreads runs over four).
LISTED = "train-classifier"
#: "Flat": the large store may cost this much more than the small one (noise on a busy box).
FLAT = 1.25


def growth(home: Path, sizes: Sizes) -> Outcome:
    """Per-step overhead, ``pt.Run`` and listing in a store of 10 runs and one of many."""
    from scenarios import Figure, Outcome

    quick = sizes.search_runs < 10_000
    large = int(os.environ.get("PIPETRAIL_GROWTH_RUNS", QUICK_LARGE if quick else FULL_LARGE))
    rounds, reads = (2, 3) if quick else (sizes.chain_repeats, 6)
    stores: list[_Store] = []
    try:
        for count in (SMALL, large):
            stores.append(_Store.seeded(home / f"store-{count}", count, sizes))
        for _ in range(rounds):
            for store in stores:
                store.sample(reads)
    finally:
        for store in stores:
            store.ws.close()
    small, big = (s.figures() for s in stores)
    log_limit = math.log(large) / math.log(SMALL)
    figures: list[Figure] = [
        Figure(
            "growth.seed_rate",
            big["seed_rate"],
            "runs/s",
            note=f"{large:,} runs into SQLite via import_runs (benchmarks/seed.py), 1 process",
        )
    ]
    of = f"median of {rounds} rounds alternating the stores"
    cases = (
        ("per_step", FLAT, f"20-step no-op chain, inline: wall / steps, 1 run a round, {of}"),
        ("run_read", FLAT, f"pt.Run(pathspec) + params + metrics, {reads} a round, {of}"),
        ("list_100", log_limit, f"islice(pt.Pipeline({LISTED!r}), 100), {reads} a round, {of}"),
    )
    for name, limit, note in cases:
        small_note, big_note = f"{note}; {SMALL} runs", f"{note}; {large:,} runs"
        if name == "list_100":  # a small store's pipeline has fewer than 100 runs to list
            small_note += f" (lists {small['listed']})"
            big_note += f" (lists {big['listed']})"
        figures += [
            Figure(f"growth.{name}_{SMALL}", small[name], "ms", note=small_note),
            Figure(f"growth.{name}_{large}", big[name], "ms", note=big_note),
            Figure(
                f"growth.{name}_ratio",
                big[name] / small[name],
                "x",
                "<",
                round(limit, 2),
                f"{large:,} runs / {SMALL} runs"
                + (" (flat)" if limit == FLAT else " (at most log growth)"),
            ),
        ]
    measured = {s.count: {**s.figures(), "samples": s.samples} for s in stores}
    return Outcome(
        figures, {"large": large, "rounds": rounds, "reads": reads, "measured": measured}
    )


@dataclass
class _Store:
    """One seeded store and what the rounds measured in it (ms samples per figure)."""

    count: int
    ws: Workspace
    reader: Reader
    chain: Pipeline
    pathspec: str
    steps: int
    seed_rate: float
    listed: int = 0
    samples: dict[str, list[float]] = field(
        default_factory=lambda: {"per_step": [], "run_read": [], "list_100": []}
    )

    @classmethod
    def seeded(cls, home: Path, count: int, sizes: Sizes) -> _Store:
        """A fresh store of ``count`` seeded runs, its chain run once (untimed) and reads warm."""
        import flowgen
        import seed
        from scenarios import VerificationError, _load, _timed_run, _workspace

        import pipetrail as pt

        ws = _workspace(home)
        seeded = seed.seed(ws.store, count)
        if seeded.runs != count:
            ws.close()
            raise VerificationError(f"seeded {seeded.runs} runs of {count}")
        chain = _load(flowgen.write_chain(home / "flows", sizes.chain_steps), "chain")
        _timed_run(chain, ws, "inline")  # the first run pays the one-time imports
        middle = ws.store.get_run(seeded.first_id + count // 2)
        pt.namespace(None)  # the seeded runs are several users': list everyone's
        store = cls(count, ws, ws.reader(), chain, middle.pathspec, sizes.chain_steps, seeded.rate)
        params, metrics = store.run_read()
        if len(params) != 5 or (middle.status != "initial" and len(metrics) != 5):
            raise VerificationError(f"{middle.pathspec}: params {params}, metrics {metrics}")
        listed = store.listing()
        ids = [i for i, _ in listed]
        if not listed or ids != sorted(ids, reverse=True):
            raise VerificationError(f"listing {LISTED} gave {ids[:5]}... (newest first expected)")
        store.listed = len(listed)
        return store

    def run_read(self) -> tuple[Any, Any]:
        import pipetrail as pt

        run = pt.Run(self.pathspec, reader=self.reader)
        return run.params, run.metrics

    def listing(self) -> list[tuple[int, str]]:
        import pipetrail as pt

        return [(r.id, r.status) for r in islice(pt.Pipeline(LISTED, reader=self.reader), 100)]

    def sample(self, reads: int) -> None:
        """One round: a chain run, then of each read one untimed call and ``reads`` timed."""
        from scenarios import _timed_run

        wall = _timed_run(self.chain, self.ws, "inline")[1]
        self.samples["per_step"].append(wall / self.steps * 1000)
        for name, fn in (("run_read", self.run_read), ("list_100", self.listing)):
            fn()  # the first read after a run pays for what the run left (caches, garbage)
            self.samples[name] += [_ms(fn) for _ in range(reads)]

    def figures(self) -> dict[str, Any]:
        medians = {name: statistics.median(v) for name, v in self.samples.items()}
        return {"seed_rate": self.seed_rate, "listed": self.listed, **medians}


def _ms(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000
