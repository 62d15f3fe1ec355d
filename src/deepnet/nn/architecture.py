"""The seed network's layers, described once: names, parameter shapes and sizes.

SeedNet builds its modules from an Architecture and the population engine lays out its
stacked parameters from one, so a layer, a channel count or an image size changes in one
place. The features are ``conv_blocks`` blocks of Conv -> Conv -> MaxPool (-> Dropout);
convolutions are valid (no padding) and the pooling floors odd sides, so any image of at
least ``min_side(blocks)`` pixels a side works. With batch normalisation each convolution
is followed by a BatchNorm (named bn1, bn2, ... as the convolutions are conv1, conv2, ...)
and has no bias of its own: the norm's beta takes its place (a bias before a batch norm
is cancelled by its mean, and only float noise would train it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from torch import nn

from deepnet.errors import DataError
from deepnet.nn.functional import KerasBatchNorm

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
class Norm(_Weighted):
    """A batch normalisation of ``channels`` maps: a trained scale (weight) and shift (bias)
    per channel, and the moving averages of the batch statistics that evaluation uses."""

    channels: int

    @property
    def mean(self) -> str:
        return f"{self.name}.running_mean"

    @property
    def var(self) -> str:
        return f"{self.name}.running_var"

    @property
    def statistics(self) -> tuple[str, str]:
        """The moving averages: state, not trained (no gradient, no optimizer)."""
        return self.mean, self.var

    def shapes(self) -> Shapes:
        return dict.fromkeys((self.weight, self.bias, *self.statistics), (self.channels,))

    def module(self) -> KerasBatchNorm:
        return KerasBatchNorm(self.channels)


@dataclass(frozen=True)
class Conv(_Weighted):
    """A valid KERNEL x KERNEL convolution: a bias per filter, or a batch norm after it."""

    in_channels: int
    filters: int
    norm: Norm | None = None

    def shapes(self) -> Shapes:
        """Its tensors and its norm's, in SeedNet's state_dict order."""
        weight = {self.weight: (self.filters, self.in_channels, KERNEL, KERNEL)}
        if self.norm is None:
            return {**weight, self.bias: (self.filters,)}
        return {**weight, **self.norm.shapes()}

    def module(self) -> nn.Conv2d:
        return nn.Conv2d(self.in_channels, self.filters, KERNEL, bias=self.norm is None)

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


BLOCK = (Conv, Conv, MaxPool)  # what one block puts the maps through, in order


@dataclass(frozen=True)
class Block:
    """Conv -> Conv -> MaxPool: one block of the features (its dropout follows it)."""

    first: Conv
    second: Conv

    @property
    def convs(self) -> tuple[Conv, Conv]:
        return self.first, self.second

    @property
    def filters(self) -> int:
        return self.second.filters

    @property
    def parameters(self) -> tuple[str, ...]:
        """The trained tensors, in state_dict order: the population's leaves of the block."""
        return tuple(
            name
            for conv in self.convs
            for name in conv.shapes()
            if conv.norm is None or name not in conv.norm.statistics
        )

    @property
    def statistics(self) -> tuple[str, ...]:
        """Its norms' moving averages (mean, var of the first, then of the second); none
        without batch norms."""
        return tuple(name for conv in self.convs if conv.norm for name in conv.norm.statistics)

    @staticmethod
    def output_side(side: int) -> int:
        for layer in BLOCK:
            side = layer.output_side(side)
        return side

    @staticmethod
    def input_side(side: int) -> int:
        for layer in reversed(BLOCK):
            side = layer.input_side(side)
        return side


def min_side(conv_blocks: int = 1) -> int:
    """The smallest image height and width that leaves one pixel after ``conv_blocks``
    blocks: 6, 16 and 36 for 1, 2 and 3."""
    side = 1
    for _ in range(conv_blocks):
        side = Block.input_side(side)
    return side


@dataclass(frozen=True)
class Dense(_Weighted):
    """A fully connected layer with a bias per unit."""

    in_features: int
    units: int

    def shapes(self) -> Shapes:
        return {self.weight: (self.units, self.in_features), self.bias: (self.units,)}

    def module(self) -> nn.Linear:
        return nn.Linear(self.in_features, self.units)


