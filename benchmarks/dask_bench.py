"""Per-step overhead on the Dask executor: the 20-step chain of ``chain`` on a local cluster."""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from scenarios import Figure, VerificationError

if TYPE_CHECKING:
    from scenarios import Outcome, Sizes

    from pipetrail.dsl import Pipeline
    from pipetrail.workspace import Workspace

__all__ = ["chain_dask"]


def chain_dask(home: Path, sizes: Sizes) -> Outcome:
    """A chain of no-op steps on a local Dask cluster (two workers of one thread).

    Each run starts its own local cluster, as ``pipetrail run --executor dask`` does, so
    ``per_step`` carries the cluster start; ``steady_per_step`` is the cost of one step once
    the cluster is up: a Dask future, the worker's check of the task row, the step in its
    warm child process, the outcome back and recorded.
    """
    import flowgen
    from scenarios import _dag_overhead, _load

    from pipetrail.config import Settings
    from pipetrail.workspace import Workspace

    pipeline = _load(flowgen.write_chain(home / "flows", sizes.chain_steps), "chain")
    ws = Workspace(Settings.for_home(home / "store", max_workers=2))
    try:
        outcome = _dag_overhead("chain20_dask", "dask", pipeline, ws, sizes.chain_repeats)
        warm = _on_one_cluster(pipeline, ws, sizes.chain_repeats)
    finally:
        ws.close()
    # A run that starts its own cluster pays seconds for it: information, not a per-step cost.
    outcome.figures = [
        replace(f, target=None, note=f.note + " (each run starts its own local cluster)")
        if f.name.endswith((".per_step", ".first_run_per_step"))
        else f
        for f in outcome.figures
    ]
    n = len(pipeline.steps)
    outcome.figures.append(
        Figure(
            "chain20_dask.warm_cluster_per_step",
            statistics.median(warm[1:] or warm) / n * 1000,
            "ms",
            "<",
            50.0,
            f"median of runs 2..{len(warm)} on one cluster (as on a team's): wall / steps",
        )
    )
    outcome.details["warm_cluster_walls_s"] = warm
    return outcome


def _on_one_cluster(pipeline: Pipeline, ws: Workspace, repeats: int) -> list[float]:
    """Walls of runs that share one local cluster (connected once, as to a scheduler)."""
    from pipetrail.runtime.engine import Engine, RunRequest
    from pipetrail.runtime.executors.dask import DaskExecutor, WorkerStores, connect

    s = ws.settings
    cluster = connect(None, 2)
    stores = WorkerStores.of(s.db_url, s.artifacts_url, s.artifacts_options, s.system_metrics_s)
    engine = Engine(
        ws.services(), lambda _: DaskExecutor(stores, cluster, owned=False, store=ws.store)
    )
    walls = []
    try:
        for _ in range(repeats + 1):
            started = time.perf_counter()
            run = engine.run(RunRequest(pipeline=pipeline, params=pipeline.resolve_params({})))
            walls.append(time.perf_counter() - started)
            if run.status.value != "completed":
                raise VerificationError(f"run {run.pathspec} ended {run.status.value}: {run.error}")
    finally:
        cluster.close()
    return walls[1:]  # the first one warms the workers
