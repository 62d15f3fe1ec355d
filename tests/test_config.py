import math

import pytest

from deepnet import PARAMS, ConfigError, TrainConfig


def test_defaults_are_the_seed_baseline():
    c = TrainConfig()
    assert (c.batch_size, c.epochs, c.optimizer, c.activation) == (128, 12, "Adadelta", "relu")
    assert (c.neurons, c.dropout_rate, c.conv_dropout) == (16, 0.5, 0.25)
    assert (c.conv1_filters, c.conv2_filters, c.init_mode) == (4, 8, "glorot_uniform")
    assert c.learn_rate is None and c.weight_constraint is None
    assert c.effective_learn_rate == 1.0  # Keras' Adadelta default


@pytest.mark.parametrize(
    ("optimizer", "lr"),
    [
        ("SGD", 0.01),
        ("RMSprop", 0.001),
        ("Adagrad", 0.01),
        ("Adadelta", 1.0),
        ("Adam", 0.001),
        ("Adamax", 0.002),
        ("Nadam", 0.002),
    ],
)
def test_unset_learn_rate_is_the_keras_default(optimizer, lr):
    assert TrainConfig(optimizer=optimizer).effective_learn_rate == lr


def test_optimizer_names_are_case_insensitive_and_canonicalised():
    assert TrainConfig(optimizer="nadam").optimizer == "Nadam"
    assert TrainConfig(optimizer="rmsprop").optimizer == "RMSprop"


def test_seed_grid_values_are_accepted():
    c = TrainConfig.from_dict(
        {
            "weight_constraint": 3,
            "learn_rate": 0.002,
            "neurons": 30,
            "init_mode": "lecun_uniform",
            "dropout_rate": 0.25,
        }
    )
    assert c.weight_constraint == 3.0 and isinstance(c.weight_constraint, float)


def test_unknown_parameter_suggests_the_closest_name():
    with pytest.raises(
        ConfigError,
        match=r"unknown parameter 'learning_rate': did you mean "
        r"'learn_rate'\?",
    ):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_unknown_parameter_without_close_match_lists_known_names():
    with pytest.raises(ConfigError, match="known parameters are batch_size, epochs"):
        TrainConfig.from_dict({"zzz": 1})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("activation", "rel", r"one of softmax, .*linear \(did you mean 'relu'\?\)"),
        ("optimizer", "adamw", r"one of SGD, RMSprop, Adagrad, Adadelta, Adam, Adamax, Nadam"),
        ("init_mode", "glorot", r"one of uniform, lecun_uniform"),
        ("dropout_rate", 1.0, r"dropout_rate=1.0 .* >= 0 and < 1"),
        ("dropout_rate", -0.1, r">= 0 and < 1"),
        ("learn_rate", 0.0, r"learn_rate=0.0 .* a number > 0, or none"),
        ("learn_rate", math.inf, r"a number > 0"),
        ("neurons", 0, r"an integer >= 1"),
        ("neurons", 2.5, r"neurons=2.5 .* an integer"),
        ("batch_size", True, r"an integer"),
        ("epochs", "12", r"epochs='12' .* an integer"),
        ("weight_constraint", -3, r"a number > 0, or none"),
        ("augment_shift", -1, r"augment_shift=-1 .* an integer >= 0 and <= 64"),
        ("augment_rotate", 181, r"augment_rotate=181 .* a number >= 0 and <= 180"),
        ("augment_scale", 1.0, r">= 0 and < 1"),
        ("lr_schedule", "cosin", r"constant, cosine, onecycle, step \(did you mean 'cosine'\?\)"),
        ("conv_blocks", 4, r"conv_blocks=4 .* an integer >= 1 and <= 3"),
        ("batch_norm", "maybe", r"batch_norm='maybe' .* true or false"),
        ("batch_norm", 1, r"true or false"),
        ("warmup_epochs", -1, r"an integer >= 0"),
    ],
)
def test_bad_values_name_the_rule(name, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{name: value})


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("learn_rate", "0.01", 0.01),
        ("learn_rate", "none", None),
        ("neurons", "30", 30),
        ("optimizer", "sgd", "SGD"),
        ("conv_activation", "None", None),
        ("batch_norm", "yes", True),
        ("augment_flip", "Off", False),
        ("lr_schedule", "OneCycle", "onecycle"),
    ],
)
def test_parse_text(name, text, value):
    assert PARAMS[name].parse(text) == value


def test_parse_rejects_non_numbers():
    with pytest.raises(ConfigError, match="neurons='many' is not allowed"):
        PARAMS["neurons"].parse("many")


def test_replace_validates():
    with pytest.raises(ConfigError):
        TrainConfig().replace(neurons=-1)
    assert TrainConfig().replace(neurons=30).neurons == 30


def test_round_trip_through_dict():
    c = TrainConfig(optimizer="Nadam", weight_constraint=3, dense_activation="linear")
    assert TrainConfig.from_dict(c.to_dict()) == c


def test_a_warmup_as_long_as_the_epochs_is_refused():
    with pytest.raises(ConfigError, match="warmup_epochs=12 is not fewer than epochs=12"):
        TrainConfig(warmup_epochs=12)
    assert TrainConfig(warmup_epochs=11).warmup_epochs == 11


def test_blocks_take_their_own_filters_or_double_the_last():
    assert TrainConfig().block_filters == ((4, 8),)
    deep = TrainConfig(conv_blocks=3, conv2_filters=16, block3_filters=20)
    assert deep.block_filters == ((4, 16), (32, 32), (20, 20))
    assert TrainConfig(conv_blocks=1, block2_filters=64).block_filters == ((4, 8),)


def test_the_defaults_neither_augment_nor_schedule():
    config = TrainConfig()
    assert not config.augments and config.lr_schedule == "constant"
    assert config.conv_blocks == 1 and not config.batch_norm
