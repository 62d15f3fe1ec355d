import pytest
from optuna.pruners import HyperbandPruner, NopPruner, SuccessiveHalvingPruner

from deepnet import ConfigError, Space, Stage, loguniform
from deepnet.search.strategies import candidates, pruner_for

GRID = Space.from_dict({"optimizer": ["SGD", "Adam", "Nadam"], "neurons": [16, 30]})


def key(configs):
    return sorted(tuple(sorted(c.items())) for c in configs)


def test_grid_runs_every_configuration_in_a_seeded_order():
    a, b, c = (candidates(Stage(GRID, "grid"), s) for s in (0, 0, 1))
    assert key(a) == key(GRID.grid()) and len(a) == 6
    assert a == b and a != c


def test_random_samples_a_grid_without_replacement():
    picks = candidates(Stage(GRID, "random", n_iter=4), seed=3)
    assert len(picks) == 4 and len(key(picks)) == len({tuple(sorted(p.items())) for p in picks})
    assert picks == candidates(Stage(GRID, "random", n_iter=4), seed=3)


def test_n_iter_beyond_the_grid_runs_it_once_and_says_so():
    with pytest.warns(
        UserWarning,
        match="n_iter=50 is not smaller than the grid of 6 "
        "configurations; every configuration runs once",
    ):
        picks = candidates(Stage(GRID, "random", n_iter=50), seed=0)
    assert key(picks) == key(GRID.grid())


def test_random_draws_distributions_within_bounds():
    space = Space.from_dict({"learn_rate": loguniform(1e-4, 1e-1), "optimizer": ["SGD", "Adam"]})
    picks = candidates(Stage(space, "random", n_iter=20), seed=0)
    assert len(picks) == 20
    assert all(1e-4 <= p["learn_rate"] <= 1e-1 for p in picks)
    assert {p["optimizer"] for p in picks} == {"SGD", "Adam"}


def test_halving_over_a_grid_queues_the_grid():
    assert len(candidates(Stage(GRID, "halving"), 0)) == 6
    assert Stage(GRID, "halving").n_trials == 6
    assert Stage(GRID, "tpe", n_iter=4).n_trials == 4


@pytest.mark.parametrize(
    ("strategy", "pruner"),
    [
        ("grid", NopPruner),
        ("random", NopPruner),
        ("tpe", NopPruner),
        ("halving", SuccessiveHalvingPruner),
        ("hyperband", HyperbandPruner),
    ],
)
def test_pruners(strategy, pruner):
    assert isinstance(pruner_for(Stage(GRID, strategy, n_iter=2), 12), pruner)


def test_unknown_strategy():
    with pytest.raises(
        ConfigError,
        match="unknown strategy 'bayes': choose one of grid, random, halving, hyperband, tpe",
    ):
        Stage(GRID, "bayes")


def test_grid_refuses_distributions():
    space = Space.from_dict({"learn_rate": loguniform(1e-4, 1e-1)})
    with pytest.raises(
        ConfigError, match="grid search needs value lists, but learn_rate is a distribution"
    ):
        Stage(space, "grid")


def test_n_iter_must_be_positive():
    with pytest.raises(ConfigError, match="n_iter=0"):
        Stage(GRID, "random", n_iter=0)
