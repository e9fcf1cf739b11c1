"""Kedro: a node returns a big NumPy array saved by a versioned PickleDataset; then again.

Versioned, so the second run keeps the first run's output as pipetrail and MLflow do (an
unversioned dataset would overwrite it). A run saving a tiny array goes first, untimed, as
the other tools' warm-up calls do.
"""

from __future__ import annotations

from pathlib import Path

import kit
import numpy as np
from kedro.io import DataCatalog, Version
from kedro.pipeline import node, pipeline
from kedro.runner import SequentialRunner
from kedro_datasets.pickle import PickleDataset

ARRAY = np.random.default_rng(0).random(kit.sizes()["array_mb"] * 1024 * 1024 // 8)


def make() -> np.ndarray:
    return ARRAY


def make_tiny() -> np.ndarray:
    return np.arange(8.0)


def main() -> None:
    project = Path.cwd()
    flow = pipeline([node(make, None, "array", name="make")])
    warmup = pipeline([node(make_tiny, None, "tiny", name="make_tiny")])
    tiny = PickleDataset(filepath="data/tiny.pkl", version=Version(None, None))
    SequentialRunner().run(warmup, DataCatalog({"tiny": tiny}))
    on_disk = [kit.disk_bytes(project)]
    walls = []
    for _ in range(2):
        dataset = PickleDataset(filepath="data/array.pkl", version=Version(None, None))
        catalog = DataCatalog({"array": dataset})
        kit.warm_page_pool(ARRAY.nbytes)
        wall, _ = kit.timed(lambda: SequentialRunner().run(flow, catalog))  # noqa: B023
        walls.append(wall)
        on_disk.append(kit.disk_bytes(project))
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
