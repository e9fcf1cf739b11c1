"""A small, real ML pipeline on the iris data that ships with scikit-learn (no download).

load → validate → split → featurize → train → evaluate → report

    pipetrail run examples/iris.py -p lr=0.05 -p epochs=40 --tag phase:experiment
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pipetrail as pt


@pt.step
def load(dataset: str = "iris") -> Any:
    """Read the bundled data set into a DataFrame (features plus a ``target`` column)."""
    from sklearn import datasets

    loaders = {"iris": datasets.load_iris, "wine": datasets.load_wine}
    if dataset not in loaders:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(loaders)}")
    bunch = loaders[dataset](as_frame=True)
    frame = bunch.frame
    print(f"loaded {dataset}: {len(frame)} rows, {frame.shape[1] - 1} features")
    return frame


@pt.step
def validate(load: Any) -> dict[str, Any]:
    """Fail early on data that would make training meaningless."""
    missing = int(load.isna().sum().sum())
    if missing:
        raise ValueError(f"{missing} missing values in the input data")
    counts = load["target"].value_counts().to_dict()
    if len(counts) < 2:
        raise ValueError("need at least two classes to train a classifier")
    report = {
        "rows": len(load),
        "features": [c for c in load.columns if c != "target"],
        "class_counts": {str(k): int(v) for k, v in sorted(counts.items())},
    }
    pt.log_metric("rows", len(load))
    return report


@pt.step(outputs=("train_frame", "test_frame"))
def split(load: Any, validate: dict[str, Any], test_size: float = 0.3, seed: int = 7) -> Any:
    """Stratified train/test split."""
    from sklearn.model_selection import train_test_split

    train_frame, test_frame = train_test_split(
        load, test_size=test_size, random_state=seed, stratify=load["target"]
    )
    print(f"train: {len(train_frame)} rows, test: {len(test_frame)} rows")
    return train_frame, test_frame


@pt.step(outputs=("x_train", "y_train", "x_test", "y_test"))
def featurize(train_frame: Any, test_frame: Any) -> Any:
    """Standardize features with statistics from the training set only."""
    from sklearn.preprocessing import StandardScaler

    features = [c for c in train_frame.columns if c != "target"]
    scaler = StandardScaler().fit(train_frame[features])
    x_train = scaler.transform(train_frame[features])
    x_test = scaler.transform(test_frame[features])
    return x_train, train_frame["target"].to_numpy(), x_test, test_frame["target"].to_numpy()


@pt.step
def train(
    x_train: Any,
    y_train: Any,
    lr: float = 0.01,
    epochs: int = 30,
    alpha: float = 0.0001,
    seed: int = 7,
) -> Any:
    """Logistic regression by SGD, one pass per epoch, logging loss and accuracy each epoch."""
    import numpy as np
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import log_loss

    model = SGDClassifier(
        loss="log_loss", learning_rate="constant", eta0=lr, alpha=alpha, random_state=seed
    )
    classes = np.unique(y_train)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        model.partial_fit(x_train[order], y_train[order], classes=classes)
        loss = log_loss(y_train, model.predict_proba(x_train), labels=classes)
        pt.log_metrics(
            {"train_loss": float(loss), "train_accuracy": float(model.score(x_train, y_train))},
            step=epoch,
        )
    print(f"trained for {epochs} epochs at lr={lr}: final loss {loss:.4f}")
    return model


@pt.step
def evaluate(train: Any, x_test: Any, y_test: Any) -> dict[str, Any]:
    """Accuracy, macro F1 and a confusion matrix (saved as a PNG artifact)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, accuracy_score, confusion_matrix, f1_score

    predicted = train.predict(x_test)
    accuracy = float(accuracy_score(y_test, predicted))
    f1 = float(f1_score(y_test, predicted, average="macro"))
    matrix = confusion_matrix(y_test, predicted)
    pt.log_metrics({"accuracy": accuracy, "f1_macro": f1})

    figure, axes = plt.subplots(figsize=(4, 4))
    ConfusionMatrixDisplay(matrix).plot(ax=axes, colorbar=False)
    axes.set_title(f"accuracy {accuracy:.3f}")
    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / "confusion_matrix.png"
        figure.savefig(image, dpi=100, bbox_inches="tight")
        pt.log_artifact(image)
    plt.close(figure)
    return {"accuracy": accuracy, "f1_macro": f1, "confusion_matrix": matrix.tolist()}


@pt.step
def report(evaluate: dict[str, Any], validate: dict[str, Any]) -> str:
    """A short Markdown report, stored as a file artifact too."""
    lines = [
        f"# {pt.current.run_pathspec}",
        "",
        f"- rows: {validate['rows']}, classes: {validate['class_counts']}",
        f"- parameters: {dict(pt.current.params)}",
        f"- accuracy: {evaluate['accuracy']:.3f}",
        f"- macro F1: {evaluate['f1_macro']:.3f}",
    ]
    text = "\n".join(lines) + "\n"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "report.md"
        path.write_text(text)
        pt.log_artifact(path)
    print(text)
    return text


pipeline = pt.Pipeline("iris", [load, validate, split, featurize, train, evaluate, report])
