"""How pipetrail's costs grow with the store: the same reads and runs at 10 and at 100,000 runs.

Scenario ``growth`` (in ``make bench``; not in ``make test``): two fresh SQLite stores, one
seeded with 10 runs and one with 100,000 (``--quick``: 2,000; ``PIPETRAIL_GROWTH_RUNS``
overrides) through benchmarks/seed.py (``import_runs``, the store's bulk API). In each it
times the per-step overhead of the 20-step no-op chain (inline), ``pt.Run(pathspec)`` with
params and metrics, and listing a pipeline's 100 newest runs with ``islice(pt.Pipeline(name),
100)``. Figures are the ratios large/small: per-step and ``pt.Run`` should stay flat, listing
grow at most logarithmically (ratio below log(large) / log(small)).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scenarios import Figure, Outcome, Sizes

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
    repeats = 5 if quick else 30
    measured = {n: _measure(home / f"store-{n}", n, sizes, repeats) for n in (SMALL, large)}
    small, big = measured[SMALL], measured[large]
    log_limit = math.log(large) / math.log(SMALL)
    figures: list[Figure] = [
        Figure(
            "growth.seed_rate",
            big["seed_rate"],
            "runs/s",
            note=f"{large:,} runs into SQLite via import_runs (benchmarks/seed.py), 1 process",
        )
    ]
    cases = (
        ("per_step", "ms", FLAT, "20-step no-op chain, inline: wall / steps, median of runs 2.."),
        ("run_read", "ms", FLAT, "pt.Run(pathspec) + params + metrics, warm median"),
        ("list_100", "ms", log_limit, f"islice(pt.Pipeline({LISTED!r}), 100), warm median"),
    )
    for name, unit, limit, note in cases:
        small_note, big_note = f"{note}; {SMALL} runs", f"{note}; {large:,} runs"
        if name == "list_100":  # a small store's pipeline has fewer than 100 runs to list
            small_note += f" (lists {small['listed']})"
            big_note += f" (lists {big['listed']})"
        figures += [
            Figure(f"growth.{name}_{SMALL}", small[name], unit, note=small_note),
            Figure(f"growth.{name}_{large}", big[name], unit, note=big_note),
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
    return Outcome(figures, {"large": large, "repeats": repeats, "measured": measured})


def _measure(home: Path, count: int, sizes: Sizes, repeats: int) -> dict[str, Any]:
    import flowgen
    import seed
    from scenarios import VerificationError, _load, _timed_run, _workspace

    import pipetrail as pt

    ws = _workspace(home)
    try:
        seeded = seed.seed(ws.store, count)
        if seeded.runs != count:
            raise VerificationError(f"seeded {seeded.runs} runs of {count}")
        reader = ws.reader()
        chain = _load(flowgen.write_chain(home / "flows", sizes.chain_steps), "chain")
        walls = [_timed_run(chain, ws, "inline")[1] for _ in range(sizes.chain_repeats + 1)]
        middle = ws.store.get_run(seeded.first_id + count // 2)

        def run_read() -> tuple[Any, Any]:
            run = pt.Run(middle.pathspec, reader=reader)
            return run.params, run.metrics

        params, metrics = run_read()
        if len(params) != 5 or (middle.status != "initial" and len(metrics) != 5):
            raise VerificationError(f"{middle.pathspec}: params {params}, metrics {metrics}")

        pt.namespace(None)  # the seeded runs are several users': list everyone's

        def listing() -> list[tuple[int, str]]:
            return [(r.id, r.status) for r in islice(pt.Pipeline(LISTED, reader=reader), 100)]

        listed = listing()
        ids = [i for i, _ in listed]
        if not listed or ids != sorted(ids, reverse=True):
            raise VerificationError(f"listing {LISTED} gave {ids[:5]}... (newest first expected)")
        return {
            "seed_rate": seeded.rate,
            "per_step": statistics.median(walls[1:]) / sizes.chain_steps * 1000,
            "run_read": _median_ms(run_read, repeats),
            "list_100": _median_ms(listing, repeats),
            "listed": len(listed),
            "chain_walls_s": walls,
        }
    finally:
        ws.close()


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm: compiles the statements
    walls = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        walls.append((time.perf_counter() - started) * 1000)
    return statistics.median(walls)
