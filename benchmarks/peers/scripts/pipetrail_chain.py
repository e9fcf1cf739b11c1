"""pipetrail: a chain of no-op steps run in process with ``pt.run``, several times.

``chain.py`` next to this script (written by benchmarks/flowgen.py) defines the pipeline, as
a user's project keeps its pipeline in a module of its own.
"""

from __future__ import annotations

import kit
from chain import chain

import pipetrail as pt


def main() -> None:
    sizes = kit.sizes()
    steps = len(chain.steps)
    walls = []
    for _ in range(sizes["chain_repeats"] + 1):
        wall, run = kit.timed(lambda: pt.run(chain, executor="inline"))
        walls.append(wall)
        done = [s.name for s in run if s.status == "completed"]
        kit.check(
            run.status == "completed" and len(done) == steps,
            f"run {run.pathspec} ended {run.status} with {len(done)} of {steps} steps completed",
        )
    # The first run pays the one-time imports; the figure is the median of the others.
    kit.report({"chain_per_step_ms": kit.median(walls[1:]) / steps * 1000}, walls_s=walls)


if __name__ == "__main__":
    main()
