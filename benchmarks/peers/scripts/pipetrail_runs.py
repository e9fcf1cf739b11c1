"""pipetrail: create many one-step runs (5 params, 5 metrics), then list and search them.

Each run is ``pt.run`` of a one-step pipeline in this process (``executor="inline"``, the
way MLflow records: no worker processes). Then the 100 newest runs of the pipeline are read
with ``islice(pt.Pipeline(name), 100)``, and a filtered, ordered search reads each found
run's metrics.
"""

from __future__ import annotations

from itertools import islice

import kit

import pipetrail as pt


@pt.step
def train(
    lr: float = 0.01,
    batch_size: int = 32,
    epochs: int = 10,
    optimizer: str = "adam",
    dropout: float = 0.1,
) -> None:
    params = {"lr": lr, "batch_size": batch_size, "epochs": epochs}
    pt.log_metrics(kit.run_metrics({**params, "optimizer": optimizer, "dropout": dropout}))


pipeline = pt.Pipeline("train", [train])


def create(n: int) -> None:
    for i in range(n):
        run = pt.run(pipeline, kit.run_params(i), executor="inline")
        if run.status != "completed":
            raise kit.CheckError(f"run {run.pathspec} ended {run.status}: {run.error}")


def newest() -> list[tuple[int, str]]:
    return [(run.id, run.status) for run in islice(pt.Pipeline("train"), 100)]


def search() -> list[dict[str, float]]:
    found = pt.search_runs(
        f"params.lr = {kit.SEARCH_LR}",
        order_by=["metrics.accuracy desc"],
        limit=None,
        pipeline="train",
    )
    return [run.metrics for run in found]


def main() -> None:
    sizes = kit.sizes()
    n = sizes["runs"]
    # Open (create) the store first, as MLflow's set_experiment creates its database.
    kit.check(pt.Pipeline("train").latest_run is None, "the store is not empty")
    create_s, _ = kit.timed(lambda: create(n))
    listed = kit.repeat(newest, sizes["read_repeats"])
    kit.check(len(listed.result) == min(n, 100), f"listed {len(listed.result)} runs of {n}")
    found = kit.repeat(search, sizes["read_repeats"])
    expected = kit.matching(n)
    kit.check(len(found.result) == expected, f"search found {len(found.result)}, not {expected}")
    kit.check(all(len(m) == 5 for m in found.result), "a found run lacks some of its 5 metrics")
    kit.report(
        {
            "create_runs_s": create_s,
            "list_100_ms": listed.median * 1000,
            "search_ms": found.median * 1000,
        },
        found=expected,
        list_s=listed.walls,
        search_s=found.walls,
        list_first_s=listed.first,
        search_first_s=found.first,
    )


if __name__ == "__main__":
    main()
