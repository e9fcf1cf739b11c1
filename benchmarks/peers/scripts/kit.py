"""The measuring kit copied next to every peer scenario's script: sizes in, a result out.

Standard library only (numpy where a scenario already has it): the same file runs in
pipetrail's, Kedro's and MLflow's virtualenvs, so each tool is timed by the same code.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SEARCH_LR",
    "CheckError",
    "Repeated",
    "check",
    "disk_bytes",
    "matching",
    "median",
    "repeat",
    "report",
    "run_metrics",
    "run_params",
    "sizes",
    "timed",
    "warm_page_pool",
]

LRS = (0.0001, 0.001, 0.003, 0.01, 0.03, 0.1)
#: The searches look for this learning rate: one run in six has it (833 of 5,000).
SEARCH_LR = 0.01
OPTIMIZERS = ("adam", "sgd", "rmsprop")


class CheckError(Exception):
    """The scenario ran but its outcome is wrong (a failed run, a missing output)."""


def sizes() -> dict[str, Any]:
    """The workload sizes the driver wrote into ``sizes.json`` in the scenario's folder."""
    loaded: dict[str, Any] = json.loads(Path("sizes.json").read_text())
    return loaded


def check(ok: bool, message: str) -> None:
    """Stop the scenario with ``message`` unless ``ok``: a wrong result is not a figure."""
    if not ok:
        raise CheckError(message)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn()`` took (wall clock), and what it returned."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def median(values: list[float]) -> float:
    return statistics.median(values)


def disk_bytes(root: Path, skip: tuple[str, ...] = (".git",)) -> int:
    """Apparent bytes of the files under ``root``, each inode once (hard links), ``skip`` not."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in names:
            info = os.lstat(os.path.join(folder, name))
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total


def warm_page_pool(nbytes: int) -> None:
    """Touch and free a bit more than ``nbytes`` of memory right before a timed write.

    On VMs with free-page reporting, pages free for a few seconds go back to the host and the
    page cache's first touch of them is ~10x slower, whoever writes. Every tool gets the same
    treatment (benchmarks/scenarios.py explains the measurement).
    """
    import numpy as np

    scratch = np.ones(int(nbytes * 1.1) // 8)
    del scratch


def run_params(i: int) -> dict[str, Any]:
    """The 5 parameters of the ``i``-th created run (the same for every tool)."""
    return {
        "lr": LRS[i % len(LRS)],
        "batch_size": (16, 32, 64, 128)[i % 4],
        "epochs": 1 + i % 50,
        "optimizer": OPTIMIZERS[i % len(OPTIMIZERS)],
        "dropout": round((i % 10) / 20, 2),
    }


def run_metrics(params: dict[str, Any]) -> dict[str, float]:
    """The 5 metrics a created run with ``params`` logs, one point each (seeded by them)."""
    import random

    rng = random.Random(json.dumps(params, sort_keys=True))
    quality = rng.betavariate(8, 2)
    return {
        "accuracy": quality,
        "loss": 1 - quality + rng.uniform(0, 0.1),
        "f1": quality * rng.uniform(0.9, 1.0),
        "precision": quality * rng.uniform(0.9, 1.05),
        "recall": quality * rng.uniform(0.85, 1.0),
    }


def matching(n: int) -> int:
    """How many of the first ``n`` created runs have ``lr`` = :data:`SEARCH_LR`."""
    return sum(1 for i in range(n) if run_params(i)["lr"] == SEARCH_LR)


@dataclass(frozen=True)
class Repeated:
    """A read timed ``repeats`` times after one first (cold) call: its walls and its result."""

    first: float
    walls: list[float]
    result: Any

    @property
    def median(self) -> float:
        return statistics.median(self.walls)


def repeat(fn: Callable[[], Any], repeats: int) -> Repeated:
    """Call ``fn`` once (compiles statements, fills caches), then time ``repeats`` more calls."""
    first, result = timed(fn)
    walls = [timed(fn)[0] for _ in range(repeats)]
    return Repeated(first, walls, result)


def report(figures: dict[str, float], **details: Any) -> None:
    """Write the scenario's figures (and raw measurements) to ``result.json`` for the driver."""
    document = {"figures": figures, "details": details}
    Path("result.json").write_text(json.dumps(document, indent=2, default=str))
