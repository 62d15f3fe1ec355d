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
    ],
)
def test_bad_spaces(values, message):
    with pytest.raises(ConfigError, match=message):
        Space.from_dict(values)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("neurons", "has no values"),
        ("neurons=", "has no values"),
        ("learning_rate=0.1", "did you mean 'learn_rate'"),
        ("learn_rate=loguniform:1", "write loguniform:LOW:HIGH"),
    ],
)
def test_bad_cli_options(option, message):
    with pytest.raises(ConfigError, match=message):
        Space.from_dict(parse_options([option]))
