"""MLflow: create many runs (5 params, 5 metrics) in SQLite, then list and search them.

``mlflow.start_run`` / ``log_params`` / ``log_metrics`` with an SQLite tracking URI. Then
``MlflowClient.search_runs`` reads the 100 newest runs of the experiment (its default order:
newest first) and a filtered, ordered search reads each found run's metrics.
``mlflow.search_runs`` (a pandas DataFrame) is timed as well and kept in the details.
"""

from __future__ import annotations

import kit
import mlflow
from mlflow.tracking import MlflowClient


def create(n: int) -> None:
    for i in range(n):
        with mlflow.start_run():
            params = kit.run_params(i)
            mlflow.log_params(params)
            mlflow.log_metrics(kit.run_metrics(params))


def main() -> None:
    sizes = kit.sizes()
    n = sizes["runs"]
    mlflow.set_tracking_uri("sqlite:///mlflow.db")
    setup_s, experiment = kit.timed(lambda: mlflow.set_experiment("train"))
    ids = [experiment.experiment_id]
    client = MlflowClient()
    create_s, _ = kit.timed(lambda: create(n))

    def newest() -> list[tuple[str, str]]:
        return [(r.info.run_id, r.info.status) for r in client.search_runs(ids, max_results=100)]

    def search() -> list[dict[str, float]]:
        found = client.search_runs(
            ids,
            f"params.lr = '{kit.SEARCH_LR}'",
            order_by=["metrics.accuracy DESC"],
            max_results=50_000,
        )
        return [r.data.metrics for r in found]

    listed = kit.repeat(newest, sizes["read_repeats"])
    kit.check(len(listed.result) == min(n, 100), f"listed {len(listed.result)} runs of {n}")
    found = kit.repeat(search, sizes["read_repeats"])
    expected = kit.matching(n)
    kit.check(len(found.result) == expected, f"search found {len(found.result)}, not {expected}")
    kit.check(all(len(m) == 5 for m in found.result), "a found run lacks some of its 5 metrics")
    frame = kit.repeat(lambda: mlflow.search_runs(ids, max_results=100), sizes["read_repeats"])
    kit.report(
        {
            "create_runs_s": create_s,
            "list_100_ms": listed.median * 1000,
            "search_ms": found.median * 1000,
        },
        found=expected,
        setup_s=setup_s,
        list_s=listed.walls,
        search_s=found.walls,
        list_first_s=listed.first,
        search_first_s=found.first,
        pandas_search_runs_100_ms=frame.median * 1000,
    )


if __name__ == "__main__":
    main()
