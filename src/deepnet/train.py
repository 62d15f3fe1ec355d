"""Train one configuration, evaluate it once on the test split, and save the run.

This is the core that ``deepnet train`` and the Python API share: a population of one
member on the engine, then one test evaluation, then the run folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deepnet import runs
from deepnet.config import TrainConfig
from deepnet.data import Dataset, holdout_split
from deepnet.engine import Engine, EpochResult, Member, PopulationEngine, Status
from deepnet.evaluate import TestMetrics, evaluate
from deepnet.nn import SeedNet

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
    return runs.DataInfo(
        dataset.name,
        dataset.classes,
        dataset.class_names,
        dataset.image_shape,
        dataset.source,
        str(path) if path else None,
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
    saved there; the folder is claimed before training, so a clash costs nothing. On
    Ctrl-C the epochs finished so far are saved and the run is marked interrupted.
    """
    train_idx, val_idx = holdout_split(dataset.y_train, validation_split, seed)
    if run_dir is not None:
        runs.start_run(run_dir, "train")
        runs.save_config(
            run_dir,
            config,
            data_info(dataset, data_path),
            seed=seed,
            validation_split=validation_split,
        )
    engine = engine or PopulationEngine()
    training = engine.train(
        dataset.x_train,
        dataset.y_train,
        dataset.n_classes,
        [Member(RUN_KEY, config, train_idx, val_idx, seed)],
    )
    history: list[EpochResult] = []
    start = time.perf_counter()
    try:
        for result in training:
            history.append(result)
            if on_epoch:
                on_epoch(result)
    except KeyboardInterrupt:
        if run_dir is not None:
            runs.save_history(run_dir, history)
            runs.finish_run(run_dir, "interrupted", time.perf_counter() - start)
        raise
    seconds = time.perf_counter() - start
    last = history[-1]
    model = training.model(RUN_KEY)
    metrics = (
        None if last.status is Status.DIVERGED else evaluate(model, dataset.x_test, dataset.y_test)
    )
    if run_dir is not None:
        runs.save_history(run_dir, history)
        if metrics is not None:
            runs.save_model(run_dir, model)
            runs.save_metrics(run_dir, metrics)
        runs.finish_run(run_dir, last.status.value, seconds)
    return TrainResult(model.eval(), history, last.status, last.reason, metrics, seconds, run_dir)
