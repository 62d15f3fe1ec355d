"""The seed's convolutional network, built from a validated TrainConfig.

    image (N, C, 28, 28)  (C = 1 for grey images, 3 for RGB)
      -> Conv(conv1_filters, 3x3, conv activation)          (N, f1, 26, 26)
      -> Conv(conv2_filters, 3x3, conv activation)          (N, f2, 24, 24)
      -> MaxPool 2x2 -> Dropout(conv_dropout) -> Flatten    (N, f2*12*12)
      -> Dense(neurons, dense activation, MaxNorm)          (N, neurons)
      -> Dropout(dropout_rate) -> Dense(n_classes)          (N, n_classes) logits

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
from deepnet.nn.architecture import POOL, Architecture, min_side
from deepnet.nn.functional import DropoutScales, dropout, max_norm_
from deepnet.nn.initializers import INITIALIZERS

if TYPE_CHECKING:
    from deepnet.config import TrainConfig


def min_image_side() -> int:
    """The smallest height and width the network takes: two valid 3x3 convolutions and a
    2x2 pooling must leave at least one pixel (6 for the seed's stack)."""
    return min_side()


class SeedNet(nn.Module):
    """Conv -> Conv -> MaxPool -> Dropout -> Dense -> Dropout -> Dense, as in the seed."""

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
        self.conv1 = layers.conv1.module()
        self.conv2 = layers.conv2.module()
        self.dense = layers.dense.module()
        self.out = layers.out.module()
        self.conv_activation_name = config.conv_activation or config.activation
        self.conv_activation = ACTIVATIONS[self.conv_activation_name]
        self.dense_activation = ACTIVATIONS[config.dense_activation or config.activation]
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Keras defaults: glorot_uniform conv kernels, ``init_mode`` dense kernels, zero biases."""
        conv_init = INITIALIZERS["glorot_uniform"]
        dense_init = INITIALIZERS[self.config.init_mode]
        for layer, init in (
            (self.conv1, conv_init),
            (self.conv2, conv_init),
            (self.dense, dense_init),
            (self.out, dense_init),
        ):
            init(layer.weight, generator)
            layer.bias.zero_()

    def forward(self, x: torch.Tensor, scales: DropoutScales | None = None) -> torch.Tensor:
        """Logits (N, n_classes) for images x (N, C, H, W) scaled to [0, 1]; ``scales`` draws
        the dropout multipliers while training (see ``dropout``)."""
        cfg = self.config
        x = self.conv_activation(self.conv1(x))
        x = pool_activate(self.conv2(x), self.conv_activation_name)
        x = dropout(x, cfg.conv_dropout, self.training, scales).flatten(1)
        x = self.dense_activation(self.dense(x))
        x = dropout(x, cfg.dropout_rate, self.training, scales)
        return self.out(x)

    def apply_constraints(self) -> None:
        """Keras applies kernel constraints after every optimizer step, never at init."""
        if self.config.weight_constraint is not None:
            max_norm_(self.dense.weight, self.config.weight_constraint)

    def feature_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Activations after each convolution layer, for pictures of what the network sees."""
        first = self.conv_activation(self.conv1(x))
        return first, self.conv_activation(self.conv2(first))


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
