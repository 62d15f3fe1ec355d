"""The compiled convolution stack against torch's own convolutions, pooling and activations."""

import math
import platform

import numpy as np
import pytest
import torch
from torch.autograd import Function

from deepnet import ConfigError, Member, PopulationEngine, SequentialEngine, TrainConfig
from deepnet.engine import kernels
from deepnet.engine.device import check_precision
from deepnet.engine.dropout import MaskStream, draw
from deepnet.evaluate import images_to_tensor
from deepnet.nn import ACTIVATIONS
from deepnet.nn.initializers import INITIALIZERS
from deepnet.nn.network import pool_activate
from tests.engine.fallback import built_for, needs_bf16, without_compiler
from tests.engine.images import SIZES, crop


def grads(fn, *inputs):
    out = fn(*inputs)
    weights = torch.cos(torch.arange(out.numel(), dtype=torch.float32)).view_as(out)
    return out, torch.autograd.grad(out, inputs, weights)


def leaves(*shapes):
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=generator).requires_grad_() for s in shapes]


def block_leaves(members, c0, c1, c2, size, images):
    """A block's x, first kernels, first per-channel vector, second kernels and second
    per-channel vector, as seeded normal leaves requiring gradients."""
    return leaves(
        (members, c0, *size, images),
        (members, c1, c0, 3, 3),
        (members, c1),
        (members, c2, c1, 3, 3),
        (members, c2),
    )


def stack_inputs(members=2, channels=(1, 4, 8), size=(12, 12), images=16):
    """A block's x, w1, b1, w2, b2 (seeded normal values), the weights requiring gradients."""
    x, w1, b1, w2, b2 = block_leaves(members, *channels, size, images)
    return x.detach(), w1, b1, w2, b2


def test_the_kernels_are_compiled_here():
    assert kernels.native()


