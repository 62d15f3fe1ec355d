import math

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from deepnet import ConfigError, Space, loguniform, randint, uniform
from deepnet.search.space import parse_options


def test_seed_style_grid_with_scalars():
    space = Space.from_dict(
        {"batch_size": 128, "epochs": 12, "optimizer": ["SGD", "adam"], "neurons": [25, 30, 35]}
    )
    assert space.dims["batch_size"] == (128,)
    assert space.dims["optimizer"] == ("SGD", "Adam")
    assert space.is_grid and space.grid_size == 6
    grid = list(space.grid())
    assert len(grid) == 6 and grid[0] == {
        "batch_size": 128,
        "epochs": 12,
        "optimizer": "SGD",
        "neurons": 25,
    }


def test_distributions():
    space = Space.from_dict(
        {
            "learn_rate": loguniform(1e-4, 1e-1),
            "dropout_rate": uniform(0.1, 0.6),
            "neurons": randint(16, 128),
        }
    )
    assert not space.is_grid and math.isinf(space.grid_size)
    d = space.distributions()
    assert isinstance(d["learn_rate"], FloatDistribution) and d["learn_rate"].log
    assert isinstance(d["neurons"], IntDistribution)


def test_cli_options_and_toml_forms_agree():
    from_cli = Space.from_options(
        [
            "optimizer=SGD,Adam",
            "learn_rate=loguniform:1e-4:1e-1",
            "neurons=int:16:64",
            "weight_constraint=1,3,none",
        ]
    )
    from_toml = Space.from_dict(
        {
            "optimizer": ["SGD", "Adam"],
            "learn_rate": {"loguniform": [1e-4, 1e-1]},
            "neurons": {"int": [16, 64]},
            "weight_constraint": [1, 3, None],
        }
    )
    assert from_cli == from_toml
    assert from_cli.to_json()["learn_rate"] == {"loguniform": [1e-4, 1e-1]}


def test_lists_become_categorical_distributions():
    d = Space.from_dict({"optimizer": ["SGD", "Adam"]}).distributions()
    assert d["optimizer"] == CategoricalDistribution(("SGD", "Adam"))


def test_fixed_adds_only_unsearched_parameters():
    space = Space.from_dict({"neurons": [25, 30]}).fixed({"neurons": 99, "optimizer": "Nadam"})
    assert space.dims == {"optimizer": ("Nadam",), "neurons": (25, 30)}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "the search space is empty"),
        ({"nuerons": [1]}, "unknown parameter 'nuerons': did you mean 'neurons'"),
        ({"neurons": []}, "neurons has an empty list of values"),
        ({"activation": ["relu", "rel"]}, r"did you mean 'relu'"),
        (
            {"dropout_rate": [0.5, 1.5]},
            r"dropout_rate=1.5 is not allowed: it must be a number "
            r">= 0 and < 1",
        ),
        ({"neurons": [30, 30]}, "lists a value twice"),
        ({"optimizer": loguniform(1, 2)}, "optimizer takes one of SGD"),
        ({"neurons": uniform(1, 2)}, "integer parameter"),
        ({"learn_rate": {"loguniform": [1e-1, 1e-4]}}, "needs low < high"),
        ({"learn_rate": {"gaussian": [0, 1]}}, "a distribution is one of loguniform"),
        ({"dropout_rate": uniform(0.5, 1.5)}, r">= 0 and < 1"),
        ({"learn_rate": {"loguniform": [0, 1]}}, r"needs low > 0 \(it is uniform in log space\)"),
        ({"neurons": {"logint": [0, 8]}}, r"neurons: logint needs low > 0"),
        ({"neurons": {"int": [1.5, 8]}}, r"neurons: int needs integer bounds, got \[1.5, 8\]"),
        ({"learn_rate": {"uniform": [0.1, float("inf")]}}, "needs finite bounds"),
        ({"learn_rate": {"uniform": [0.1, float("nan")]}}, "needs finite bounds"),
        ({"learn_rate": {"uniform": ["a", 1]}}, r"needs two numbers \[low, high\]"),
        ({"learn_rate": {"uniform": [1e-3]}}, r"needs two numbers \[low, high\], got \[0.001\]"),
        ({"neurons": {"int": [True, 8]}}, r"needs two numbers"),
        ({"learn_rate": {"uniform": [0, 1]}}, r"learn_rate=0.0 is not allowed: .* > 0"),
        ({"neurons": {"uniform": [1, 8]}}, "neurons is an integer parameter"),
        ({"learn_rate": {"int": [1, 8]}}, "int ranges are for integer parameters"),
        (5, r"space=5 is not allowed: it must map parameter names to values"),
    ],
)
def test_bad_spaces(values, message):
    with pytest.raises(ConfigError, match=message):
        Space.from_dict(values)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: loguniform(0, 1), r"loguniform needs low > 0 .*got \[0, 1\]"),
        (lambda: uniform(1, 1), r"uniform needs low < high, got \[1, 1\]"),
        (lambda: randint(1, 2.5), r"int needs integer bounds"),
        (lambda: randint(0, 8, log=True), r"logint needs low > 0"),
    ],
)
def test_distribution_helpers_refuse_bad_bounds_with_a_config_error(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_distribution_helpers_and_their_json_round_trip():
    space = Space.from_dict(
        {"neurons": randint(8, 64, log=True), "learn_rate": loguniform(1e-4, 1e-1)}
    )
    assert space.to_json() == {
        "neurons": {"logint": [8, 64]},
        "learn_rate": {"loguniform": [1e-4, 1e-1]},
    }
    assert Space.from_dict(space.to_json()) == space


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("neurons", "has no values"),
        ("neurons=", "has no values"),
        ("learning_rate=0.1", "did you mean 'learn_rate'"),
        ("learn_rate=loguniform:1", "write loguniform:LOW:HIGH"),
        ("learn_rate=loguniform:0:1", r"learn_rate: loguniform needs low > 0"),
        ("learn_rate=uniform:x:1", r"learn_rate: uniform needs two numbers"),
        ("neurons=int:8:4", r"neurons: int needs low < high, got \[8, 4\]"),
    ],
)
def test_bad_cli_options(option, message):
    with pytest.raises(ConfigError, match=message):
        Space.from_dict(parse_options([option]))
