"""The example ML pipeline that ``make demo`` runs, end to end on the embedded store."""

from __future__ import annotations

from pathlib import Path

import pipetrail as pt
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.workspace import Workspace

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "iris.py"


def test_iris_example_records_a_complete_run(sqlite_workspace: Workspace) -> None:
    pipeline = load_pipeline_file(EXAMPLE)
    run = pt.run(pipeline, {"epochs": 12, "lr": 0.05}, workspace=sqlite_workspace, tags=["ci"])

    assert run.status == "completed", run.error
    assert [s.name for s in run] == [
        "load", "validate", "split", "featurize", "train", "evaluate", "report",
    ]  # fmt: skip
    assert run.params["epochs"] == 12 and run.params["lr"] == 0.05
    history = run.metric_history("train_loss")
    assert [p.step for p in history] == list(range(12))
    assert run.metrics["accuracy"] > 0.7
    assert 0 < run.metrics["f1_macro"] <= 1
    evaluate = run["evaluate"].task
    assert evaluate is not None
    image = next(a for a in evaluate.outputs.all() if a.name == "confusion_matrix.png")
    assert image.content_type == "image/png"
    assert run.data["confusion_matrix.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert run.data.evaluate["accuracy"] == run.metrics["accuracy"]
    model = run.data.train
    assert hasattr(model, "predict")
    assert run.data.load.shape == (150, 5)
    assert "accuracy" in run.data["report.md"].decode()