@pytest.mark.parametrize(
    ("members", "channels", "size", "images"),
    [
        (3, (1, 4, 8), (28, 28), 32),
        (2, (3, 8, 16), (18, 18), 48),
        (2, (3, 4, 8), (27, 27), 16),
        (2, (3, 4, 8), (32, 32), 32),
        (2, (3, 5, 12), (29, 31), 48),
        (3, (3, 16, 13), (7, 9), 32),
        (1, (2, 3, 7), (6, 6), 16),
    ],
    # odd: the pooling drops a row and a column; blocks: channel counts that are no power of
    # two (the C loops' blocks of 8, 4, 2 and 1); min: the smallest image, 6x6
    ids=["seed", "wide", "odd", "rgb32", "rgb-odd-blocks", "rgb-7x9-blocks", "min"],
)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_conv_stack_matches_torch(activation, members, channels, size, images):
    c2, (height, width) = channels[2], size
    x, w1, b1, w2, b2 = stack_inputs(members, channels, size, images)
    ours, our_grads = grads(lambda *t: kernels.conv_stack(x, *t, activation), w1, b1, w2, b2)
    theirs, their_grads = grads(
        lambda *t: kernels.conv_stack_torch(x, *t, activation), w1, b1, w2, b2
    )
    assert ours.shape == (members, c2, (height - 4) // 2, (width - 4) // 2, images)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    for a, c in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=2e-3)


class _Rounded(Function):
    """A tensor rounded to bf16 (as a float32); its gradient passes as it is."""

    @staticmethod
    def forward(ctx, t):
        return t.bfloat16().float()

    @staticmethod
    def backward(ctx, g):
        return g


class _GradientRounded(Function):
    """A tensor as it is; its gradient rounded to bf16."""

    @staticmethod
    def forward(ctx, t):
        return t.clone()

    @staticmethod
    def backward(ctx, g):
        return g.bfloat16().float()


_torch_conv = kernels._conv3x3_torch


def _rounded_conv(x, w, b):
    """A convolution with bf16 products: it reads its maps and weights rounded to bf16, and
    its output's gradient is rounded to bf16 before the products that take it (both the
    input's and the weights'), all summed in float32."""
    z = _torch_conv(_Rounded.apply(x), _Rounded.apply(w), b)
    return _GradientRounded.apply(z)


def conv_stack_bf16_torch(x, w1, b1, w2, b2, activation):
    """conv_stack's bf16 products from torch operations: the second convolution's, and the
    first's where the input has two channels or more."""
    first = _rounded_conv if x.shape[1] >= 2 else _torch_conv
    h = ACTIVATIONS[activation](first(x, w1, b1))
    z = _rounded_conv(h, w2, b2)
    return pool_activate(z, activation, kernels._max_pool2x2_torch)


def relative(a, b):
    return ((a - b).norm() / b.norm()).item()


@needs_bf16
@pytest.mark.parametrize(
    ("members", "channels", "size", "images"),
    [
        (3, (1, 4, 8), (28, 28), 32),
        (2, (3, 5, 7), (13, 15), 48),
        (2, (16, 16, 32), (12, 12), 64),
        (1, (2, 3, 9), (6, 6), 16),
    ],
    # odd: channels that leave half a pair and 48 images (a vector of 32 and one of 16);
    # wide: a block after the first, whose input gets a gradient; min: the smallest image
    ids=["seed", "odd", "wide", "min"],
)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_bf16_conv_stack_matches_torch_on_bf16_operands(
    activation, members, channels, size, images
):
    """bf16 products give torch's values and gradients from the same rounded operands: near
    them (measured: 3e-4 at most, where float32's summing order rounds a map the other way),
    and twenty times nearer them than to float32's (measured: a hundred times and more)."""
    c0 = channels[0]
    x, w1, b1, w2, b2 = stack_inputs(members, channels, size, images)
    inputs = (x.requires_grad_(), w1, b1, w2, b2) if c0 > 1 else (w1, b1, w2, b2)

    def stack(fn):
        return lambda *t: fn(*((x, *t) if c0 == 1 else t), activation)

    ours, our_grads = grads(stack(lambda *a: kernels.conv_stack(*a, bf16=True)), *inputs)
    theirs, their_grads = grads(stack(conv_stack_bf16_torch), *inputs)
    fp32, fp32_grads = grads(stack(kernels.conv_stack), *inputs)
    assert_nearer_bf16((ours, *our_grads), (theirs, *their_grads), (fp32, *fp32_grads))


def assert_nearer_bf16(ours, theirs, fp32):
    """Each of ours is near torch's from bf16 operands, and twenty times nearer than to
    float32's."""
    for a, c, f in zip(ours, theirs, fp32, strict=True):
        assert relative(a, c) < 1e-3
        assert relative(a, c) < relative(a, f) / 20


def clear_windows(x, w1, b1, w2, b2, activation, gap=1e-5):
    """Which pooling windows of conv_stack(x, ...) have a clear winner, one value above the
    rest by ``gap`` in float64: only near those does float32 pick the same one whatever
    order it sums in (P, C2, h, w, N)."""
    args = (t.detach().double() for t in (x, w1, b1, w2, b2))
    x, w1, b1, w2, b2 = args
    z = kernels._conv3x3_torch(ACTIVATIONS[activation](kernels._conv3x3_torch(x, w1, b1)), w2, b2)
    if activation == "softmax":
        z = torch.softmax(z, 1)  # pooled after it is activated
    p, c, h, w, n = z.shape
    z = z[:, :, : h // 2 * 2, : w // 2 * 2].reshape(p, c, h // 2, 2, w // 2, 2, n)
    top = z.permute(0, 1, 2, 4, 6, 3, 5).flatten(-2).topk(2).values
    return top[..., 0] - top[..., 1] > gap


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_conv_stack_matches_torch_on_colour_digits(colour27, activation, size):
    """Real RGB images, gathered as the population engine gathers them, with Keras' initial
    kernels: values and gradients as torch computes them. The digits' flat backgrounds tie
    many pooling windows, and a near-tie that float32 sums in another order break the other
    way routes the window's gradient to another pixel (torch's own float32 does so against
    float64): gradients are of the outputs of windows with a clear winner."""
    images = images_to_tensor(crop(colour27, size))  # (n, 3, h, w)
    index = torch.arange(96).view(2, 48)
    x = kernels.gather_images(images, index)
    assert torch.equal(x, images[index].permute(0, 2, 3, 4, 1))
    generator, glorot = torch.Generator().manual_seed(2), INITIALIZERS["glorot_uniform"]
    w1, w2 = (
        torch.stack([glorot(torch.empty(shape), generator) for _ in range(2)]).requires_grad_()
        for shape in ((6, 3, 3, 3), (12, 6, 3, 3))
    )
    b1, b2 = (torch.full((2, c), 0.01, requires_grad=True) for c in (6, 12))
    clear = clear_windows(x, w1, b1, w2, b2, activation)
    assert clear.float().mean() > 0.2  # the digits, not only their backgrounds
    ours = kernels.conv_stack(x, w1, b1, w2, b2, activation)
    theirs = kernels.conv_stack_torch(x, w1, b1, w2, b2, activation)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    weights = torch.cos(torch.arange(ours.numel(), dtype=torch.float32)).view_as(ours) * clear
    leaves = (w1, b1, w2, b2)
    our_grads = torch.autograd.grad(ours, leaves, weights)
    their_grads = torch.autograd.grad(theirs, leaves, weights)
    for a, c in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5 * c.abs().max().item())


@pytest.mark.parametrize("activation", sorted(kernels.ACTIVATION_CODES))
def test_compiled_activations_match_torch_from_zero_to_saturation(activation):
    """Centre-tap kernels make conv_stack activate the images themselves, -40..40."""
    images = torch.linspace(-40, 40, 6 * 6 * 4096).view(1, 1, 6, 6, 4096)
    w = torch.zeros(1, 1, 1, 3, 3)
    w[..., 1, 1] = 1.0
    args = (images, w, torch.zeros(1, 1), w, torch.zeros(1, 1), activation)
    ours, theirs = kernels.conv_stack(*args), kernels.conv_stack_torch(*args)
    torch.testing.assert_close(ours, theirs, rtol=3e-7, atol=1e-7)


def test_without_a_compiler_the_engine_falls_back_to_torch(small27, tmp_path):
    with without_compiler(tmp_path):
        config = TrainConfig(epochs=1, batch_size=64)
        deep = config.replace(conv_blocks=2, batch_norm=True)  # the torch norm_stack
        for cfg in (config, deep):
            member = Member("m", cfg, np.arange(600), np.arange(600, 1000), 3)
            args = (small27.x_train, small27.y_train, 2, [member])
            (pop,) = PopulationEngine().train(*args)
            (seq,) = SequentialEngine().train(*args)
            assert pop.val_loss == pytest.approx(seq.val_loss, rel=1e-5)


def test_bf16_products_need_the_compiled_kernels(tmp_path):
    x, w1, b1, w2, b2 = stack_inputs()
    with without_compiler(tmp_path):
        assert not kernels.bf16_products()
        with pytest.raises(ValueError, match="bf16 products need the compiled kernels"):
            kernels.conv_stack(x, w1, b1, w2, b2, "relu", bf16=True)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="an x86-64 CPU level")
