"""What ``make bench-peers`` measures: the figures, the workload sizes, and each tool's cases.

A case is one tool doing one scenario the way a user's script does it. ``script`` cases run a
file of ``scripts/`` in a fresh project folder (a git repository holding the script, as a
user's project is) and read the figures it reports; ``whole`` cases time a whole command
(interpreter start to exit); ``startup`` cases time ``import`` and ``--help`` in fresh
interpreters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CASES", "SCRIPTS", "TOOLS", "Case", "Figure", "figures", "sizes"]

TOOLS = ("pipetrail", "kedro", "mlflow")


@dataclass(frozen=True)
class Figure:
    """One row of the table: its key in the scripts' results, label, unit, which way is better.

    ``compared``: False for a row shown for information, without a ratio (bytes added by a
    deduplicated store are about zero, and a ratio to zero means nothing).
    """

    key: str
    label: str
    unit: str
    higher_is_better: bool = False
    compared: bool = True


def figures(s: dict[str, Any]) -> list[Figure]:
    """The table's rows, labelled with the sizes of this invocation."""
    n, mb = s["runs"], s["array_mb"]
    found = s["search_found"]
    return [
        Figure(
            "chain_per_step_ms",
            f"per step, {s['chain_steps']}-step chain of no-op steps, in process",
            "ms",
        ),
        Figure(
            "fanout_whole_s",
            f"{s['branches']}-branch fan-out + join, one process, whole (start to exit)",
            "s",
        ),
        Figure("create_runs_s", f"create {n:,} one-step runs (5 params, 5 metrics)", "s"),
        Figure("list_100_ms", f"list the 100 newest runs over {n:,}", "ms"),
        Figure(
            "search_ms",
            f"filtered, ordered search returning {found:,} runs, reading each run's metrics",
            "ms",
        ),
        Figure("artifact_first_s", f"store a {mb} MB NumPy array as a step output, first", "s"),
        Figure("artifact_again_s", "the same array again", "s"),
        Figure(
            "artifact_again_added_mb",
            "disk added by storing it again (store and database)",
            "MB",
            compared=False,
        ),
        Figure(
            "metric_points_per_s",
            "metric points/s, log_metrics of 10 names per call",
            "points/s",
            higher_is_better=True,
        ),
        Figure("import_s", "import (the package a user's script imports)", "s"),
        Figure("help_s", "the command line's --help", "s"),
    ]


FULL = {
    "chain_steps": 20,
    "chain_repeats": 5,
    "branches": 100,
    "fanout_repeats": 5,
    "runs": 5000,
    "read_repeats": 20,
    "array_mb": 200,
    "artifact_rounds": 3,
    "metric_calls": 5_000,
    "metric_rounds": 3,
    "startup_repeats": 7,
}
QUICK = {
    **FULL,
    "chain_repeats": 2,
    "branches": 20,
    "fanout_repeats": 2,
    "runs": 300,
    "read_repeats": 5,
    "array_mb": 20,
    "artifact_rounds": 1,
    "metric_calls": 1000,
    "metric_rounds": 1,
    "startup_repeats": 3,
}


def sizes(quick: bool) -> dict[str, Any]:
    """The workload sizes (``quick``: seconds, for a smoke run); scripts read them as JSON."""
    chosen = dict(QUICK if quick else FULL)
    lrs = (0.0001, 0.001, 0.003, 0.01, 0.03, 0.1)  # as scripts/kit.py: one run in six matches
    chosen["search_found"] = sum(1 for i in range(chosen["runs"]) if lrs[i % 6] == 0.01)
    return chosen


@dataclass(frozen=True)
class Case:
    """One tool doing one scenario.

    Attributes:
        tool: ``pipetrail``, ``kedro`` or ``mlflow``.
        name: the scenario (``chain``, ``fanout``, ``runs``, ``artifact``, ``metrics``,
            ``startup``).
        kind: ``script``, ``whole`` or ``startup``.
        script: the file of ``scripts/`` copied into the project folder and run (or, for
            ``whole``, the command's file).
        rounds: the sizes key saying how many fresh project folders to median over.
        flows: pipeline files benchmarks/flowgen.py writes into the folder first.
        command: for ``whole``: the command, ``{python}`` and ``{bin}`` filled in.
        startup: for ``startup``: the import statement and the ``--help`` program.
    """

    tool: str
    name: str
    kind: str
    script: str = ""
    rounds: str = ""
    flows: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    startup: tuple[str, str] = ("", "")


KEDRO_IMPORT = (
    "from kedro.io import DataCatalog, MemoryDataset; from kedro.pipeline import node, pipeline; "
    "from kedro.runner import SequentialRunner"
)

CASES = (
    Case("pipetrail", "chain", "script", "pipetrail_chain.py", flows=("chain",)),
    Case("kedro", "chain", "script", "kedro_chain.py"),
    Case(
        "pipetrail",
        "fanout",
        "whole",
        flows=("fanout",),
        command=("{bin}/pipetrail", "run", "fanout.py", "--executor", "inline"),
    ),
    Case("kedro", "fanout", "whole", "kedro_fanout.py", command=("{python}", "kedro_fanout.py")),
    Case("pipetrail", "runs", "script", "pipetrail_runs.py"),
    Case("mlflow", "runs", "script", "mlflow_runs.py"),
    Case("pipetrail", "artifact", "script", "pipetrail_artifact.py", rounds="artifact_rounds"),
    Case("kedro", "artifact", "script", "kedro_artifact.py", rounds="artifact_rounds"),
    Case("mlflow", "artifact", "script", "mlflow_artifact.py", rounds="artifact_rounds"),
    Case("pipetrail", "metrics", "script", "pipetrail_metrics.py", rounds="metric_rounds"),
    Case("mlflow", "metrics", "script", "mlflow_metrics.py", rounds="metric_rounds"),
    Case("pipetrail", "startup", "startup", startup=("import pipetrail", "pipetrail")),
    Case("kedro", "startup", "startup", startup=(KEDRO_IMPORT, "kedro")),
    Case("mlflow", "startup", "startup", startup=("import mlflow", "mlflow")),
)

SCRIPTS = Path(__file__).resolve().parent / "scripts"
