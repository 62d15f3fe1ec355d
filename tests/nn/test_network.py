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


def test_each_block_draws_its_own_dropout_mask_then_the_dense_layer():
    """The draws, in order: conv_dropout after each block's pooling, then dropout_rate."""
    model = net(conv_blocks=2, dropout_rate=0.5)
    drawn = []

    def scales(shape, rate):
        drawn.append((tuple(shape), rate))
        return torch.ones(shape)

    model.train()
    model(torch.rand(3, 1, 28, 28), scales)
    assert drawn == [((3, 8, 12, 12), 0.25), ((3, 16, 4, 4), 0.25), ((3, 16), 0.5)]


def test_batch_norm_has_keras_2_meanings():
    """Batch statistics while training, moving averages (momentum 0.99, unbiased variance)
    at evaluation, epsilon 1e-3; scale 1 and shift 0 at init; convolutions without bias."""
    model = net(batch_norm=True, conv_dropout=0.0, dropout_rate=0.0)
    assert model.conv1.bias is None and model.conv2.bias is None
    assert torch.equal(model.bn1.weight, torch.ones(4)) and not model.bn1.bias.any()
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        z = model.conv1(x)
    model.train()
    model(x)
    mean, var = z.mean((0, 2, 3)), z.var((0, 2, 3), unbiased=True)
    torch.testing.assert_close(model.bn1.running_mean, 0.01 * mean)
    torch.testing.assert_close(model.bn1.running_var, 0.99 + 0.01 * var)
    model.eval()
    normed = model.bn1(z)
    expected = (z - model.bn1.running_mean[:, None, None]) / torch.sqrt(
        model.bn1.running_var[:, None, None] + 1e-3
    )
    torch.testing.assert_close(normed, expected)


def test_batch_norm_state_loads_from_a_plain_dict():
    """The population engine loads rows as plain dicts of the four float tensors a norm
    holds; torch's own BatchNorm2d would want its batch counter back."""
    model, other = net(batch_norm=True), net(batch_norm=True, init_mode="zero")
    model.bn2.running_var.fill_(3.0)
    other.load_state_dict(dict(model.state_dict()))
    assert torch.equal(other.bn2.running_var, torch.full((8,), 3.0))
    assert "bn1.num_batches_tracked" not in model.state_dict()


def test_deeper_stacks_draw_their_kernels_after_the_first_blocks():
    """conv1 and conv2 draw first, as in the seed, so block 1 starts the same at any depth."""
    one, two = net(), net(conv_blocks=2)
    assert torch.equal(one.conv1.weight, two.conv1.weight)
    assert torch.equal(one.conv2.weight, two.conv2.weight)
    assert two.conv4.weight.shape == (16, 16, 3, 3)
    assert torch.count_nonzero(two.conv3.bias) == 0


@pytest.mark.parametrize("activation", ["softmax", "relu"])
def test_deep_batch_normed_nets_backpropagate_and_show_the_first_blocks_maps(activation):
    model = net(conv_blocks=2, batch_norm=True, activation=activation)
    model(torch.rand(4, 1, 28, 28)).sum().backward()
    assert model.conv3.weight.grad is not None and model.bn4.weight.grad is not None
    first, second = model.feature_maps(torch.rand(3, 1, 28, 28))
    assert first.shape == (3, 4, 26, 26) and second.shape == (3, 8, 24, 24)