def _blocks(channels: int, filters: tuple[tuple[int, int], ...], norm: bool) -> tuple[Block, ...]:
    """conv1, conv2 (bn1, bn2) for the first pair of filters, conv3, conv4 for the next..."""
    blocks, inputs = [], channels
    for k, pair in enumerate(filters):
        convs = []
        for i, width in enumerate(pair, start=2 * k + 1):
            convs.append(Conv(f"conv{i}", inputs, width, Norm(f"bn{i}", width) if norm else None))
            inputs = width
        blocks.append(Block(*convs))
    return tuple(blocks)


@dataclass(frozen=True)
class Architecture:
    """Blocks of Conv -> Conv -> MaxPool -> (Dropout), then Dense -> (Dropout) -> Dense, for
    one input (channels, height, width) and one set of widths."""

    channels: int
    image: tuple[int, int]
    blocks: tuple[Block, ...]
    dense: Dense
    out: Dense

    @classmethod
    def of(
        cls,
        channels: int,
        image: tuple[int, int],
        block_filters: tuple[tuple[int, int], ...],
        units: int,
        n_classes: int,
        batch_norm: bool = False,
    ) -> Architecture:
        """The layers for images of ``channels`` x ``image``, a block per pair of filter
        counts in ``block_filters``; DataError if the images are too small for them."""
        if channels < 1:
            raise DataError(f"images need at least 1 channel, got {channels}")
        depth = len(block_filters)
        side = min_side(depth)
        if len(image) != 2 or min(image) < side:
            size = "x".join(map(str, image))
            what = "two 3x3 convolutions and a 2x2 pooling" + (f", {depth} times," * (depth > 1))
            fewer = "fewer conv_blocks or " * (depth > 1)
            raise DataError(
                f"images of {size} pixels are too small for conv_blocks={depth}: {what} need "
                f"at least {side}x{side}; use {fewer}larger images (--resize {side}x{side})"
            )
        blocks = _blocks(channels, tuple(block_filters), batch_norm)
        height, width = _pooled_sides(tuple(image), depth)[-1]
        dense = Dense("dense", blocks[-1].filters * height * width, units)
        return cls(channels, tuple(image), blocks, dense, Dense("out", units, n_classes))

    @classmethod
    def for_config(
        cls, config: TrainConfig, n_classes: int, image: tuple[int, int], channels: int = 1
    ) -> Architecture:
        return cls.of(
            channels, image, config.block_filters, config.neurons, n_classes, config.batch_norm
        )

    @property
    def block_outputs(self) -> tuple[tuple[int, int, int], ...]:
        """Each block's pooled maps (filters, height, width): what its dropout masks."""
        sides = _pooled_sides(self.image, len(self.blocks))
        return tuple((block.filters, *side) for block, side in zip(self.blocks, sides, strict=True))

    @property
    def pooled(self) -> tuple[int, int]:
        """Height and width of the last block's pooled maps, which the dense layer flattens."""
        return self.block_outputs[-1][1:]

    @property
    def conv_parameters(self) -> tuple[str, ...]:
        """The blocks' trained tensors, block by block, in state_dict order."""
        return tuple(name for block in self.blocks for name in block.parameters)

    def dense_shapes(self, units: int) -> Shapes:
        """The dense layers' shapes for a hidden width of ``units`` (a narrower member's
        corner of this architecture's)."""
        return (
            replace(self.dense, units=units).shapes()
            | replace(self.out, in_features=units).shapes()
        )

    @property
    def statistics(self) -> tuple[str, ...]:
        """The batch norms' moving averages: in the state_dict, but never trained."""
        return tuple(name for block in self.blocks for name in block.statistics)

    def shapes(self) -> Shapes:
        """Every tensor's shape by its name in SeedNet's state_dict, in its order."""
        shapes: Shapes = {}
        for block in self.blocks:
            for conv in block.convs:
                shapes |= conv.shapes()
        return shapes | self.dense.shapes() | self.out.shapes()


def _pooled_sides(image: tuple[int, int], blocks: int) -> list[tuple[int, int]]:
    """Height and width of each of ``blocks`` blocks' pooled maps, for ``image``."""
    sides, (height, width) = [], image
    for _ in range(blocks):
        height, width = Block.output_side(height), Block.output_side(width)
        sides.append((height, width))
    return sides
