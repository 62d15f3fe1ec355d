import pytest
import torch

from deepnet.nn import ACTIVATIONS

X = torch.linspace(-6, 6, 241, dtype=torch.float64)

FORMULAS = {
    "softplus": lambda x: torch.log1p(torch.exp(x)),
    "softsign": lambda x: x / (1 + x.abs()),
    "relu": lambda x: torch.where(x > 0, x, 0.0),
    "tanh": lambda x: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)),
    "sigmoid": lambda x: 1 / (1 + torch.exp(-x)),
    "hard_sigmoid": lambda x: torch.clamp(0.2 * x + 0.5, 0, 1),
    "linear": lambda x: x,
}


@pytest.mark.parametrize("name", list(FORMULAS))
def test_matches_formula(name):
    torch.testing.assert_close(ACTIVATIONS[name](X), FORMULAS[name](X))


def test_hard_sigmoid_is_keras_not_torch():
    x = torch.tensor([-2.5, -1.0, 0.0, 1.0, 2.5])
    assert ACTIVATIONS["hard_sigmoid"](x).tolist() == pytest.approx([0.0, 0.3, 0.5, 0.7, 1.0])
    assert not torch.allclose(ACTIVATIONS["hard_sigmoid"](x), torch.nn.functional.hardsigmoid(x))


def test_softmax_on_a_conv_output_normalises_over_channels():
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    y = ACTIVATIONS["softmax"](x)
    torch.testing.assert_close(y.sum(dim=1), torch.ones(2, 5, 5, dtype=torch.float64))
    e = torch.exp(x[0, :, 1, 2])
    torch.testing.assert_close(y[0, :, 1, 2], e / e.sum())


def test_softmax_on_a_dense_output_normalises_over_units():
    y = ACTIVATIONS["softmax"](torch.randn(3, 30))
    torch.testing.assert_close(y.sum(dim=1), torch.ones(3))


def test_all_eight_seed_activations_exist():
    assert set(ACTIVATIONS) == {
        "softmax",
        "softplus",
        "softsign",
        "relu",
        "tanh",
        "sigmoid",
        "hard_sigmoid",
        "linear",
    }
