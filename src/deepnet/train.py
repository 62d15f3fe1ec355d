"""Train one configuration, evaluate it once on the test split, and save the run.

This is the core that ``deepnet train`` and the Python API share: a population of one
member on the engine, then one test evaluation, then the run folder.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deepnet import lock, runs
from deepnet.config import TrainConfig
from deepnet.data import Dataset, holdout_split
from deepnet.engine import Engine, EpochResult, Member, PopulationEngine, Status
from deepnet.errors import ConfigError
from deepnet.evaluate import TestMetrics, evaluate
from deepnet.nn import SeedNet
from deepnet.seeds import MAX_SEED

RUN_KEY = "model"


@dataclass(frozen=True)
class TrainResult:
    """A trained model, its per-epoch history, and its one test evaluation."""

    model: SeedNet
    history: list[EpochResult]
    status: Status
    reason: str
    metrics: TestMetrics | None  # None when training diverged
    seconds: float
    run_dir: Path | None


def data_info(dataset: Dataset, path: str | Path | None = None) -> runs.DataInfo:
    """What a run records of its data: ``dataset`` as loaded from ``path`` (with its
    options). The path is made absolute, so the run finds its data from any folder."""
    return runs.DataInfo(
        dataset.name,
        dataset.classes,
        dataset.class_names,
        dataset.source,
        str(Path(path).absolute()) if path else None,
        dataset.options,
        dataset.preprocessing,
    )


def train(
    config: TrainConfig,
    dataset: Dataset,
    *,
    seed: int = 0,
    validation_split: float = 0.1,
    run_dir: Path | None = None,
    data_path: str | Path | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
    engine: Engine | None = None,
) -> TrainResult:
    """Train ``config`` on ``dataset``'s training split and evaluate once on its test split.

    A stratified ``validation_split`` of the training images is held out for the
    per-epoch validation curves (0 trains on all of them). With ``run_dir`` the run is
    saved there; the folder is locked and claimed before training, so a clash costs
    nothing. On Ctrl-C or SIGTERM the epochs finished so far are saved and the run is
    marked interrupted. ``data_path``: where ``dataset`` was loaded from, recorded
    (with its options) so that later commands load it again the same way.
    """
    _check_seed(seed)
    train_idx, val_idx = holdout_split(dataset.y_train, validation_split, seed)
    member = Member(RUN_KEY, config, train_idx, val_idx, seed)
    if run_dir is None:
        return _train(member, dataset, None, on_epoch, engine)
    with lock.hold(run_dir):
        runs.start_run(run_dir, "train")
        runs.save_config(
            run_dir,
            config,
            data_info(dataset, data_path),
            seed=seed,
            validation_split=validation_split,
        )
        return _train(member, dataset, run_dir, on_epoch, engine)


def _check_seed(seed: int) -> None:
    if (
        isinstance(seed, bool)
        or not isinstance(seed, numbers.Integral)
        or not 0 <= seed <= MAX_SEED
    ):
        raise ConfigError(
            f"seed={seed!r} is not allowed: use an integer from 0 to {MAX_SEED} (it seeds the "
            "initial weights, the shuffling and the dropout)."
        )


def _train(
    member: Member,
    dataset: Dataset,
    run_dir: Path | None,
    on_epoch: Callable[[EpochResult], None] | None,
    engine: Engine | None,
) -> TrainResult:
    engine = engine or PopulationEngine()
    training = engine.train(dataset.x_train, dataset.y_train, dataset.n_classes, [member])
    history: list[EpochResult] = []
    start = time.perf_counter()
    try:
        for result in training:
            history.append(result)
            if on_epoch:
                on_epoch(result)
        seconds = time.perf_counter() - start
        last = history[-1]
        model = training.model(RUN_KEY)
        metrics = (
            None
            if last.status is Status.DIVERGED
            else evaluate(model, dataset.x_test, dataset.y_test)
        )
        if run_dir is not None:
            runs.save_history(run_dir, history)
            if metrics is not None:
                runs.save_model(run_dir, model)
                runs.save_metrics(run_dir, metrics)
            runs.finish_run(run_dir, last.status.value, seconds)
    except BaseException as exc:
        if run_dir is not None:
            runs.stop_run(
                run_dir,
                exc,
                time.perf_counter() - start,
                history=history,
                kept="the run could not be saved whole",
                then="train again",
            )
        raise
    return TrainResult(model.eval(), history, last.status, last.reason, metrics, seconds, run_dir)