def test_a_build_for_an_avx2_cpu_computes_the_same_stack_without_bf16(tmp_path):
    """$DEEPNET_MARCH=x86-64-v3 builds the kernels as for a CPU with AVX2 and no AVX-512
    (this one runs that code too): the same values and gradients as torch, no bf16
    products, and precision=bf16 refused with the fix."""
    x, w1, b1, w2, b2 = stack_inputs(channels=(3, 4, 8), size=(14, 14), images=48)
    with built_for("x86-64-v3", tmp_path):
        assert not kernels.bf16_products()
        with pytest.raises(ConfigError, match=r"no bf16 products \(no AVX512_BF16\); use"):
            check_precision("bf16", torch.device("cpu"))
        ours, our_grads = grads(lambda *t: kernels.conv_stack(x, *t, "tanh"), w1, b1, w2, b2)
    theirs, their_grads = grads(lambda *t: kernels.conv_stack_torch(x, *t, "tanh"), w1, b1, w2, b2)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    for a, c in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=2e-3)


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


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: {"x": a["x"][..., :15]}, r"multiple of 16 images \(dim 4\), got 15"),
        (lambda a: {"x": a["x"][:, :, :5]}, "at least 6x6"),
        (lambda a: {"x": a["x"][0]}, r"x must have shape \(\*, \*, \*, \*, \*\)"),
        (lambda a: {"x": a["x"].double()}, "x must be torch.float32, got torch.float64"),
        (lambda a: {"w1": a["w1"][:1]}, r"w1 must have shape \(2, \*, 1, 3, 3\), got \(1,"),
        (lambda a: {"w1": a["w1"][:, :, :, :2]}, r"w1 must have shape \(2, \*, 1, 3, 3\)"),
        (lambda a: {"b1": a["b1"][:, :3]}, r"b1 must have shape \(2, 4\), got \(2, 3\)"),
        (lambda a: {"w2": a["w2"][:, :, :3]}, r"w2 must have shape \(2, \*, 4, 3, 3\)"),
        (lambda a: {"b2": a["b2"].half()}, "b2 must be torch.float32"),
        (lambda a: {"b2": a["b2"].tolist()}, "b2 must be a torch.Tensor, got list"),
        (lambda a: {"activation": "swish"}, "unknown activation 'swish'"),
    ],
)
def test_conv_stack_refuses_what_the_c_loops_would_misread(change, message):
    args = dict(zip(("x", "w1", "b1", "w2", "b2"), stack_inputs(), strict=True))
    args["activation"] = "relu"
    args.update(change(args))
    with pytest.raises(ValueError, match=message):
        kernels.conv_stack(**args)


