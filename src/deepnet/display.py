"""Terminal rendering (rich) of datasets, epochs and test metrics; no computation here."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from deepnet.data import Dataset
from deepnet.data.sources import CacheState
from deepnet.engine import EpochResult
from deepnet.evaluate import TestMetrics


def dataset_table(dataset: Dataset) -> Table:
    table = Table(title=f"{dataset.name}: {dataset.n_classes} classes", title_justify="left")
    for column in ("label", "class", "train", "test"):
        table.add_column(column, justify="right" if column in ("train", "test") else "left")
    counts = dataset.counts()
    for label, (name, original) in enumerate(
        zip(dataset.class_names, dataset.classes, strict=True)
    ):
        train, test = counts[name]
        shown = name if name == str(original) else f"{name} ({original})"
        table.add_row(str(label), shown, str(train), str(test))
    table.add_section()
    table.add_row("", "total", str(len(dataset.y_train)), str(len(dataset.y_test)))
    return table


def print_data(console: Console, dataset: Dataset, cache: CacheState | None) -> None:
    console.print(dataset_table(dataset))
    console.print(f"images   {dataset.image_shape[0]}x{dataset.image_shape[1]} uint8")
    console.print(f"source   {dataset.source}")
    if cache is None:
        return
    state = f"present, {cache.size_bytes / 2**20:.1f} MiB" if cache.exists else "empty"
    console.print(f"cache    {cache.path} ({state})")


def epoch_line(r: EpochResult, epochs: int) -> str:
    """One Keras-style line per epoch."""
    text = (
        f"epoch {r.epoch:>{len(str(epochs))}}/{epochs}  {r.seconds:5.1f}s  "
        f"loss {r.train_loss:.4f}  acc {r.train_accuracy:.4f}"
    )
    if r.val_loss is not None:
        text += f"  val_loss {r.val_loss:.4f}  val_acc {r.val_accuracy:.4f}"
    return text + (f"  [red]{r.status}: {r.reason}[/red]" if r.reason else "")


def metrics_table(metrics: TestMetrics, class_names: tuple[str, ...]) -> Table:
    low, high = metrics.interval_95
    table = Table(title="test split (evaluated once)", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "accuracy",
        f"{metrics.accuracy:.4f}  (95% CI {low:.4f}-{high:.4f}, {metrics.correct}/{metrics.n})",
    )
    table.add_row("loss", f"{metrics.loss:.4f}")
    return table


def confusion_table(metrics: TestMetrics, class_names: tuple[str, ...]) -> Table:
    table = Table(title="confusion", title_justify="left")
    table.add_column("true \\ predicted")
    for name in class_names:
        table.add_column(name, justify="right")
    for name, row in zip(class_names, metrics.confusion, strict=True):
        table.add_row(name, *(str(v) for v in row))
    return table


def print_metrics(console: Console, metrics: TestMetrics, class_names: tuple[str, ...]) -> None:
    console.print(metrics_table(metrics, class_names))
    console.print(confusion_table(metrics, class_names))
