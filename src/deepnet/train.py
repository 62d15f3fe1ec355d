"""Train one configuration, evaluate it once on the test split, and save the run.

This is the core that ``deepnet train`` and the Python API share: a population of one
member on the engine, then one test evaluation, then the run folder. ``train_ensemble``
does the same for several members of one configuration (deepnet.ensemble).
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
from deepnet.engine.memory import check_members_fit
from deepnet.ensemble import (
    EnsemblePlan,
    EnsembleRecord,
    FittedEnsemble,
    compare,
    fit_ensemble,
    member_logits,
)
from deepnet.errors import ConfigError
from deepnet.evaluate import TestMetrics, evaluate, metrics_of
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


@dataclass(frozen=True)
class EnsembleResult:
    """Trained members, the validation decision, and the one test evaluation of both the
    first member and the ensemble (``record``: what RUN/ensemble.json holds)."""

    fitted: FittedEnsemble
    record: EnsembleRecord
    member_metrics: list[TestMetrics]  # each usable member's test metrics, in member order
    seconds: float
    run_dir: Path | None

    @property
    def metrics(self) -> TestMetrics | None:
        """The chosen model's test metrics; None when every member diverged."""
        test = self.record.test
        if test is None:
            return self.member_metrics[0] if self.member_metrics else None
        return test.of(self.record.choice)


def train_ensemble(
    config: TrainConfig,
    dataset: Dataset,
    plan: EnsemblePlan,
    *,
    seed: int = 0,
    run_dir: Path | None = None,
    data_path: str | Path | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
    engine: Engine | None = None,
) -> EnsembleResult:
    """Train ``plan``'s members of ``config`` on ``dataset``'s training split as one
    population, choose on the validation share, then evaluate the first member and the
    ensemble once on the test split. With ``run_dir`` it becomes a run folder of kind
    "ensemble" (RUN/ensemble.json, the chosen model's metrics.json) holding each member as
    a train run folder in RUN/members/KEY."""
    _check_seed(seed)
    members, _ = plan.members(config, dataset.y_train, seed)  # refused before any claim
    check_members_fit(config, len(members), dataset.n_classes, dataset.x_train)
    if run_dir is None:
        return _train_ensemble(config, dataset, plan, seed, None, None, on_epoch, engine)
    with lock.hold(run_dir):
        runs.start_run(run_dir, "ensemble")
        info = data_info(dataset, data_path)
        runs.save_config(run_dir, config, info, seed=seed, validation_split=plan.validation_share)
        return _train_ensemble(config, dataset, plan, seed, run_dir, info, on_epoch, engine)


def _train_ensemble(
    config: TrainConfig,
    dataset: Dataset,
    plan: EnsemblePlan,
    seed: int,
    run_dir: Path | None,
    info: runs.DataInfo | None,
    on_epoch: Callable[[EpochResult], None] | None,
    engine: Engine | None,
) -> EnsembleResult:
    start = time.perf_counter()
    try:
        fitted = fit_ensemble(
            config,
            dataset.x_train,
            dataset.y_train,
            dataset.n_classes,
            plan,
            seed,
            on_epoch=on_epoch,
            engine=engine,
        )
        seconds = time.perf_counter() - start
        usable = fitted.usable
        logits = member_logits([m.model for m in usable], dataset.x_test)
        member_metrics = [metrics_of(z, dataset.y_test) for z in logits]
        record = EnsembleRecord(
            plan,
            tuple(f"{runs.MEMBERS_DIR}/{m.member.key}" for m in usable),
            fitted.choice,
            fitted.validation,
            compare(logits, dataset.y_test) if len(usable) >= 2 else None,
        )
        result = EnsembleResult(fitted, record, member_metrics, seconds, run_dir)
        if run_dir is not None and info is not None:
            _save_ensemble(run_dir, info, result)
    except BaseException as exc:
        if run_dir is not None:
            runs.stop_run(
                run_dir,
                exc,
                time.perf_counter() - start,
                kept="the ensemble could not be saved whole",
                then="run the same command again",
            )
        raise
    return result


def _save_ensemble(run_dir: Path, info: runs.DataInfo, result: EnsembleResult) -> None:
    """Each member as a train run folder, then the ensemble's record and chosen metrics."""
    metrics = iter(result.member_metrics)
    for fitted in result.fitted.members:
        member = fitted.member
        folder = run_dir / runs.MEMBERS_DIR / member.key
        runs.start_run(folder, "train")
        runs.save_config(
            folder,
            member.config,
            info,
            seed=member.seed,
            validation_split=result.fitted.plan.validation_share,
            ensemble_member=member.key,
        )
        runs.save_history(folder, fitted.history)
        if fitted.model is not None:
            runs.save_model(folder, fitted.model)
            runs.save_metrics(folder, next(metrics))
        runs.finish_run(folder, fitted.status.value, result.seconds)
    runs.save_ensemble(run_dir, result.record)
    chosen = result.metrics
    if chosen is not None:
        runs.save_metrics(run_dir, chosen)
    status = Status.FINISHED if chosen is not None else Status.DIVERGED
    runs.finish_run(run_dir, status.value, result.seconds)