def test_conv_stack_takes_strided_views_as_their_values():
    x, w1, b1, w2, b2 = stack_inputs()
    wide = torch.randn(2, 8, 1, 3, 3)
    wide[:, :4] = w1.detach()
    view = wide[:, :4]  # the population's leaves are views like this one
    assert not view.is_contiguous()
    ours = kernels.conv_stack(x, view, b1, w2, b2, "tanh")
    torch.testing.assert_close(ours, kernels.conv_stack(x, w1, b1, w2, b2, "tanh"))


@pytest.mark.parametrize("bad", [500, 10**6, -1])
def test_gather_images_never_reads_past_the_images(bad):
    x = torch.randn(500, 28, 28)
    index = torch.zeros(3, 16, dtype=torch.int64)
    index[1, 7] = bad
    with pytest.raises(ValueError, match=f"index {bad} is outside the 500 images"):
        kernels.gather_images(x, index)


@pytest.mark.parametrize(
    ("x", "index", "message"),
    [
        (
            torch.randn(50, 28, 28),
            torch.zeros(2, 16, dtype=torch.int32),
            "index must be torch.int64",
        ),
        (
            torch.randn(50, 28, 28).double(),
            torch.zeros(2, 16, dtype=torch.int64),
            "x must be torch.float32",
        ),
        (
            torch.zeros(50, 28, 28, dtype=torch.int16),
            torch.zeros(2, 16, dtype=torch.int64),
            "x must be torch.float32, got torch.int16",
        ),
        (
            torch.randn(50, 28, 28),
            torch.zeros(2, 12, dtype=torch.int64),
            "multiple of 16 images a row",
        ),
        (
            torch.randn(50, 28, 28),
            torch.zeros(32, dtype=torch.int64),
            r"index must have shape \(\*, \*\)",
        ),
        (
            torch.randn(50, 784),
            torch.zeros(2, 16, dtype=torch.int64),
            r"x must have shape \(\*, \*, \*, \*\)",
        ),
    ],
)
def test_gather_images_refuses_wrong_dtypes_and_shapes(x, index, message):
    with pytest.raises(ValueError, match=message):
        kernels.gather_images(x, index)


def test_gather_images_takes_channels_and_strided_inputs():
    x = torch.randn(3, 40, 9, 7).transpose(0, 1)  # (40, 3, 9, 7), not contiguous
    index = torch.randint(0, 40, (32, 2), generator=torch.Generator().manual_seed(1)).T
    expected = torch.stack([x[row].permute(1, 2, 3, 0) for row in index])
    assert torch.equal(kernels.gather_images(x, index), expected)


