"""The seed's convolutional network, built from a validated TrainConfig.

    image (N, C, 28, 28)  (C = 1 for grey images, 3 for RGB)
      -> Conv(conv1_filters, 3x3, conv activation)          (N, f1, 26, 26)
      -> Conv(conv2_filters, 3x3, conv activation)          (N, f2, 24, 24)
      -> MaxPool 2x2 -> Dropout(conv_dropout)               (N, f2, 12, 12)
      [-> conv_blocks - 1 more blocks alike: conv3, conv4 (block2_filters), conv5, conv6]
      -> Flatten -> Dense(neurons, dense activation, MaxNorm)  (N, neurons)
      -> Dropout(dropout_rate) -> Dense(n_classes)          (N, n_classes) logits

With batch_norm each Conv is followed by a BatchNorm (bn1, bn2, ...; Keras 2's momentum and
epsilon) before its activation, and has no bias of its own.

Layer names, shapes and sizes come from ``architecture``, which the population engine's
parameter layout reads too; other image sizes work alike (valid convolutions, a floor
pooling). The softmax of the output layer lives in the loss and in ``predict_proba``. The
second convolution's activation is applied after the pooling wherever the two commute (see
``pool_activate``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from deepnet.nn.activations import ACTIVATIONS
from deepnet.nn.architecture import POOL, Architecture, Block, Conv, min_side
from deepnet.nn.functional import DropoutScales, dropout, max_norm_
from deepnet.nn.initializers import INITIALIZERS

if TYPE_CHECKING:
    from deepnet.config import TrainConfig


def min_image_side(conv_blocks: int = 1) -> int:
    """The smallest height and width the network takes: each block's two valid 3x3
    convolutions and 2x2 pooling must leave at least one pixel (6 for the seed's stack)."""
    return min_side(conv_blocks)


class SeedNet(nn.Module):
    """Blocks of Conv -> Conv -> MaxPool -> Dropout, then Dense -> Dropout -> Dense, as in
    the seed (one block); with batch_norm a BatchNorm after each Conv."""

    def __init__(
        self,
        config: TrainConfig,
        n_classes: int,
        image_shape: tuple[int, int] = (28, 28),
        generator: torch.Generator | None = None,
        *,
        channels: int = 1,
    ):
        super().__init__()
        self.config = config
        self.architecture = layers = Architecture.for_config(
            config, n_classes, image_shape, channels
        )
        for block in layers.blocks:  # registered in state_dict order: conv1, bn1, conv2, ...
            for conv in block.convs:
                self.add_module(conv.name, conv.module())
                if conv.norm is not None:
                    self.add_module(conv.norm.name, conv.norm.module())
        self.dense = layers.dense.module()
        self.out = layers.out.module()
        self.conv_activation_name = config.conv_activation or config.activation
        self.conv_activation = ACTIVATIONS[self.conv_activation_name]
        self.dense_activation = ACTIVATIONS[config.dense_activation or config.activation]
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Keras defaults: glorot_uniform conv kernels, ``init_mode`` dense kernels, zero
        biases, batch norms' scale 1 and shift 0 (drawn in layer order: conv1, conv2, ...)."""
        conv_init = INITIALIZERS["glorot_uniform"]
        dense_init = INITIALIZERS[self.config.init_mode]
        convs = [self.get_submodule(c.name) for b in self.architecture.blocks for c in b.convs]
        for layer, init in (
            *((conv, conv_init) for conv in convs),
            (self.dense, dense_init),
            (self.out, dense_init),
        ):
            init(layer.weight, generator)
            if layer.bias is not None:
                layer.bias.zero_()

    def _conv(self, conv: Conv, x: torch.Tensor) -> torch.Tensor:
        """The convolution, and its batch norm if it has one (before any activation)."""
        x = self.get_submodule(conv.name)(x)
        return x if conv.norm is None else self.get_submodule(conv.norm.name)(x)

    def _block(self, block: Block, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_activation(self._conv(block.first, x))
        return pool_activate(self._conv(block.second, x), self.conv_activation_name)

    def forward(self, x: torch.Tensor, scales: DropoutScales | None = None) -> torch.Tensor:
        """Logits (N, n_classes) for images x (N, C, H, W) scaled to [0, 1]; ``scales`` draws
        the dropout multipliers while training (see ``dropout``): one draw after each block,
        then one after the dense layer."""
        cfg = self.config
        for block in self.architecture.blocks:
            x = dropout(self._block(block, x), cfg.conv_dropout, self.training, scales)
        x = self.dense_activation(self.dense(x.flatten(1)))
        x = dropout(x, cfg.dropout_rate, self.training, scales)
        return self.out(x)

    def apply_constraints(self) -> None:
        """Keras applies kernel constraints after every optimizer step, never at init."""
        if self.config.weight_constraint is not None:
            max_norm_(self.dense.weight, self.config.weight_constraint)

    def feature_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Activations after the first block's two convolutions, for pictures of what the
        network sees."""
        first_block = self.architecture.blocks[0]
        first = self.conv_activation(self._conv(first_block.first, x))
        return first, self.conv_activation(self._conv(first_block.second, first))


def pool_activate(
    x: torch.Tensor, activation: str, pool: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """activation(x) max-pooled 2x2; x has its channels on dim 1 (softmax's axis).

    Every activation but softmax is non-decreasing, so pooling first gives the same values
    (and the same gradients, ties aside) from a quarter of the elements; softmax mixes the
    channels of a pixel and must come first. ``pool`` defaults to torch's 2x2 max pooling.
    """
    pool = pool or (lambda t: torch.max_pool2d(t, POOL))
    act = ACTIVATIONS[activation]
    if activation == "softmax":
        return pool(act(x))
    return act(pool(x))
