"""Dropout masks from a counter-based random stream, the same in every engine.

Each member owns a ``MaskStream`` seeded with its seed. Every draw (one dropout layer, one
training step) takes the stream's next 64-bit key, and its mask is a pure function of that
key and each element's index (``kernels.dropout_scales``). So the population engine computes
all its members' masks in one call, laid out as its feature maps, while the sequential
engine gets the same masks in its own layout; an element costs a hash, computed in C, not a
step of a sequential generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from deepnet.engine.kernels import dropout_scales

_GOLDEN = 0x9E3779B97F4A7C15
_MASK = 2**64 - 1


def _splitmix64(x: int) -> int:
    """SplitMix64's output for state x: a bijective 64-bit mix."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class MaskStream:
    """A member's sequence of dropout draws (SplitMix64 keys from its seed)."""

    def __init__(self, seed: int):
        self.position = _splitmix64(seed & _MASK)  # the state: where a checkpoint resumes it

    @classmethod
    def at(cls, position: int) -> MaskStream:
        """The stream resumed at a ``position`` it had."""
        stream = cls(0)
        stream.position = position
        return stream

    def next_key(self) -> int:
        """The key of the next draw."""
        self.position = (self.position + _GOLDEN) & _MASK
        return _splitmix64(self.position)

    def scale(self, shape: Sequence[int], rate: float) -> torch.Tensor:
        """Inverted-dropout multipliers for a batch of ``shape[0]`` images of ``shape[1:]``
        features: the same values ``draw`` lays out images innermost."""
        n, features = shape[0], math.prod(shape[1:])
        scales = dropout_scales([self.next_key()], [rate], [n], [features], features, n)
        return scales[0].T.reshape(tuple(shape))


def draw(
    streams: Sequence[MaskStream],
    rates: Sequence[float],
    counts: Sequence[int],
    features: Sequence[int],
    n: int,
) -> torch.Tensor:
    """Each member's next mask as multipliers (P, max features, n), images innermost:
    member p drops ``features[p]`` units of its ``counts[p]`` images at ``rates[p]``.
    A member with rate 0 takes no draw (its multipliers are 1), as dropout skips it."""
    keys = [s.next_key() if r else 0 for s, r in zip(streams, rates, strict=True)]
    return dropout_scales(keys, rates, counts, features, max(features), n)
