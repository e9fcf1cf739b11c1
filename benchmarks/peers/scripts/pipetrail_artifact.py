"""pipetrail: a step returns a big NumPy array (its output is stored); then the same again.

The array exists before the runs, so each timed ``pt.run`` is the cost of storing it as the
step's output (plus the run's recording); the second run's output is deduplicated. A run
storing a tiny array goes first, untimed: it creates the store and loads what a first run
loads, as the other tools' warm-up calls do.
"""

from __future__ import annotations

from pathlib import Path

import kit
import numpy as np

import pipetrail as pt

ARRAY = np.random.default_rng(0).random(kit.sizes()["array_mb"] * 1024 * 1024 // 8)
ARRAYS: dict[str, np.ndarray] = {"big": ARRAY, "tiny": np.arange(8.0)}


@pt.step
def make(which: str = "big") -> np.ndarray:
    return ARRAYS[which]


pipeline = pt.Pipeline("artifact", [make])


def main() -> None:
    project = Path.cwd()
    pt.run(pipeline, {"which": "tiny"}, executor="inline")
    on_disk = [kit.disk_bytes(project)]
    walls = []
    for _ in range(2):
        kit.warm_page_pool(ARRAY.nbytes)
        wall, run = kit.timed(lambda: pt.run(pipeline, executor="inline"))
        walls.append(wall)
        on_disk.append(kit.disk_bytes(project))
        kit.check(run.status == "completed", f"run {run.pathspec} ended {run.status}: {run.error}")
    kit.check(on_disk[1] - on_disk[0] >= ARRAY.nbytes, f"stored only {on_disk[1] - on_disk[0]} B")
    kit.report(
        {
            "artifact_first_s": walls[0],
            "artifact_again_s": walls[1],
            "artifact_again_added_mb": (on_disk[2] - on_disk[1]) / 1e6,
        },
        disk_bytes=on_disk,
        array_bytes=ARRAY.nbytes,
    )


if __name__ == "__main__":
    main()
