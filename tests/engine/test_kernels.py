"""The compiled convolution stack against torch's own convolutions, pooling and activations."""

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
    ("members", "channels", "side", "images"),
    [(3, (1, 4, 8), 28, 32), (2, (3, 8, 16), 18, 48)],
    ids=["seed", "wide"],
)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_conv_stack_matches_torch(activation, members, channels, side, images):
    c0, c1, c2 = channels
    x, w1, b1, w2, b2 = leaves(
        (members, c0, side, side, images),
        (members, c1, c0, 3, 3),
        (members, c1),
        (members, c2, c1, 3, 3),
        (members, c2),
    )
    x.requires_grad_(False)
    ours, our_grads = grads(lambda *t: kernels.conv_stack(x, *t, activation), w1, b1, w2, b2)
    theirs, their_grads = grads(
        lambda *t: kernels.conv_stack_torch(x, *t, activation), w1, b1, w2, b2
    )
    pooled = (side - 4) // 2
    assert ours.shape == (members, c2, pooled, pooled, images)
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


def test_dropout_scales_match_the_numpy_reference():
    keys = [0, 2**64 - 1, 0x0123456789ABCDEF, 7]
    rates, counts, features = [0.25, 0.5, 0.0, 0.9], [48, 30, 48, 1], [1152, 1152, 100, 1152]
    ours = kernels.dropout_scales(keys, rates, counts, features, 1152, 48)
    reference = kernels.dropout_scales_numpy(keys, rates, counts, features, 1152, 48)
    assert torch.equal(ours, reference)
    for p, (rate, count, f) in enumerate(zip(rates, counts, features, strict=True)):
        block = ours[p, :f, :count]
        assert block[block > 0].eq(torch.tensor(1 / (1 - rate))).all()
        kept = (block > 0).float().mean().item()
        assert kept == pytest.approx(1 - rate, abs=4 / np.sqrt(block.numel()))
        assert not ours[p, f:].any() and not ours[p, :, count:].any()  # no unit or image there


def test_gather_images_lays_out_each_members_batch_images_innermost():
    x = torch.randn(500, 28, 28)
    index = torch.randint(0, 500, (3, 48), generator=torch.Generator().manual_seed(0))
    expected = torch.stack([x[row].permute(1, 2, 0) for row in index]).unsqueeze(1)
    assert torch.equal(kernels.gather_images(x, index), expected)
