"""The eight Keras 2.0 kernel initializers, by the names the seed's grid uses.

Fans are computed as torch computes them (a convolution's include kh*kw). The truncated
normals cut at two standard deviations, as Keras' ``truncated_normal`` did.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.nn.init import _calculate_fan_in_and_fan_out as fans

Initializer = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


def _uniform(limit: Callable[[int, int], float]) -> Initializer:
    def init(w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        bound = limit(*fans(w))
        return torch.nn.init.uniform_(w, -bound, bound, generator=generator)

    return init


def _truncated_normal(std: Callable[[int, int], float]) -> Initializer:
    def init(w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        sd = std(*fans(w))
        return torch.nn.init.trunc_normal_(w, 0.0, sd, -2 * sd, 2 * sd, generator=generator)

    return init


def _normal(w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.nn.init.normal_(w, 0.0, 0.05, generator=generator)


def _zero(w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.nn.init.zeros_(w)


INITIALIZERS: dict[str, Initializer] = {
    "uniform": _uniform(lambda fan_in, fan_out: 0.05),
    "lecun_uniform": _uniform(lambda fan_in, fan_out: math.sqrt(3 / fan_in)),
    "normal": _normal,
    "zero": _zero,
    "glorot_normal": _truncated_normal(lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out))),
    "glorot_uniform": _uniform(lambda fan_in, fan_out: math.sqrt(6 / (fan_in + fan_out))),
    "he_normal": _truncated_normal(lambda fan_in, fan_out: math.sqrt(2 / fan_in)),
    "he_uniform": _uniform(lambda fan_in, fan_out: math.sqrt(6 / fan_in)),
}
