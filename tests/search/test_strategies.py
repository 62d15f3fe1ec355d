import pytest
from optuna.pruners import HyperbandPruner, NopPruner, SuccessiveHalvingPruner
from optuna.samplers import RandomSampler, TPESampler

from deepnet import ConfigError, Space, Stage, loguniform
from deepnet.search.strategies import STRATEGIES, STRATEGY_BY_NAME, TPE, Grid, Halving

GRID = Space.from_dict({"optimizer": ["SGD", "Adam", "Nadam"], "neurons": [16, 30]})


def candidates(stage, seed):
    return stage.candidates(seed)


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
    n_iter = None if strategy == "grid" else 2
    assert isinstance(Stage(GRID, strategy, n_iter=n_iter).pruner(12), pruner)


def test_each_name_is_one_strategy_object():
    assert STRATEGIES == ("grid", "random", "halving", "hyperband", "tpe")
    assert [s.name for s in STRATEGY_BY_NAME.values()] == list(STRATEGIES)
    assert isinstance(Stage(GRID, " Halving ").algorithm, Halving)
    assert Stage(GRID, " Halving ").strategy == "halving"  # canonical: fingerprints agree
    assert isinstance(Stage(GRID).algorithm, Grid)


def test_only_tpe_proposes_configurations_during_the_search():
    tpe = Stage(GRID, "tpe", n_iter=9)
    assert isinstance(tpe.algorithm, TPE) and tpe.candidates(0) is None
    assert isinstance(tpe.sampler(0), TPESampler)
    for name in ("grid", "random", "halving", "hyperband"):
        stage = Stage(GRID, name)
        assert len(stage.candidates(0)) == 6 and isinstance(stage.sampler(0), RandomSampler)


def test_sampled_stages_default_to_ten_configurations():
    space = Space.from_dict({"learn_rate": loguniform(1e-4, 1e-1)})
    assert Stage(space, "random").n_iter == 10 and Stage(GRID, "tpe").n_iter == 10
    assert Stage(GRID, "random").n_iter is None and Stage(GRID, "random").n_trials == 6


def test_unknown_strategy():
    with pytest.raises(
        ConfigError,
        match="strategy='bayes' is not allowed: it must be one of grid, random, halving, "
        "hyperband, tpe",
    ):
        Stage(GRID, "bayes")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": 5}, "strategy=5 is not allowed: it must be one of grid"),
        ({"strategy": "random", "n_iter": "5"}, r"n_iter='5' is not allowed: .* integer >= 1"),
        ({"strategy": "random", "n_iter": 2.0}, r"n_iter=2.0 is not allowed"),
        ({"strategy": "halving", "min_epochs": "1"}, r"min_epochs='1' is not allowed"),
        ({"strategy": "halving", "reduction_factor": 1.5}, r"reduction_factor=1.5 .*>= 2"),
        ({"strategy": "halving", "reduction_factor": 1}, r"reduction_factor=1 .*>= 2"),
        ({"strategy": "halving", "min_epochs": True}, r"min_epochs=True is not allowed"),
    ],
)
def test_stage_settings_of_the_wrong_type_or_range(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Stage(GRID, **kwargs)


def test_grid_refuses_n_iter_instead_of_ignoring_it():
    with pytest.raises(
        ConfigError,
        match=r"n_iter=5 has no effect with strategy grid, which runs every configuration "
        r"\(6\): drop n_iter, or use strategy random or halving",
    ):
        Stage(GRID, "grid", n_iter=5)


def test_a_space_must_be_a_space():
    with pytest.raises(ConfigError, match="give a Space"):
        Stage({"neurons": [16]})


def test_grid_refuses_distributions():
    space = Space.from_dict({"learn_rate": loguniform(1e-4, 1e-1)})
    with pytest.raises(
        ConfigError, match="grid search needs value lists, but learn_rate is a distribution"
    ):
        Stage(space, "grid")


def test_n_iter_must_be_positive():
    with pytest.raises(ConfigError, match="n_iter=0"):
        Stage(GRID, "random", n_iter=0)
