"""Run a whole search: folds, workers, one study per stage, best-so-far carried forward;
optionally the best configuration's ensemble (deepnet.ensemble), on the same images."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import optuna

from deepnet.config import TrainConfig
from deepnet.data.folds import Split, stratified_folds
from deepnet.engine.checkpoint import CheckpointPolicy, CheckpointStore
from deepnet.engine.inputs import check_config_fits
from deepnet.ensemble import EnsemblePlan, FittedEnsemble, fit_ensemble
from deepnet.errors import DataError, SearchError
from deepnet.search.driver import OnTrial, run_stage
from deepnet.search.events import OnEvent
from deepnet.search.executor import Executor, start_workers
from deepnet.search.results import TrialRow, best, failure_summary, ranked, trial_rows
from deepnet.search.spec import SearchSpec
from deepnet.search.strategies import max_epochs
from deepnet.search.study import open_study


@dataclass(frozen=True)
class SearchOutcome:
    """Every trial of every stage, ranked, and the best one."""

    rows: list[TrialRow]
    best: TrialRow
    seconds: float
    studies: list[optuna.Study]
    ensemble: FittedEnsemble | None = None  # the best configuration's, when asked for

    @property
    def best_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.best.params)


def stage_study_name(name: str, index: int, n_stages: int) -> str:
    return name if n_stages == 1 else f"{name}.stage{index + 1}"


def run_search(
    spec: SearchSpec,
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    storage: str | None,
    study_name: str,
    data: dict[str, Any],
    n_jobs: int | None = -1,
    folds: Sequence[Split] | None = None,
    on_trial: OnTrial | None = None,
    executor: str | Executor = "local",
    on_event: OnEvent | None = None,
    checkpoints: CheckpointPolicy | None = None,
    ensemble: EnsemblePlan | int | str | None = None,
) -> SearchOutcome:
    """Run (or resume) every stage of ``spec`` on the training images; no test data here.

    ``storage`` is a database URL (None: in memory). Stage k > 1 searches its own space with
    every other parameter fixed at the best configuration found so far. ``executor`` says
    where the workers run: "local" (this machine), "ray" (the Ray cluster this machine
    belongs to, or $RAY_ADDRESS) or ``Executor("ray", "HOST:PORT")``;
    ``on_event`` hears when they have started, when one is lost and when trials resume.
    ``checkpoints``: where and how often workers save their batches, so that an interrupted
    search resumes its trials mid-training (None: never); they are deleted when it ends.
    ``ensemble`` (K seeds or "folds"; None: ``spec.ensemble``): then train the best
    configuration's ensemble on these images, chosen against its first member on a held-out
    validation share (checked before the search); no test data here either.
    """
    if len(images) != len(labels):
        raise DataError(
            f"{len(images)} images but {len(labels)} labels: give one label per image "
            "(the same number of rows in both)."
        )
    _check_spaces_fit(spec, images)
    folds = list(folds) if folds is not None else stratified_folds(labels, spec.cv, spec.seed)
    plan = _ensemble_plan(
        spec.ensemble if ensemble is None else ensemble, labels, len(folds), spec.seed
    )
    start = time.perf_counter()
    rows: list[TrialRow] = []
    studies = []
    best_params: dict[str, Any] = {}
    most = max(stage.n_trials for stage in spec.stages)  # stages run one after another
    pool = start_workers(
        images, labels, n_classes, n_jobs, most, Executor.of(executor), checkpoints
    )
    with pool:
        if on_event:
            on_event(pool.started())
        for i, stage in enumerate(spec.stages):
            space = stage.space.fixed(best_params) if best_params else stage.space
            stage = replace(stage, space=space)
            study_spec = {
                "stage": stage.to_json(),
                "cv": len(folds),
                "seed": spec.seed,
                "data": data,
            }
            study = open_study(
                storage,
                stage_study_name(study_name, i, len(spec.stages)),
                stage,
                study_spec,
                spec.seed,
                max_epochs(space),
            )
            run_stage(
                study, stage, space.distributions(), folds, spec.seed, pool, on_trial, on_event
            )
            studies.append(study)
            stage_rows = trial_rows(study, i)
            rows += stage_rows
            top = best(rows)
            if top is None:
                raise SearchError(
                    f"every trial failed ({failure_summary(stage_rows)}). Finished work is "
                    "kept. Try smaller learning rates, another optimizer or init_mode, or "
                    "weight_constraint=3, and check the space."
                )
            best_params = top.params
    if checkpoints is not None:  # every trial is finished: nothing is left to resume
        CheckpointStore(checkpoints.directory).clear()
    ranked_rows = ranked(rows)
    top = best(ranked_rows)
    fitted = None
    if plan is not None:
        config = TrainConfig.from_dict(top.params)
        fitted = fit_ensemble(config, images, labels, n_classes, plan, spec.seed)
    return SearchOutcome(ranked_rows, top, time.perf_counter() - start, studies, fitted)


# what makes a configuration too big for the images: its deepest or widest value decides
SIZE_BOUND = ("conv_blocks", "augment_shift")


def _check_spaces_fit(spec: SearchSpec, images: np.ndarray) -> None:
    """Refuse, before any worker starts, a space whose deepest stack or widest shift the
    images are too small for (every such trial would fail in training)."""
    height, width = images.shape[1:3]
    channels = images.shape[3] if images.ndim == 4 else 1
    for stage in spec.stages:
        largest = {n: v for n in SIZE_BOUND if (v := stage.space.largest(n)) is not None}
        if largest:
            check_config_fits(TrainConfig(**largest), height, width, channels)


def _ensemble_plan(
    ensemble: EnsemblePlan | int | str | None, labels: np.ndarray, cv: int, seed: int
) -> EnsemblePlan | None:
    """``ensemble`` as a plan with its size set, its split checked on ``labels``: refused
    before anything trains."""
    if ensemble is None:
        return None
    plan = EnsemblePlan.parse(ensemble).for_cv(cv)
    plan.members(TrainConfig(), labels, seed)
    return plan
