"""pipetrail: one step logs 10 metrics per ``pt.log_metrics`` call, many calls; points/s.

Timed around ``pt.run`` (inline): from the run's start until every point is stored. A run
of one call goes first, untimed (it creates the store), as MLflow's warm-up run does.
"""

from __future__ import annotations

import kit

import pipetrail as pt

NAMES = [f"m{k}" for k in range(10)]


@pt.step
def log_points(calls: int = 1000) -> None:
    for i in range(calls):
        pt.log_metrics({name: i / (k + 1) for k, name in enumerate(NAMES)}, step=i)


pipeline = pt.Pipeline("metrics", [log_points])


def main() -> None:
    calls = kit.sizes()["metric_calls"]
    pt.run(pipeline, {"calls": 1}, executor="inline")
    wall, run = kit.timed(lambda: pt.run(pipeline, {"calls": calls}, executor="inline"))
    kit.check(run.status == "completed", f"run {run.pathspec} ended {run.status}: {run.error}")
    history = run.metric_history("m9")
    kit.check(len(history) == calls, f"m9 has {len(history)} points stored, not {calls}")
    kit.report({"metric_points_per_s": calls * len(NAMES) / wall}, wall_s=wall, calls=calls)


if __name__ == "__main__":
    main()
