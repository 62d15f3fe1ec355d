"""The seed network's layers, described once: names, parameter shapes and sizes.

SeedNet builds its modules from an Architecture and the population engine lays out its
stacked parameters from one, so a layer, a channel count or an image size changes in one
place. Convolutions are valid (no padding) and the pooling floors odd sides, so any image
of at least ``min_side()`` pixels a side works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from deepnet.errors import DataError

if TYPE_CHECKING:
    from deepnet.config import TrainConfig

KERNEL = 3  # side of every convolution's kernel
POOL = 2  # side of the max pooling window

Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class _Weighted:
    """A layer with a weight and a bias, named as in SeedNet's state_dict."""

    name: str

    @property
    def weight(self) -> str:
        return f"{self.name}.weight"

    @property
    def bias(self) -> str:
        return f"{self.name}.bias"


@dataclass(frozen=True)
class Conv(_Weighted):
    """A valid KERNEL x KERNEL convolution with a bias per filter."""

    in_channels: int
    filters: int

    def shapes(self) -> Shapes:
        return {
            self.weight: (self.filters, self.in_channels, KERNEL, KERNEL),
            self.bias: (self.filters,),
        }

    def module(self) -> nn.Conv2d:
        return nn.Conv2d(self.in_channels, self.filters, KERNEL)

    @staticmethod
    def output_side(side: int) -> int:
        return side - (KERNEL - 1)

    @staticmethod
    def input_side(side: int) -> int:
        """The smallest input side that gives ``side``."""
        return side + (KERNEL - 1)


@dataclass(frozen=True)
class MaxPool:
    """POOL x POOL max pooling; an odd last row or column is dropped."""

    @staticmethod
    def output_side(side: int) -> int:
        return side // POOL

    @staticmethod
    def input_side(side: int) -> int:
        return side * POOL


@dataclass(frozen=True)
class Dense(_Weighted):
    """A fully connected layer with a bias per unit."""

    in_features: int
    units: int

    def shapes(self) -> Shapes:
        return {self.weight: (self.units, self.in_features), self.bias: (self.units,)}

    def module(self) -> nn.Linear:
        return nn.Linear(self.in_features, self.units)


FEATURES = (Conv, Conv, MaxPool)  # what the image goes through before the flatten, in order


def min_side() -> int:
    """The smallest image height and width that leaves one pixel after FEATURES."""
    side = 1
    for layer in reversed(FEATURES):
        side = layer.input_side(side)
    return side


def _pooled_side(side: int) -> int:
    for layer in FEATURES:
        side = layer.output_side(side)
    return side


@dataclass(frozen=True)
class Architecture:
    """Conv -> Conv -> MaxPool -> (Dropout) -> Dense -> (Dropout) -> Dense for one input
    (channels, height, width) and one set of widths."""

    channels: int
    image: tuple[int, int]
    conv1: Conv
    conv2: Conv
    dense: Dense
    out: Dense

    @classmethod
    def of(
        cls,
        channels: int,
        image: tuple[int, int],
        conv1_filters: int,
        conv2_filters: int,
        units: int,
        n_classes: int,
    ) -> Architecture:
        """The layers for images of ``channels`` x ``image``; DataError if they are too small."""
        if channels < 1:
            raise DataError(f"images need at least 1 channel, got {channels}")
        side = min_side()
        if len(image) != 2 or min(image) < side:
            raise DataError(
                f"images of {'x'.join(map(str, image))} pixels are too small for the network: "
                f"two 3x3 convolutions and a 2x2 pooling need at least {side}x{side}"
            )
        height, width = (_pooled_side(s) for s in image)
        conv1 = Conv("conv1", channels, conv1_filters)
        conv2 = Conv("conv2", conv1_filters, conv2_filters)
        dense = Dense("dense", conv2_filters * height * width, units)
        return cls(channels, tuple(image), conv1, conv2, dense, Dense("out", units, n_classes))

    @classmethod
    def for_config(
        cls, config: TrainConfig, n_classes: int, image: tuple[int, int], channels: int = 1
    ) -> Architecture:
        return cls.of(
            channels, image, config.conv1_filters, config.conv2_filters, config.neurons, n_classes
        )

    @property
    def pooled(self) -> tuple[int, int]:
        """Height and width of the pooled feature maps that the dense layer flattens."""
        height, width = self.image
        return _pooled_side(height), _pooled_side(width)

    @property
    def conv_parameters(self) -> tuple[str, ...]:
        """conv1's weight and bias, then conv2's: the order the convolution kernels take."""
        return (*self.conv1.shapes(), *self.conv2.shapes())

    @property
    def dense_parameters(self) -> tuple[str, ...]:
        return (*self.dense.shapes(), *self.out.shapes())

    def shapes(self) -> Shapes:
        """Every parameter's shape by its name in SeedNet's state_dict, in its order."""
        return {
            **self.conv1.shapes(),
            **self.conv2.shapes(),
            **self.dense.shapes(),
            **self.out.shapes(),
        }
