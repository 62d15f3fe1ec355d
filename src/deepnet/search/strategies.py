"""Search strategies as Optuna samplers and pruners, and the stages that chain them.

    grid        every configuration of a value-list space (Optuna's GridSampler order)
    random      n_iter configurations: drawn without replacement from a grid, or by
                Optuna's RandomSampler when the space has distributions
    halving     grid or random candidates, pruned by successive halving on epochs
    hyperband   grid or random candidates, pruned by Hyperband on epochs
    tpe         n_iter configurations proposed one after another by Optuna's TPE sampler

Candidate lists are fixed by the seed before any training (and queued in the study one at
a time as they start), so an interrupted search resumes with exactly the configurations it
would have run.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.pruners import BasePruner, HyperbandPruner, NopPruner, SuccessiveHalvingPruner
from optuna.samplers import BaseSampler, GridSampler, RandomSampler, TPESampler

from deepnet.errors import ConfigError
from deepnet.search.space import Space

STRATEGIES = ("grid", "random", "halving", "hyperband", "tpe")
DEFAULT_N_ITER = 10


@dataclass(frozen=True)
class Stage:
    """One search over a space with a strategy. Later stages start from earlier bests."""

    space: Space
    strategy: str = "grid"
    n_iter: int | None = None  # random, tpe; halving/hyperband over a random sample
    min_epochs: int = 1  # halving/hyperband: the smallest budget
    reduction_factor: int = 3  # halving/hyperband: keep 1/reduction_factor per rung

    def __post_init__(self) -> None:
        strategy = self.strategy.strip().lower()
        if strategy not in STRATEGIES:
            raise ConfigError(
                f"unknown strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}."
            )
        object.__setattr__(self, "strategy", strategy)
        if strategy == "grid" and not self.space.is_grid:
            lists = [n for n, d in self.space.dims.items() if not isinstance(d, tuple)]
            raise ConfigError(
                f"grid search needs value lists, but {', '.join(lists)} is a distribution: "
                "give a list of values, or use --strategy random, halving or tpe with --n-iter."
            )
        if self.n_iter is not None and (isinstance(self.n_iter, bool) or self.n_iter < 1):
            raise ConfigError(f"n_iter={self.n_iter!r} is not allowed: it must be >= 1.")
        if self.n_iter is None and (strategy == "tpe" or not self.space.is_grid):
            object.__setattr__(self, "n_iter", DEFAULT_N_ITER)  # sampled stages need a count
        if self.min_epochs < 1 or self.reduction_factor < 2:
            raise ConfigError("min_epochs must be >= 1 and reduction_factor >= 2.")

    @property
    def n_trials(self) -> int:
        """How many trials the stage runs (its queue, or n_iter for TPE)."""
        if self.strategy == "grid" or self.n_iter is None:
            return self.space.grid_size
        return min(self.n_iter, self.space.grid_size)

    @property
    def adaptive(self) -> bool:
        """True when configurations are proposed during the search (TPE), not beforehand."""
        return self.strategy == "tpe"

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "n_iter": self.n_iter,
            "min_epochs": self.min_epochs,
            "reduction_factor": self.reduction_factor,
            "space": self.space.to_json(),
        }


def shared_run_key(params: dict[str, Any]) -> tuple:
    """Configurations with equal keys differ only in ``epochs`` and share one training run."""
    return tuple(sorted((k, repr(v)) for k, v in params.items() if k != "epochs"))


def candidates(stage: Stage, seed: int) -> list[dict[str, Any]]:
    """The configurations a non-adaptive stage will try, in the order it tries them.

    Configurations that differ only in epochs are moved next to the first of them, so that
    they land in one batch and share a training run.
    """
    order: dict[tuple, list[dict[str, Any]]] = {}
    for config in _candidates(stage, seed):
        order.setdefault(shared_run_key(config), []).append(config)
    return [config for same in order.values() for config in same]


def _candidates(stage: Stage, seed: int) -> list[dict[str, Any]]:
    space = stage.space
    distributions = space.distributions()
    if stage.strategy == "grid" or (stage.n_iter is None and space.is_grid):
        grid = GridSampler({n: list(v) for n, v in space.dims.items()}, seed=seed)
        return _draw(grid, distributions, space.grid_size)
    n_iter = stage.n_iter
    if not space.is_grid:
        return _draw(RandomSampler(seed=seed), distributions, n_iter)
    grid = list(space.grid())
    if n_iter >= len(grid):
        warnings.warn(
            f"n_iter={n_iter} is not smaller than the grid of {len(grid)} configurations; "
            "every configuration runs once (an exhaustive grid search).",
            UserWarning,
            stacklevel=3,
        )
        n_iter = len(grid)
    # sampling without replacement from a finite grid, as scikit-learn's ParameterSampler
    picks = np.random.default_rng(seed).choice(len(grid), n_iter, replace=False)
    return [grid[i] for i in picks]


def _draw(sampler: BaseSampler, distributions: dict, n: int) -> list[dict[str, Any]]:
    """The first ``n`` configurations ``sampler`` proposes, from a throwaway study.

    Trials are asked and never told: GridSampler hands trial k the k-th grid point of its
    seeded shuffle, and RandomSampler ignores history.
    """
    study = optuna.create_study(sampler=sampler)
    return [dict(study.ask(distributions).params) for _ in range(n)]


def sampler_for(stage: Stage, seed: int) -> BaseSampler:
    """The sampler that proposes new trials: TPE for adaptive stages, else never used."""
    if stage.adaptive:
        startup = max(2, min(10, stage.n_iter // 3))
        return TPESampler(seed=seed, n_startup_trials=startup)
    return RandomSampler(seed=seed)  # only queued trials run; this never samples


def pruner_for(stage: Stage, max_epochs: int) -> BasePruner:
    if stage.strategy == "halving":
        return SuccessiveHalvingPruner(
            min_resource=stage.min_epochs, reduction_factor=stage.reduction_factor
        )
    if stage.strategy == "hyperband":
        return HyperbandPruner(
            min_resource=stage.min_epochs,
            max_resource=max(max_epochs, stage.min_epochs),
            reduction_factor=stage.reduction_factor,
        )
    return NopPruner()