@pytest.mark.parametrize("size", SIZES)
def test_gathered_pixels_are_scaled_exactly_as_images_to_tensor_scales_them(colour27, size):
    """uint8 images, as the population holds them, gathered into the same floats as the
    float32 images (n, 3, h, w) images_to_tensor makes: every byte value 0..255 included."""
    images = crop(colour27, size)[:300].copy()
    images.reshape(-1)[:256] = np.arange(256)  # every byte, whatever the digits hold
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    index = torch.randint(0, 300, (3, 64), generator=torch.Generator().manual_seed(3))
    index[0, :3] = torch.tensor([0, 1, 2])  # the images holding the 256 values
    ours = kernels.gather_images(pixels, index)
    assert torch.equal(ours, kernels.gather_images(images_to_tensor(images), index))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([1, 2], [0.5, 0.5], [17, 4], [8, 8], 8, 16), "count 17 is outside"),
        (([1, 2], [0.5, 0.5], [4, 4], [8, 9], 8, 16), "features 9 is outside"),
        (([1, 2], [0.5, 1.0], [4, 4], [8, 8], 8, 16), r"rate 1.0 is outside \[0, 1\)"),
        (([1, -2], [0.5, 0.5], [4, 4], [8, 8], 8, 16), "key -2 is outside"),
        (([1, 2], [0.5], [4, 4], [8, 8], 8, 16), "one length"),
        (([1], [0.5], [4], [8], 8, -16), "must be >= 0"),
    ],
)
def test_dropout_scales_refuses_draws_outside_their_block(args, message):
    with pytest.raises(ValueError, match=message):
        kernels.dropout_scales(*args)


def test_the_c_call_refuses_strided_memory():
    out = torch.empty(16, 1, 16).transpose(0, 2)
    x, index = torch.randn(4, 16), torch.zeros(16, 16, dtype=torch.int64)
    with pytest.raises(ValueError, match="argument 0 must be a contiguous CPU tensor"):
        kernels.call("gather_images", out, x, index, 16, 16, 16)
    with pytest.raises(ValueError, match="outside a C int's range"):
        kernels.call("gather_images", out.contiguous(), x, index, 2**31, 16, 16)


@pytest.mark.parametrize(
    ("members", "channels", "size", "images"),
    [(2, (3, 5, 12), (12, 13), 32), (1, (8, 16, 16), (12, 12), 16)],
    ids=["odd-blocks", "block-2"],
)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_conv_stack_passes_its_inputs_gradient_back(activation, members, channels, size, images):
    """A block after the first reads the last block's maps, which need their gradient."""
    c0, c1, c2 = channels
    inputs = leaves(
        (members, c0, *size, images),
        (members, c1, c0, 3, 3),
        (members, c1),
        (members, c2, c1, 3, 3),
        (members, c2),
    )
    ours, our_grads = grads(lambda *t: kernels.conv_stack(*t, activation), *inputs)
    theirs, their_grads = grads(lambda *t: kernels.conv_stack_torch(*t, activation), *inputs)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    for a, c in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=2e-3)


def norm_inputs(members=3, c0=2, c1=5, c2=12, size=(13, 15), images=48):
    """x, then w1, g1, be1, w2, g2, be2: scales around 1, one of them negative."""
    x, w1, be1, w2, be2 = block_leaves(members, c0, c1, c2, size, images)
    g1 = (torch.linspace(0.5, 1.5, members * c1).view(members, c1)).requires_grad_()
    g2 = (torch.linspace(-0.5, 1.5, members * c2).view(members, c2)).requires_grad_()
    return x, w1, g1, be1, w2, g2, be2


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_norm_stack_matches_torch_over_each_members_real_images(activation):
    """Batch statistics over each member's first counts[p] images (48, 17 and 1 of 48: the
    rest is padding, which gets no gradient and moves no statistic), values, gradients
    (x's included) and the unbiased variances of the moving averages."""
    inputs = norm_inputs()
    counts = torch.tensor([48, 17, 1], dtype=torch.int32)
    real = (torch.arange(48) < counts[:, None]).float().view(3, 1, 1, 1, 48)
    ours, stats = kernels.norm_stack(*inputs, activation, counts)
    theirs, biased = kernels.norm_stack_torch(*inputs, activation, counts)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=2e-5)
    weights = torch.cos(torch.arange(ours.numel(), dtype=torch.float32)).view_as(ours) * real
    our_grads = torch.autograd.grad(ours, inputs, weights)
    their_grads = torch.autograd.grad(theirs, inputs, weights)
    names = ("x", "w1", "g1", "be1", "w2", "g2", "be2")
    for name, a, c in zip(names, our_grads, their_grads, strict=True):
        scale = max(c.abs().max().item(), *(g.abs().max().item() for g in their_grads[:3]))
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5 * scale, msg=name)
    assert not our_grads[0][1, :, :, :, 17:].any()  # the padding
    first, second = 11 * 13, 9 * 11  # pixels of each map per image
    for ours_, theirs_, pixels in zip(stats[1::2], biased[1::2], (first, second), strict=True):
        n = counts[:, None] * pixels
        torch.testing.assert_close(ours_, theirs_ * n / (n - 1))
    for a, c in zip(stats[::2], biased[::2], strict=True):
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)
    pad = inputs[0].detach().clone()
    pad[1, :, :, :, 17:] = 7.0  # what the padding holds changes nothing real
    again, _ = kernels.norm_stack(pad, *inputs[1:], activation, counts)
    torch.testing.assert_close(again[:, :, :, :, :17], ours[:, :, :, :, :17], rtol=0, atol=0)


