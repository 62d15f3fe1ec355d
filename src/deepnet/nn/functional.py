"""Keras 2.0 semantics for dropout, batch normalisation, the MaxNorm constraint and
categorical cross-entropy."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

EPSILON = 1e-7  # Keras' K.epsilon(): the probability clip and the MaxNorm guard
BN_EPSILON = 1e-3  # Keras' BatchNormalization epsilon
BN_MOMENTUM = 0.01  # torch's: a batch's share of the moving averages (Keras' 0.99: what is kept)


DropoutScales = Callable[[Sequence[int], float], torch.Tensor]


def dropout(
    x: torch.Tensor, rate: float, training: bool, scales: DropoutScales | None = None
) -> torch.Tensor:
    """Inverted dropout x*mask/(1-rate) while training, identity otherwise.

    ``scales(shape, rate)`` gives the multipliers (the engines pass each member's own mask
    stream, so the same seed gives the same masks in every engine); by default they are
    drawn from torch's global generator.
    """
    if not training or rate == 0.0:
        return x
    return x * (scales or dropout_scale)(x.shape, rate)


def dropout_scale(
    shape: Sequence[int], rate: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The multiplier of inverted dropout: 1/(1-rate) where kept, 0 where dropped."""
    keep = torch.rand(tuple(shape), generator=generator) >= rate
    return keep / (1.0 - rate)


class KerasBatchNorm(nn.BatchNorm2d):
    """Keras 2's BatchNormalization over the channels of (N, C, H, W) maps: batch statistics
    while training, moving averages (momentum 0.99, variances unbiased) at evaluation,
    epsilon 1e-3. Without torch's batch counter, which a fixed momentum never reads, so its
    state_dict holds the four float tensors a population's parameter row lays out."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)
        self.register_buffer("num_batches_tracked", None)

    def _load_from_state_dict(self, *args: object) -> None:
        nn.Module._load_from_state_dict(self, *args)  # torch's would add the counter back


@torch.no_grad()
def max_norm_(weight: torch.Tensor, max_value: float | torch.Tensor) -> torch.Tensor:
    """Rescale each unit's incoming weights to norm <= max_value, in place (Keras MaxNorm).

    ``weight`` is a torch Linear weight, shape (..., out_units, in_features): each row holds
    one unit's incoming weights, the column Keras' (in, out) kernel normalised over axis 0.
    A tensor ``max_value`` broadcasts against the (..., out_units, 1) norms.
    """
    norms = weight.norm(dim=-1, keepdim=True)
    return weight.mul_(torch.clamp(norms, max=max_value) / (norms + EPSILON))


def categorical_crossentropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample loss -log p[label] with p = softmax(logits) clipped to [1e-7, 1-1e-7].

    The clip caps a sample's loss near 16.1 and, as in Keras, passes no gradient where it
    bites. ``logits``: (batch, classes); ``labels``: (batch,) integer class indices.
    """
    probs = torch.softmax(logits, dim=1).clamp(EPSILON, 1.0 - EPSILON)
    return -torch.log(probs.gather(1, labels[:, None]).squeeze(1))
