"""One description of the layers: SeedNet's tensors and sizes are what it says."""

import pytest
import torch

from deepnet import TrainConfig
from deepnet.errors import DataError
from deepnet.nn import SeedNet
from deepnet.nn.architecture import Architecture
from deepnet.nn.network import min_image_side


@pytest.mark.parametrize(
    ("channels", "image", "pooled"),
    [(1, (28, 28), (12, 12)), (3, (32, 32), (14, 14)), (3, (13, 17), (4, 6)), (2, (6, 7), (1, 1))],
)
def test_seednet_has_the_described_tensors_and_sizes(channels, image, pooled):
    config = TrainConfig(conv1_filters=5, conv2_filters=7, neurons=9)
    arch = Architecture.for_config(config, 3, image, channels)
    assert arch.pooled == pooled
    assert arch.dense.in_features == 7 * pooled[0] * pooled[1]
    net = SeedNet(config, 3, image, channels=channels)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == arch.shapes()
    assert list(net.state_dict()) == list(arch.shapes())  # the same order: the engine's layout
    assert net(torch.rand(2, channels, *image)).shape == (2, 3)
    first, second = net.feature_maps(torch.rand(2, channels, *image))
    assert first.shape == (2, 5, image[0] - 2, image[1] - 2)
    assert second.shape == (2, 7, image[0] - 4, image[1] - 4)


def test_parameter_groups_name_the_kernels_arguments_in_order():
    arch = Architecture.of(1, (28, 28), ((4, 8),), 16, 2)
    assert arch.conv_parameters == ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias")
    assert arch.statistics == ()


def test_dense_shapes_at_a_narrower_width_are_that_networks_own():
    wide = Architecture.of(1, (28, 28), ((4, 8),), 125, 2)
    narrow = Architecture.of(1, (28, 28), ((4, 8),), 25, 2)
    dense = {k: v for k, v in narrow.shapes().items() if k.startswith(("dense.", "out."))}
    assert wide.dense_shapes(25) == dense
    assert list(wide.dense_shapes(25)) == ["dense.weight", "dense.bias", "out.weight", "out.bias"]


@pytest.mark.parametrize(
    ("params", "image", "blocks", "pooled"),
    [
        ({"conv_blocks": 2}, (28, 28), ((4, 8), (16, 16)), (4, 4)),
        ({"conv_blocks": 2, "block2_filters": 5}, (32, 30), ((4, 8), (5, 5)), (5, 4)),
        ({"conv_blocks": 3, "block3_filters": 6}, (36, 40), ((4, 8), (16, 16), (6, 6)), (1, 1)),
    ],
)
def test_deeper_stacks_have_a_block_per_filter_pair_named_on_from_conv3(
    params, image, blocks, pooled
):
    """Block k's convolutions are conv(2k-1) and conv(2k); the dense layer reads the last
    block's pooled maps; SeedNet holds exactly the described tensors, in the same order."""
    config = TrainConfig(neurons=9, **params)
    arch = Architecture.for_config(config, 3, image, 3)
    assert tuple((b.first.filters, b.second.filters) for b in arch.blocks) == blocks
    assert [c.name for b in arch.blocks for c in b.convs] == [
        f"conv{i}" for i in range(1, 2 * len(blocks) + 1)
    ]
    assert arch.blocks[1].first.in_channels == blocks[0][1]
    assert arch.pooled == pooled
    assert arch.dense.in_features == blocks[-1][1] * pooled[0] * pooled[1]
    net = SeedNet(config, 3, image, channels=3)
    assert list(net.state_dict()) == list(arch.shapes())
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == arch.shapes()
    assert net(torch.rand(2, 3, *image)).shape == (2, 3)


def test_batch_norm_follows_every_convolution_which_loses_its_bias():
    arch = Architecture.of(1, (28, 28), ((4, 8), (6, 6)), 16, 2, batch_norm=True)
    names = list(arch.shapes())
    assert names[:6] == [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "conv2.weight",
    ]
    assert not [n for n in names if n.startswith("conv") and n.endswith(".bias")]
    assert arch.statistics == tuple(
        f"bn{i}.{s}" for i in range(1, 5) for s in ("running_mean", "running_var")
    )
    assert arch.conv_parameters[:3] == ("conv1.weight", "bn1.weight", "bn1.bias")
    assert not set(arch.statistics) & set(arch.conv_parameters)  # never trained
    assert arch.shapes()["bn3.running_var"] == (6,)
    net = SeedNet(TrainConfig(conv_blocks=2, block2_filters=6, batch_norm=True), 2)
    assert list(net.state_dict()) == names  # no num_batches_tracked: floats only


@pytest.mark.parametrize(("blocks", "side"), [(1, 6), (2, 16), (3, 36)])
def test_min_image_side_is_the_smallest_that_builds(blocks, side):
    assert min_image_side(blocks) == side
    config = TrainConfig(conv_blocks=blocks)
    SeedNet(config, 2, (side, side))
    for image in ((side - 1, side), (side, side - 1)):
        with pytest.raises(
            DataError,
            match=rf"too small for conv_blocks={blocks}.*at least "
            rf"{side}x{side}.*--resize {side}x{side}",
        ):
            SeedNet(config, 2, image)


def test_mnist_is_too_small_for_three_blocks_and_the_error_says_what_is_needed():
    with pytest.raises(DataError) as error:
        SeedNet(TrainConfig(conv_blocks=3), 10, (28, 28))
    assert str(error.value) == (
        "images of 28x28 pixels are too small for conv_blocks=3: two 3x3 convolutions and a "
        "2x2 pooling, 3 times, need at least 36x36; use fewer conv_blocks or larger images "
        "(--resize 36x36)"
    )


def test_channels_must_be_positive():
    with pytest.raises(DataError, match="at least 1 channel, got 0"):
        Architecture.of(0, (28, 28), ((4, 8),), 16, 2)
