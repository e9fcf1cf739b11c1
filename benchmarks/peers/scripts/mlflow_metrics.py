"""MLflow: one run logs 10 metrics per ``mlflow.log_metrics`` call, many calls; points/s.

Timed from ``mlflow.start_run`` to the end of its ``with`` block (SQLite tracking URI). A
run of one call goes first, untimed, as pipetrail's warm-up run does.
"""

from __future__ import annotations

import kit
import mlflow
from mlflow.tracking import MlflowClient

NAMES = [f"m{k}" for k in range(10)]


def log_points(calls: int) -> str:
    with mlflow.start_run() as run:
        for i in range(calls):
            mlflow.log_metrics({name: i / (k + 1) for k, name in enumerate(NAMES)}, step=i)
    return str(run.info.run_id)


def main() -> None:
    calls = kit.sizes()["metric_calls"]
    mlflow.set_tracking_uri("sqlite:///mlflow.db")
    mlflow.set_experiment("metrics")
    log_points(1)
    wall, run_id = kit.timed(lambda: log_points(calls))
    history = MlflowClient().get_metric_history(run_id, "m9")
    kit.check(len(history) == calls, f"m9 has {len(history)} points stored, not {calls}")
    kit.report({"metric_points_per_s": calls * len(NAMES) / wall}, wall_s=wall, calls=calls)


if __name__ == "__main__":
    main()