@needs_bf16
@pytest.mark.parametrize("activation", sorted(set(ACTIVATIONS) - {"linear"}))
def test_bf16_norm_stack_matches_torch_on_bf16_operands(monkeypatch, activation):
    """Both convolutions of a batch-normalised block (a 2-channel input) in bf16, training
    and evaluation: as torch computes them from the same rounded operands, and not as
    float32 does. (Linear is left out: the second norm cancels any shift of a linear first
    one, so be1's gradient is zero but for rounding, and be2's owes nothing to the
    convolutions.)"""
    inputs = norm_inputs()
    counts = torch.tensor([48, 17, 1], dtype=torch.int32)
    real = (torch.arange(48) < counts[:, None]).float().view(3, 1, 1, 1, 48)
    ours, stats = kernels.norm_stack(*inputs, activation, counts, bf16=True)
    fp32, _ = kernels.norm_stack(*inputs, activation, counts)
    monkeypatch.setattr(kernels, "_conv3x3_torch", _rounded_conv)
    theirs, _ = kernels.norm_stack_torch(*inputs, activation, counts)
    weights = torch.cos(torch.arange(ours.numel(), dtype=torch.float32)).view_as(ours) * real
    grads_of = [torch.autograd.grad(out, inputs, weights) for out in (ours, theirs, fp32)]
    assert_nearer_bf16((ours, *grads_of[0]), (theirs, *grads_of[1]), (fp32, *grads_of[2]))
    frozen = [t.detach() for t in inputs]
    evaluated = [
        kernels.norm_stack_eval(*frozen, activation, stats, bf16=True),
        kernels.norm_stack_torch(*frozen, activation, None, stats)[0],
        kernels.norm_stack_eval(*frozen, activation, stats),
    ]
    assert_nearer_bf16(*([e] for e in evaluated))


def _dropout(shape, rate=0.25):
    """Real dropout multipliers (0 or 1 / (1 - rate)) for a block's output of ``shape``."""
    members, n = shape[0], shape[-1]
    features = math.prod(shape[1:-1])
    streams = [MaskStream(seed) for seed in range(members)]
    scale = draw(streams, [rate] * members, [n] * members, [features] * members, n)
    return scale.view(shape)


@pytest.mark.parametrize("norm", [False, True], ids=["conv", "norm"])
@pytest.mark.parametrize(
    ("bf16", "bf16_out"),
    [
        (False, False),
        pytest.param(True, False, marks=needs_bf16),
        pytest.param(True, True, marks=needs_bf16),
    ],
    ids=["fp32", "bf16", "bf16-out"],
)
@pytest.mark.parametrize("activation", ["relu", "tanh", "softmax"])
def test_dropout_inside_the_stack_is_the_product_after_it(
    threads, norm, bf16, bf16_out, activation
):
    """A block given its dropout's multipliers passes on its output times them, and with
    bf16_out that product rounded to bf16 (what the bf16 dense layer reads), and their
    gradients, bit for bit, on one thread and on a team of two; evaluation's bf16 output too."""
    inputs = norm_inputs(members=3, c0=2, c1=6, c2=9, size=(12, 13), images=32)
    counts = torch.tensor([32, 17, 32], dtype=torch.int32)
    rounded = torch.bfloat16 if bf16_out else torch.float32

    def block(scale=None, out=False):
        if norm:
            return kernels.norm_stack(*inputs, activation, counts, bf16, scale, out)[0]
        x, w1, g1, _, w2, g2, _ = inputs
        return kernels.conv_stack(x, w1, g1, w2, g2, activation, bf16, scale, out)

    for count in (1, 2):
        threads(count)
        plain = block()
        scale = _dropout(plain.shape)
        assert 0.2 < (scale == 0).float().mean() < 0.3
        passed, multiplied = block(scale, bf16_out), (block() * scale).to(rounded)
        assert passed.dtype == rounded and torch.equal(passed, multiplied)
        weights = torch.cos(torch.arange(plain.numel(), dtype=torch.float32)).view_as(plain)
        weights = weights.to(rounded)
        ours = torch.autograd.grad(passed, inputs, weights, allow_unused=True)
        theirs = torch.autograd.grad(multiplied, inputs, weights, allow_unused=True)
        for a, b in zip(ours, theirs, strict=True):
            assert (a is None and b is None) or torch.equal(a, b)
    if norm and bf16_out:
        frozen = [t.detach() for t in inputs]
        stats = kernels.norm_stack(*inputs, activation, counts, bf16)[1]
        evaluated = kernels.norm_stack_eval(*frozen, activation, stats, bf16, bf16_out)
        expected = kernels.norm_stack_eval(*frozen, activation, stats, bf16).bfloat16()
        assert torch.equal(evaluated, expected)


