"""The compiled population kernels against torch's own convolution and pooling."""

import numpy as np
import pytest
import torch

from deepnet import Member, PopulationEngine, SequentialEngine, TrainConfig
from deepnet.engine import kernels
from deepnet.nn import ACTIVATIONS


def grads(fn, *inputs):
    out = fn(*inputs)
    weights = torch.cos(torch.arange(out.numel(), dtype=torch.float32)).view_as(out)
    return out, torch.autograd.grad(out, inputs, weights)


def leaves(*shapes):
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=generator).requires_grad_() for s in shapes]


def test_the_kernels_are_compiled_here():
    assert kernels.native()


@pytest.mark.parametrize(
    ("members", "c_in", "c_out", "side", "images"),
    [(3, 1, 4, 28, 16), (3, 4, 8, 26, 32), (2, 8, 16, 26, 48)],
    ids=["conv1", "conv2", "wide"],
)
def test_conv3x3_matches_grouped_torch_convolution(members, c_in, c_out, side, images):
    x, w, b = leaves(
        (members, c_in, side, side, images), (members, c_out, c_in, 3, 3), (members, c_out)
    )
    ours, our_grads = grads(kernels.conv3x3, x, w, b)
    theirs, their_grads = grads(kernels.conv3x3_torch, x, w, b)
    assert ours.shape == (members, c_out, side - 2, side - 2, images)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    for a, c in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=2e-3)


def test_max_pool2x2_matches_torch_and_routes_gradients_to_the_maximum():
    (x,) = leaves((3, 8, 24, 24, 32))
    ours, (our_grad,) = grads(kernels.max_pool2x2, x)
    theirs, (their_grad,) = grads(kernels.max_pool2x2_torch, x)
    assert torch.equal(ours, theirs) and torch.equal(our_grad, their_grad)
    assert (our_grad != 0).sum() == ours.numel()


@pytest.mark.parametrize("activation", sorted(set(ACTIVATIONS) - {"softmax"}))
def test_conv_stack_matches_torch_for_every_activation(activation):
    x, w1, b1, w2, b2 = leaves((3, 1, 28, 28, 32), (3, 4, 1, 3, 3), (3, 4), (3, 8, 4, 3, 3), (3, 8))
    x.requires_grad_(False)
    ours, our_grads = grads(lambda *t: kernels.conv_stack(x, *t, activation), w1, b1, w2, b2)
    theirs, their_grads = grads(
        lambda *t: kernels.conv_stack_torch(x, *t, activation), w1, b1, w2, b2
    )
    assert ours.shape == (3, 8, 12, 12, 32)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    for a, c in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=2e-3)


@pytest.mark.parametrize("activation", sorted(kernels.ACTIVATION_CODES))
def test_compiled_activations_match_torch_from_zero_to_saturation(activation):
    """Centre-tap kernels make conv_stack activate the images themselves, -40..40."""
    images = torch.linspace(-40, 40, 6 * 6 * 4096).view(1, 1, 6, 6, 4096)
    w = torch.zeros(1, 1, 1, 3, 3)
    w[..., 1, 1] = 1.0
    args = (images, w, torch.zeros(1, 1), w, torch.zeros(1, 1), activation)
    ours, theirs = kernels.conv_stack(*args), kernels.conv_stack_torch(*args)
    torch.testing.assert_close(ours, theirs, rtol=3e-7, atol=1e-7)


def test_conv_stack_refuses_softmax_which_does_not_commute_with_pooling():
    x, w1, b1, w2, b2 = leaves((1, 1, 8, 8, 16), (1, 2, 1, 3, 3), (1, 2), (1, 2, 2, 3, 3), (1, 2))
    with pytest.raises(ValueError, match="cannot fuse softmax"):
        kernels.conv_stack(x, w1, b1, w2, b2, "softmax")


def test_without_a_compiler_the_engine_falls_back_to_torch(small27, monkeypatch, tmp_path):
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    monkeypatch.setenv("DEEPNET_CACHE", str(tmp_path))
    kernels._library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="compiling kernels.c failed"):
            assert not kernels.native()
        config = TrainConfig(epochs=1, batch_size=64)
        member = Member("m", config, np.arange(600), np.arange(600, 1000), 3)
        args = (small27.x_train, small27.y_train, 2, [member])
        (pop,) = PopulationEngine().train(*args)
        (seq,) = SequentialEngine().train(*args)
        assert pop.val_loss == pytest.approx(seq.val_loss, rel=1e-5)
    finally:
        kernels._library.cache_clear()
