"""Kedro: ``root``, independent no-op branches on it, one ``join`` of them all, run once.

The driver times this whole script (interpreter start, imports, the run), as
``pipetrail run fanout.py`` is timed whole.
"""

from __future__ import annotations

import kit
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import node, pipeline
from kedro.runner import SequentialRunner


def noop(*upstream: object) -> int:
    return 1


def main() -> None:
    branches = kit.sizes()["branches"]
    names = [f"b{i}" for i in range(branches)]
    fanout = pipeline(
        [node(noop, None, "root", name="root")]
        + [node(noop, "root", name, name=name) for name in names]
        + [node(noop, names, "join", name="join")]
    )
    catalog = DataCatalog({name: MemoryDataset() for name in ["root", *names, "join"]})
    outputs = SequentialRunner().run(fanout, catalog)
    kit.check(list(outputs) == ["join"], f"the fan-out's free outputs: {outputs}")


if __name__ == "__main__":
    main()