def test_a_stack_refuses_dropout_multipliers_of_another_shape():
    x, w1, b1, w2, b2 = stack_inputs()
    wrong = torch.ones(2, 8, 3, 3, 16)
    with pytest.raises(ValueError, match=r"conv_stack: scale must have shape \(2, 8, 4, 4, 16\)"):
        kernels.conv_stack(x, w1, b1, w2, b2, "relu", scale=wrong)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_norm_stack_evaluates_with_the_moving_averages(activation):
    inputs = [t.detach() for t in norm_inputs()]
    running = [torch.rand(3, c) + (i % 2) for i, c in enumerate((5, 5, 12, 12))]
    ours = kernels.norm_stack_eval(*inputs, activation, tuple(running))
    theirs, used = kernels.norm_stack_torch(*inputs, activation, None, tuple(running))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=2e-5)
    assert all(torch.equal(a, b) for a, b in zip(used, running, strict=True))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: {"counts": a["counts"].long()}, "counts must be torch.int32"),
        (lambda a: {"counts": a["counts"][:2]}, r"counts must have shape \(3\), got \(2,\)"),
        (lambda a: {"counts": a["counts"] * 0}, r"counts must be in \[1, 48\]"),
        (lambda a: {"counts": a["counts"] + 48}, r"counts must be in \[1, 48\]"),
        (lambda a: {"g1": a["g1"][:, :4]}, r"g1 must have shape \(3, 5\)"),
        (lambda a: {"be2": a["be2"][:, :4]}, r"be2 must have shape \(3, 12\)"),
        (lambda a: {"activation": "swish"}, "norm_stack: unknown activation 'swish'"),
    ],
)
def test_norm_stack_refuses_what_the_c_loops_would_misread(change, message):
    names = ("x", "w1", "g1", "be1", "w2", "g2", "be2")
    args = dict(zip(names, norm_inputs(), strict=True))
    args |= {"activation": "relu", "counts": torch.tensor([48, 17, 1], dtype=torch.int32)}
    args.update(change(args))
    with pytest.raises(ValueError, match=message):
        kernels.norm_stack(**args)


