import math
from functools import partial

import pytest
import torch

from deepnet import TrainConfig
from deepnet.nn import SeedNet, dropout_scale


def net(**params):
    return SeedNet(TrainConfig(**params), 2, generator=torch.Generator().manual_seed(0))


def test_shapes_follow_the_seed_architecture():
    model = net()
    assert model.conv1.weight.shape == (4, 1, 3, 3)
    assert model.conv2.weight.shape == (8, 4, 3, 3)
    assert model.dense.weight.shape == (16, 8 * 12 * 12)
    assert model.out.weight.shape == (2, 16)
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, 2)


def test_filters_and_neurons_are_parameters():
    model = SeedNet(TrainConfig(conv1_filters=32, conv2_filters=64, neurons=128), 10)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert model.dense.weight.shape == (128, 64 * 12 * 12)


def test_init_mode_applies_to_dense_kernels_only_and_biases_are_zero():
    model = net(init_mode="zero")
    assert torch.count_nonzero(model.dense.weight) == 0
    assert torch.count_nonzero(model.out.weight) == 0
    assert torch.count_nonzero(model.conv1.weight) > 0  # glorot_uniform
    limit = math.sqrt(6 / (9 + 36))
    assert model.conv1.weight.abs().max().item() <= limit
    for layer in (model.conv1, model.conv2, model.dense, model.out):
        assert torch.count_nonzero(layer.bias) == 0


def test_max_norm_applies_after_steps_not_at_init():
    model = net(init_mode="uniform", weight_constraint=0.1)
    before = model.dense.weight.norm(dim=1)
    assert before.max().item() > 0.1  # init is left alone
    model.apply_constraints()
    assert model.dense.weight.norm(dim=1).max().item() <= 0.1 * (1 + 1e-6)  # float32


def test_activation_overrides():
    model = net(activation="tanh", dense_activation="linear")
    x = torch.linspace(-3, 3, 7)
    assert torch.equal(model.conv_activation(x), torch.tanh(x))
    assert torch.equal(model.dense_activation(x), x)


def test_eval_is_deterministic_and_train_mode_drops_out():
    model = net()
    x = torch.rand(8, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    a = model(x, partial(dropout_scale, generator=torch.Generator().manual_seed(1)))
    b = model(x, partial(dropout_scale, generator=torch.Generator().manual_seed(2)))
    assert not torch.equal(a, b)
    kept = model(x, lambda shape, rate: torch.ones(shape))  # masks that keep every unit
    model.eval()
    assert torch.equal(kept, model(x))


def test_feature_maps_shapes():
    first, second = net().feature_maps(torch.rand(3, 1, 28, 28))
    assert first.shape == (3, 4, 26, 26) and second.shape == (3, 8, 24, 24)


@pytest.mark.parametrize("activation", ["softmax", "hard_sigmoid", "linear"])
def test_every_activation_builds_and_backpropagates(activation):
    model = net(activation=activation)
    model(torch.rand(4, 1, 28, 28)).sum().backward()
    assert model.conv1.weight.grad is not None
