"""MLflow: a run saves a big NumPy array as ``.npy`` and logs it as an artifact; then again.

``np.save`` into a temporary folder and ``mlflow.log_artifact`` of the file, inside
``mlflow.start_run`` with an SQLite tracking URI (artifacts in ``./mlruns``). A run logging
a tiny array goes first, untimed, as the other tools' warm-up calls do.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import kit
import mlflow
import numpy as np

ARRAY = np.random.default_rng(0).random(kit.sizes()["array_mb"] * 1024 * 1024 // 8)


def store(array: np.ndarray) -> None:
    with mlflow.start_run(), tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "array.npy"
        np.save(path, array)
        mlflow.log_artifact(str(path))


def main() -> None:
    project = Path.cwd()
    mlflow.set_tracking_uri("sqlite:///mlflow.db")
    mlflow.set_experiment("artifact")
    store(np.arange(8.0))
    on_disk = [kit.disk_bytes(project)]
    walls = []
    for _ in range(2):
        kit.warm_page_pool(ARRAY.nbytes)
        wall, _ = kit.timed(lambda: store(ARRAY))
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
