"""The eight Keras 2.0 activations, by the names the seed's grid uses.

Every function maps a tensor to a tensor of the same shape. ``softmax`` normalises over
dim 1, which is the channel axis of an NCHW convolution output and the unit axis of a
(batch, units) dense output, as Keras' channel-last softmax did over its last axis.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional

Activation = Callable[[torch.Tensor], torch.Tensor]


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Keras' piecewise-linear sigmoid clip(0.2x + 0.5, 0, 1) (torch's has slope 1/6)."""
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


def softsign(x: torch.Tensor) -> torch.Tensor:
    """x / (1 + |x|)."""
    return x / (1.0 + x.abs())


def linear(x: torch.Tensor) -> torch.Tensor:
    """The identity."""
    return x


ACTIVATIONS: dict[str, Activation] = {
    "softmax": lambda x: torch.softmax(x, dim=1),
    "softplus": functional.softplus,
    "softsign": softsign,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": hard_sigmoid,
    "linear": linear,
}
