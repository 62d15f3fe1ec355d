"""Each initializer's range or spread, checked statistically on large tensors."""

import math

import pytest
import torch

from deepnet.nn import INITIALIZERS

FAN_OUT, FAN_IN = 400, 600  # a Linear weight is (out, in)


def draw(name, shape=(FAN_OUT, FAN_IN)):
    return INITIALIZERS[name](torch.empty(shape), torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("name", "limit"),
    [
        ("uniform", 0.05),
        ("lecun_uniform", math.sqrt(3 / FAN_IN)),
        ("glorot_uniform", math.sqrt(6 / (FAN_IN + FAN_OUT))),
        ("he_uniform", math.sqrt(6 / FAN_IN)),
    ],
)
def test_uniform_family(name, limit):
    w = draw(name)
    assert w.abs().max().item() <= limit
    assert w.abs().max().item() > 0.999 * limit  # fills the range
    assert w.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.01)
    assert abs(w.mean().item()) < 0.01 * limit


@pytest.mark.parametrize(
    ("name", "sd"),
    [("glorot_normal", math.sqrt(2 / (FAN_IN + FAN_OUT))), ("he_normal", math.sqrt(2 / FAN_IN))],
)
def test_truncated_normals_cut_at_two_sd(name, sd):
    w = draw(name)
    assert w.abs().max().item() <= 2 * sd
    # a normal truncated at +-2 sd has standard deviation 0.8796 sd
    assert w.std().item() == pytest.approx(0.8796 * sd, rel=0.01)
    assert (w.abs() > 1.9 * sd).any()


def test_normal_is_not_truncated():
    w = draw("normal")
    assert w.std().item() == pytest.approx(0.05, rel=0.01)
    assert w.abs().max().item() > 4 * 0.05


def test_zero():
    assert torch.count_nonzero(draw("zero")) == 0


def test_conv_fans_include_the_kernel_area():
    # Conv(4 -> 8, 3x3): fan_in = 4*9 = 36, fan_out = 8*9 = 72
    w = draw("he_uniform", (8, 4, 3, 3))
    assert w.abs().max().item() <= math.sqrt(6 / 36)
    assert w.abs().max().item() > 0.9 * math.sqrt(6 / 36)


def test_same_generator_seed_same_weights():
    assert torch.equal(draw("glorot_normal"), draw("glorot_normal"))
