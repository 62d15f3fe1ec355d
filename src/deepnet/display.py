"""Terminal rendering (rich) of datasets, epochs and test metrics; no computation here.

rich reads ``[...]`` in a string as markup, so every string that comes from the user or the
data (names, paths, parameter values, error messages) is escaped before it is printed.
Importing this module loads rich only: the CLI imports it before any command runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from deepnet.data import Dataset
    from deepnet.data.sources import CacheState
    from deepnet.engine import EpochResult
    from deepnet.ensemble import EnsembleRecord
    from deepnet.evaluate import TestMetrics
    from deepnet.search.results import TrialRow


def dataset_table(dataset: Dataset) -> Table:
    table = Table(
        title=f"{escape(dataset.name)}: {dataset.n_classes} classes", title_justify="left"
    )
    for column in ("label", "class", "train", "test"):
        table.add_column(column, justify="right" if column in ("train", "test") else "left")
    counts = dataset.counts()
    for label, (name, original) in enumerate(
        zip(dataset.class_names, dataset.classes, strict=True)
    ):
        train, test = counts[name]
        shown = name if name == str(original) else f"{name} ({original})"
        table.add_row(str(label), escape(shown), str(train), str(test))
    table.add_section()
    table.add_row("", "total", str(len(dataset.y_train)), str(len(dataset.y_test)))
    return table


def print_data(console: Console, dataset: Dataset, cache: CacheState | None) -> None:
    console.print(dataset_table(dataset))
    (height, width), colour = dataset.image_shape, "grey" if dataset.channels == 1 else "RGB"
    p = dataset.preprocessing
    converted = [what for what, done in (("resized", p.resize), ("made grey", p.grayscale)) if done]
    note = f" ({', '.join(converted)} on load)" if converted else ""
    console.print(f"images   {height}x{width} {colour} uint8{note}")
    console.print(f"source   {escape(str(dataset.source))}")
    if cache is None:
        return
    state = f"present, {cache.size_bytes / 2**20:.1f} MiB" if cache.exists else "empty"
    console.print(f"cache    {escape(str(cache.path))} ({state})")


def epoch_line(r: EpochResult, epochs: int) -> str:
    """One Keras-style line per epoch."""
    text = (
        f"epoch {r.epoch:>{len(str(epochs))}}/{epochs}  {r.seconds:5.1f}s  "
        f"loss {r.train_loss:.4f}  acc {r.train_accuracy:.4f}"
    )
    if r.val_loss is not None:
        text += f"  val_loss {r.val_loss:.4f}  val_acc {r.val_accuracy:.4f}"
    return text + (f"  [red]{r.status}: {escape(r.reason)}[/red]" if r.reason else "")


def metrics_table(metrics: TestMetrics, class_names: tuple[str, ...]) -> Table:
    table = Table(title="test split (evaluated once)", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("accuracy", accuracy_text(metrics))
    table.add_row("loss", f"{metrics.loss:.4f}")
    return table


def confusion_table(metrics: TestMetrics, class_names: tuple[str, ...]) -> Table:
    table = Table(title="confusion", title_justify="left")
    table.add_column("true \\ predicted")
    for name in class_names:
        table.add_column(escape(name), justify="right")
    for name, row in zip(class_names, metrics.confusion, strict=True):
        table.add_row(escape(name), *(str(v) for v in row))
    return table


def print_metrics(console: Console, metrics: TestMetrics, class_names: tuple[str, ...]) -> None:
    console.print(metrics_table(metrics, class_names))
    console.print(confusion_table(metrics, class_names))


def accuracy_text(metrics: TestMetrics) -> str:
    low, high = metrics.interval_95
    return f"{metrics.accuracy:.4f}  (95% CI {low:.4f}-{high:.4f}, {metrics.correct}/{metrics.n})"


def ensemble_line(record: EnsembleRecord) -> str:
    """Which model an ensemble refit uses, and on what evidence."""
    from deepnet.ensemble import Choice

    size = len(record.members)
    members = f"ensemble of {record.plan.describe()}"
    if size != record.plan.size:
        members += f" ({size} finished)"
    if record.validation is None:
        return f"model    {members}: only its first member finished, so it is used alone"
    one, ens = record.validation.single.accuracy, record.validation.ensemble.accuracy
    chosen = "its first member alone" if record.choice is Choice.SINGLE else "the ensemble"
    return (
        f"model    {members}: {chosen}, chosen on the validation share "
        f"({record.plan.validation_share:.0%} of the training images: ensemble {ens:.4f}, "
        f"first member {one:.4f})"
    )


def ensemble_table(record: EnsembleRecord) -> Table:
    """The first member and the ensemble side by side: validation (which chose) and the
    one test evaluation, each with its 95% interval."""
    from deepnet.ensemble import Choice

    table = Table(
        title="single model vs ensemble (test split evaluated once, after the choice)",
        title_justify="left",
    )
    for column in ("model", "validation accuracy", "test accuracy", "used"):
        table.add_column(column)
    names = {Choice.SINGLE: "first member", Choice.ENSEMBLE: f"ensemble of {len(record.members)}"}
    for choice, name in names.items():
        table.add_row(
            name,
            "" if record.validation is None else accuracy_text(record.validation.of(choice)),
            "" if record.test is None else accuracy_text(record.test.of(choice)),
            "yes" if record.choice is choice else "",
        )
    return table


def results_table(rows: list[TrialRow], limit: int | None = 15, title: str = "") -> Table:
    """Ranked trials: score, std, epochs, time and the parameters that varied. ``title`` is
    markup: escape what it quotes."""
    from deepnet.search.results import param_names, searched_names

    names = searched_names(rows) or param_names(rows)
    multi_stage = len({r.stage for r in rows}) > 1
    table = Table(title=title or None, title_justify="left")
    for column in (
        "rank",
        *(["stage"] if multi_stage else []),
        "trial",
        "state",
        "cv accuracy",  # (x): a pruned trial's score when it was stopped
        "std",
        "epochs",
        "time",
    ):
        table.add_column(column, justify="right" if column != "state" else "left")
    for name in names:
        table.add_column(name)
    for rank, r in enumerate(rows[:limit] if limit else rows, 1):
        table.add_row(
            str(rank),
            *([str(r.stage + 1)] if multi_stage else []),
            str(r.number),
            r.state,
            _score(r),
            "" if r.std is None else f"{r.std:.4f}",
            str(r.epochs),
            f"{r.seconds:.0f}s",
            *(_value(r.params.get(n)) for n in names),
        )
    if limit and len(rows) > limit:
        table.caption = f"{len(rows) - limit} more trials in results.csv"
    return table


def trial_line(row: TrialRow) -> str:
    """One line per finished trial, for live progress."""
    names = ", ".join(f"{k}={_value(v)}" for k, v in row.params.items())
    if row.ok:
        head = f"[green]{row.score:.4f}[/green] ± {row.std:.4f}"
    elif row.state == "pruned":
        head = f"[yellow]pruned after {row.epochs} epoch{'s' if row.epochs != 1 else ''}[/yellow]"
    else:
        head = f"[red]{row.state}: {escape(row.reason)}[/red]"
    return f"trial {row.number:>3}  {head}  {row.seconds:5.0f}s  {names}"


def _score(r: TrialRow) -> str:
    """The CV score; for a pruned trial, in brackets, its score when it was stopped."""
    if r.score is not None:
        return f"{r.score:.4f}"
    return f"({r.last_value:.4f})" if r.last_value is not None else ""


def _value(v: object) -> str:
    """A parameter value as shown (escaped)."""
    if v is None:
        return "none"
    if isinstance(v, float):
        return f"{v:.4g}"
    return escape(str(v))


def comparison_table(searches: list) -> Table:
    """The seed's closing comparison: strategy, trials, time and best score per search."""
    table = Table(title="comparison", title_justify="left")
    for column in (
        "run",
        "strategy",
        "trials",
        "epochs trained",
        "train time",
        "best cv",
        "refit test",
    ):
        table.add_column(column, justify="left" if column in ("run", "strategy") else "right")
    for s in searches:
        top = next((r for r in s.rows if r.ok), None)
        test = s.refit.metrics.accuracy if s.refit is not None and s.refit.metrics else None
        table.add_row(
            escape(str(s.run_dir)),
            " then ".join(st.strategy for st in s.spec.stages),
            str(len(s.rows)),
            str(sum(r.epochs for r in s.rows)),
            f"{sum(r.seconds for r in s.rows):.0f}s",
            "" if top is None else f"{top.score:.4f} ± {top.std:.4f}",
            "" if test is None else f"{test:.4f}",
        )
    return table