@pytest.fixture
def threads():
    """Sets torch's thread count for a test, and puts it back."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


# Blocks whose passes the stack kernels split or skip: plain and batch-normalised, softmax's
# own passes, and each in bf16
BLOCK_KINDS = pytest.mark.parametrize(
    ("norm", "activation", "bf16"),
    [
        (False, "tanh", False),
        (True, "relu", False),
        (False, "softmax", False),
        (True, "softmax", False),
        pytest.param(False, "relu", True, marks=needs_bf16),
        pytest.param(True, "tanh", True, marks=needs_bf16),
        pytest.param(False, "softmax", True, marks=needs_bf16),
        pytest.param(True, "softmax", True, marks=needs_bf16),
    ],
    ids=[
        "conv",
        "norm",
        "conv-softmax",
        "norm-softmax",
        "conv-bf16",
        "norm-bf16",
        "conv-softmax-bf16",
        "norm-softmax-bf16",
    ],
)


@BLOCK_KINDS
def test_members_split_across_threads_give_the_same_bits(threads, norm, activation, bf16):
    """Runs of members go to threads at once, and the members left over go to teams of
    threads that split each pass's channels (9 and 17 filters: whole blocks of 8 and a
    ragged one; a 16-channel input, whose gradient a team splits too; softmax, which mixes
    channels, on one thread of the team). Each member's maps, gradients (x's included) and
    statistics are the same bits as on one thread, for 5 members on 1, 2, 3, 4 and 8."""
    inputs = norm_inputs(members=5, c0=16, c1=9, c2=17, size=(12, 13), images=32)
    counts = torch.tensor([32, 17, 1, 32, 30], dtype=torch.int32)

    def run():
        if norm:
            out, stats = kernels.norm_stack(*inputs, activation, counts, bf16)
            frozen = [t.detach() for t in inputs]
            evaluated = kernels.norm_stack_eval(*frozen, activation, stats, bf16)
        else:
            x, w1, g1, _, w2, g2, _ = inputs
            out = kernels.conv_stack(x, w1, g1, w2, g2, activation, bf16)
            stats, evaluated = (), None
        weights = torch.cos(torch.arange(out.numel(), dtype=torch.float32)).view_as(out)
        return [out, *stats, *torch.autograd.grad(out, inputs, weights, allow_unused=True)], (
            evaluated
        )

    threads(1)
    alone, alone_eval = run()
    for count in (2, 3, 4, 8):
        threads(count)
        split, split_eval = run()
        for a, b in zip(alone, split, strict=True):
            assert (a is None and b is None) or torch.equal(a, b), count
        assert alone_eval is None or torch.equal(alone_eval, split_eval)


@BLOCK_KINDS
def test_maps_kept_for_backward_are_the_bits_it_would_recompute(
    monkeypatch, norm, activation, bf16
):
    """The backward pass reads the maps the forward pass kept (softmax's second maps too),
    or recomputes them where a population's would pass MAPS_KEPT: gradients and statistics
    are the same bits."""
    inputs = norm_inputs(members=3, c0=16, c1=9, c2=17, size=(12, 13), images=32)
    counts = torch.tensor([32, 17, 1], dtype=torch.int32)

    def run():
        if norm:
            out, stats = kernels.norm_stack(*inputs, activation, counts, bf16)
        else:
            x, w1, g1, _, w2, g2, _ = inputs
            out, stats = kernels.conv_stack(x, w1, g1, w2, g2, activation, bf16), ()
        weights = torch.sin(torch.arange(out.numel(), dtype=torch.float32)).view_as(out)
        return [out, *stats, *torch.autograd.grad(out, inputs, weights, allow_unused=True)]

    kept = run()
    monkeypatch.setattr(kernels, "MAPS_KEPT", 0)
    recomputed = run()
    for a, b in zip(kept, recomputed, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


def test_maps_are_kept_only_for_a_backward_pass_that_will_run():
    x, w1, *_ = norm_inputs()
    assert kernels._backward_follows(x, w1)
    with torch.no_grad():
        assert not kernels._backward_follows(x, w1)
    assert not kernels._backward_follows(x.detach(), w1.detach())
    assert kernels._kept_maps(True, 3, 100).shape == (3, 100)
    assert kernels._kept_maps(False, 3, 100) is None
    assert kernels._kept_maps(True, 1, kernels.MAPS_KEPT) is None  # 4 bytes a float: too many


@pytest.mark.parametrize(
    ("members", "threads", "phases"),
    [
        (5, 2, [[(0, 2, 1), (2, 4, 1)], [(4, 5, 2)]]),
        (1, 4, [[(0, 1, 4)]]),
        (3, 8, [[(0, 1, 2), (1, 2, 3), (2, 3, 3)]]),
        (4, 2, [[(0, 2, 1), (2, 4, 1)]]),
        (3, 1, [[(0, 3, 1)]]),
    ],
)
def test_teams_take_the_members_threads_do_not_divide(members, threads, phases):
    """Whole members per thread while every thread has one; the rest one at a time, each
    shared by a team, the threads shared out among them."""
    got = kernels._phases(members, threads, teams=True)
    assert [[(r.first, r.end, r.team) for r in phase] for phase in got] == phases


@pytest.mark.parametrize(
    ("members", "threads", "runs"),
    [(5, 2, [(0, 2), (2, 5)]), (2, 8, [(0, 1), (1, 2)]), (3, 1, [(0, 3)]), (0, 2, [])],
)
def test_member_runs_are_contiguous_and_even(members, threads, runs):
    assert kernels._member_runs(members, min(members, threads)) == runs
