"""Each optimizer against its written Keras 2.0 rule, and against torch.optim where equal."""

import math
from itertools import pairwise

import pytest
import torch

from deepnet.nn import OPTIMIZERS
from deepnet.nn.optimizers import SGD, Adadelta, Adagrad, Adam, Adamax, Nadam, RMSprop


def run(cls, grads, p0=1.0, **kw):
    """Apply a sequence of gradients to one float64 scalar; return the parameter after each."""
    p = torch.tensor([p0], dtype=torch.float64, requires_grad=True)
    opt = cls([p], **kw)
    out = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        out.append(p.item())
    return out


# First steps worked by hand from docs/keras2-semantics.md (p0 = 1).
@pytest.mark.parametrize(
    ("cls", "kw", "grads", "expected"),
    [
        (SGD, {"lr": 0.1}, [0.5], [0.95]),
        (SGD, {"lr": 0.1, "momentum": 0.9}, [0.5, 0.5], [0.95, 0.855]),
        # nesterov, step 1: v = -0.05; p += 0.9*v - 0.1*0.5 = -0.095
        (SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}, [0.5], [0.905]),
        # a = 0.1*g^2, so the step is lr*g/(sqrt(0.1)*|g|) = 0.001*3.16227766
        (RMSprop, {}, [2.0], [1 - 0.001 / math.sqrt(0.1)]),
        # a = g^2: a step of lr*sign(g)
        (Adagrad, {}, [3.0, 3.0], [0.99, 0.99 - 0.01 * 3 / math.sqrt(18)]),
        # u = 1*sqrt(1e-8)/sqrt(0.05+1e-8)
        (Adadelta, {}, [1.0], [1 - 1e-4 / math.sqrt(0.05 + 1e-8)]),
        # lr_t = lr*sqrt(1-b2)/(1-b1); m/(sqrt(v)+eps) = 0.1/sqrt(0.001) for g = 1
        (Adam, {}, [1.0], [1 - 0.001]),
        # m = 0.1*g, u = |g|: a step of lr/(1-b1)*0.1 = lr
        (Adamax, {}, [4.0], [1 - 0.002]),
    ],
    ids=["sgd", "sgd-momentum", "sgd-nesterov", "rmsprop", "adagrad", "adadelta", "adam", "adamax"],
)
def test_hand_worked_steps(cls, kw, grads, expected):
    assert run(cls, grads, **kw) == pytest.approx(expected, rel=1e-7, abs=1e-10)


def test_adam_puts_eps_on_the_raw_sqrt_v_unlike_torch():
    # Tiny gradient: eps dominates. Keras: m = 1e-9, sqrt(v) = sqrt(1e-3)*1e-8
    g = 1e-8
    keras_step = 0.001 * math.sqrt(1e-3) / 0.1 * (0.1 * g) / (math.sqrt(1e-3) * g + 1e-8)
    assert 1 - run(Adam, [g])[0] == pytest.approx(keras_step, rel=1e-9)
    torch_step = 0.001 * g / (g + 1e-8)  # torch: bias-corrected m / (sqrt(v_hat) + eps)
    assert abs(keras_step - torch_step) > 0.3 * torch_step


def test_adamax_puts_eps_outside_the_max():
    g = 1e-8  # u = |g|; Keras divides by u + eps
    expected = 0.002 / 0.1 * (0.1 * g) / (g + 1e-8)
    assert 1 - run(Adamax, [g])[0] == pytest.approx(expected, rel=1e-9)


def test_nadam_schedule_by_hand():
    g = 1.0
    mu1 = 0.9 * (1 - 0.5 * 0.96**0.004)
    mu2 = 0.9 * (1 - 0.5 * 0.96**0.008)
    m, v = 0.1 * g, 0.001 * g * g
    m_bar = (1 - mu1) * g / (1 - mu1) + mu2 * m / (1 - mu1 * mu2)
    expected = 1 - 0.002 * m_bar / (math.sqrt(v / 0.001) + 1e-8)
    assert run(Nadam, [g])[0] == pytest.approx(expected, rel=1e-12)


TORCH_EQUIVALENTS = [
    ("SGD", {"lr": 0.05}, torch.optim.SGD, {"lr": 0.05}),
    ("SGD", {"lr": 0.05, "momentum": 0.9}, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    (
        "SGD",
        {"lr": 0.05, "momentum": 0.9, "nesterov": True},
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    ),
    ("RMSprop", {}, torch.optim.RMSprop, {"lr": 0.001, "alpha": 0.9, "eps": 1e-8}),
    ("Adagrad", {}, torch.optim.Adagrad, {"lr": 0.01, "eps": 1e-8}),
    ("Adadelta", {}, torch.optim.Adadelta, {"lr": 1.0, "rho": 0.95, "eps": 1e-8}),
    ("Nadam", {}, torch.optim.NAdam, {"lr": 0.002, "momentum_decay": 4e-3}),
]


@pytest.mark.parametrize(
    ("name", "kw", "torch_cls", "torch_kw"),
    TORCH_EQUIVALENTS,
    ids=[f"{t[0]}-{i}" for i, t in enumerate(TORCH_EQUIVALENTS)],
)
def test_matches_torch_where_the_rule_is_the_same(name, kw, torch_cls, torch_kw):
    gen = torch.Generator().manual_seed(1)
    target = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    start = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    ours = start.clone().requires_grad_()
    theirs = start.clone().requires_grad_()
    opt_ours, opt_theirs = OPTIMIZERS[name]([ours], **kw), torch_cls([theirs], **torch_kw)
    for _ in range(25):
        for p, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            torch.log1p((p - target) ** 2).sum().backward()  # bounded gradients
            opt.step()
    # torch keeps NAdam's momentum product as a float32 tensor; ours is a Python float
    rtol = 1e-7 if name == "Nadam" else 1e-10
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=1e-12)
    assert not torch.equal(ours, start)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_descends_a_quadratic_at_its_default_rate(name):
    p = torch.full((4,), 3.0, dtype=torch.float64, requires_grad=True)
    opt = OPTIMIZERS[name]([p])
    values = []
    for _ in range(200):
        opt.zero_grad()
        (p**2).sum().backward()
        opt.step()
        values.append(p[0].item())
    assert all(b < a for a, b in pairwise(values))
    assert values[-1] < 3.0


def test_unknown_optimizer_argument_is_refused():
    with pytest.raises(TypeError, match="unknown arguments"):
        Adam([torch.zeros(1, requires_grad=True)], momentum=0.9)
