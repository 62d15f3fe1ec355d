"""Search strategies as objects: each knows what it refuses, its candidates, sampler and pruner.

    grid        every configuration of a value-list space (Optuna's GridSampler order)
    random      n_iter configurations: drawn without replacement from a grid, or by
                Optuna's RandomSampler when the space has distributions
    halving     grid or random candidates, pruned by successive halving on epochs
    hyperband   grid or random candidates, pruned by Hyperband on epochs
    tpe         n_iter configurations proposed one after another by Optuna's TPE sampler

A stage (``deepnet.search.spec.Stage``) names its strategy and holds its settings (n_iter,
min_epochs, reduction_factor); the strategy object, looked up by that name, turns them into
Optuna's pieces. Candidate lists are fixed by the seed before any training (and queued in the
study one at a time as they start), so an interrupted search resumes with exactly the
configurations it would have run.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import optuna
from optuna.distributions import IntDistribution
from optuna.pruners import BasePruner, HyperbandPruner, NopPruner, SuccessiveHalvingPruner
from optuna.samplers import BaseSampler, GridSampler, RandomSampler, TPESampler

from deepnet.errors import ConfigError

if TYPE_CHECKING:
    from deepnet.search.space import Space
    from deepnet.search.spec import Stage

DEFAULT_N_ITER = 10
Config = dict[str, Any]


class Strategy:
    """How a stage chooses configurations and when it stops them. The base: a fixed list of
    candidates (all of a grid, else a seeded sample of ``n_iter``), never pruned."""

    name: ClassVar[str]

    def check(self, stage: Stage) -> None:
        """Refuse settings this strategy cannot honour (a ConfigError saying what to do)."""

    def default_n_iter(self, space: Space) -> int | None:
        """n_iter when none is given: a sample needs a count, a grid runs whole."""
        return None if space.is_grid else DEFAULT_N_ITER

    def n_trials(self, stage: Stage) -> int:
        """How many trials the stage runs."""
        if stage.n_iter is None:
            return stage.space.grid_size
        return min(stage.n_iter, stage.space.grid_size)

    def candidates(self, stage: Stage, seed: int) -> list[Config] | None:
        """The configurations to try, in order (None: proposed during the search).

        Configurations that differ only in epochs are moved next to the first of them, so
        that they land in one batch and share a training run.
        """
        order: dict[tuple, list[Config]] = {}
        for config in self._draw(stage, seed):
            order.setdefault(shared_run_key(config), []).append(config)
        return [config for same in order.values() for config in same]

    def sampler(self, stage: Stage, seed: int) -> BaseSampler:
        """The sampler of new trials; with a fixed candidate list it never samples."""
        return RandomSampler(seed=seed)

    def pruner(self, stage: Stage, max_epochs: int) -> BasePruner:
        return NopPruner()

    def _draw(self, stage: Stage, seed: int) -> list[Config]:
        space = stage.space
        if stage.n_iter is None:
            return _grid_order(space, seed)
        if not space.is_grid:
            return _first_proposals(RandomSampler(seed=seed), space, stage.n_iter)
        grid = list(space.grid())
        n_iter = stage.n_iter
        if n_iter >= len(grid):
            warnings.warn(
                f"n_iter={n_iter} is not smaller than the grid of {len(grid)} configurations; "
                "every configuration runs once (an exhaustive grid search).",
                UserWarning,
                stacklevel=4,
            )
            n_iter = len(grid)
        # sampling without replacement from a finite grid, as scikit-learn's ParameterSampler
        picks = np.random.default_rng(seed).choice(len(grid), n_iter, replace=False)
        return [grid[i] for i in picks]


class Grid(Strategy):
    name = "grid"

    def check(self, stage: Stage) -> None:
        if not stage.space.is_grid:
            lists = [n for n, d in stage.space.dims.items() if not isinstance(d, tuple)]
            raise ConfigError(
                f"grid search needs value lists, but {', '.join(lists)} is a distribution: "
                "give a list of values, or use --strategy random, halving or tpe with --n-iter."
            )
        if stage.n_iter is not None:
            raise ConfigError(
                f"n_iter={stage.n_iter!r} has no effect with strategy grid, which runs every "
                f"configuration ({stage.space.grid_size}): drop n_iter, or use strategy random "
                "or halving to try n_iter of them."
            )


class Random(Strategy):
    name = "random"


def max_epochs(space: Space) -> int:
    """The largest epoch budget any configuration of the space can have."""
    dim = space.dims.get("epochs")
    if dim is None:
        from deepnet.config import TrainConfig  # torch: only when a default is needed

        return TrainConfig().epochs
    if isinstance(dim, IntDistribution):
        return dim.high
    return max(dim)


class _Rungs(Strategy):
    """Strategies that stop trials at rungs of epochs, from ``min_epochs`` on."""

    def check(self, stage: Stage) -> None:
        longest = max_epochs(stage.space)
        if stage.min_epochs >= longest:
            raise ConfigError(
                f"min_epochs={stage.min_epochs} is not below the longest budget (epochs up to "
                f"{longest}): {self.name} would never stop a trial. Lower min_epochs, or give "
                "more epochs."
            )


class Halving(_Rungs):
    name = "halving"

    def pruner(self, stage: Stage, max_epochs: int) -> BasePruner:
        return SuccessiveHalvingPruner(
            min_resource=stage.min_epochs, reduction_factor=stage.reduction_factor
        )


class Hyperband(_Rungs):
    name = "hyperband"

    def pruner(self, stage: Stage, max_epochs: int) -> BasePruner:
        return HyperbandPruner(
            min_resource=stage.min_epochs,
            max_resource=max(max_epochs, stage.min_epochs),
            reduction_factor=stage.reduction_factor,
        )


class TPE(Strategy):
    """Adaptive: each configuration is proposed from the scores of those before it."""

    name = "tpe"

    def default_n_iter(self, space: Space) -> int | None:
        return DEFAULT_N_ITER

    def candidates(self, stage: Stage, seed: int) -> list[Config] | None:
        return None

    def sampler(self, stage: Stage, seed: int) -> BaseSampler:
        startup = max(2, min(10, stage.n_iter // 3))
        return TPESampler(seed=seed, n_startup_trials=startup)


STRATEGY_BY_NAME: dict[str, Strategy] = {
    s.name: s for s in (Grid(), Random(), Halving(), Hyperband(), TPE())
}
STRATEGIES = tuple(STRATEGY_BY_NAME)


def shared_run_key(params: dict[str, Any]) -> tuple:
    """Configurations with equal keys differ only in ``epochs`` and share one training run.
    A learning-rate schedule spans a member's epochs, so with one the epochs count too."""
    shared = params.get("lr_schedule", "constant") == "constant"
    return tuple(sorted((k, repr(v)) for k, v in params.items() if k != "epochs" or not shared))


def _grid_order(space: Space, seed: int) -> list[Config]:
    grid = GridSampler({n: list(v) for n, v in space.dims.items()}, seed=seed)
    return _first_proposals(grid, space, space.grid_size)


def _first_proposals(sampler: BaseSampler, space: Space, n: int) -> list[Config]:
    """The first ``n`` configurations ``sampler`` proposes, from a throwaway study (whose
    creation Optuna would announce: it is silenced while it lives).

    Trials are asked and never told: GridSampler hands trial k the k-th grid point of its
    seeded shuffle, and RandomSampler ignores history.
    """
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(sampler=sampler)
    finally:
        optuna.logging.set_verbosity(verbosity)
    distributions = space.distributions()
    return [dict(study.ask(distributions).params) for _ in range(n)]
