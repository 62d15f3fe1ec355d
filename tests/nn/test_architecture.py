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
    arch = Architecture.of(1, (28, 28), 4, 8, 16, 2)
    assert arch.conv_parameters == ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias")
    assert arch.dense_parameters == ("dense.weight", "dense.bias", "out.weight", "out.bias")


def test_min_image_side_is_the_smallest_that_builds():
    side = min_image_side()
    assert side == 6
    SeedNet(TrainConfig(), 2, (side, side))
    for image in ((side - 1, side), (side, side - 1)):
        with pytest.raises(DataError, match=r"too small.*at least 6x6"):
            SeedNet(TrainConfig(), 2, image)


def test_channels_must_be_positive():
    with pytest.raises(DataError, match="at least 1 channel, got 0"):
        Architecture.of(0, (28, 28), 4, 8, 16, 2)
