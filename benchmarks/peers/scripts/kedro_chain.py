"""Kedro: a chain of no-op nodes run with SequentialRunner over MemoryDatasets, several times.

Kedro does not let a node save None, so each no-op returns 1.
"""

from __future__ import annotations

import kit
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node, pipeline
from kedro.runner import SequentialRunner


def noop(*upstream: object) -> int:
    return 1


def build(steps: int) -> Pipeline:
    nodes = [node(noop, None, "s0", name="s0")]
    nodes += [node(noop, f"s{i - 1}", f"s{i}", name=f"s{i}") for i in range(1, steps)]
    return pipeline(nodes)


def main() -> None:
    sizes = kit.sizes()
    steps = sizes["chain_steps"]
    chain = build(steps)
    walls = []
    for _ in range(sizes["chain_repeats"] + 1):
        catalog = DataCatalog({f"s{i}": MemoryDataset() for i in range(steps)})
        wall, outputs = kit.timed(lambda: SequentialRunner().run(chain, catalog))  # noqa: B023
        walls.append(wall)
        kit.check(list(outputs) == [f"s{steps - 1}"], f"the chain's free outputs: {outputs}")
    kit.report({"chain_per_step_ms": kit.median(walls[1:]) / steps * 1000}, walls_s=walls)


if __name__ == "__main__":
    main()
