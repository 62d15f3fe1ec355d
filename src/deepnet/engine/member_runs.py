"""Runs of consecutive members that share a rule: the unit of the population's batched calls.

A population keeps its members sorted so that members with the same activations, width and
optimizer sit next to each other; each operation that differs between members then runs
once per run, on a slice of rows, instead of once per member.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from deepnet.config import TrainConfig

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Run(Generic[K]):
    """Rows [start, end) of the population, which share ``key``."""

    start: int
    end: int
    key: K


def runs_of(keys: Sequence[K]) -> list[Run[K]]:
    """Maximal runs of equal consecutive keys."""
    out, start = [], 0
    for key, group in itertools.groupby(keys):
        n = len(list(group))
        out.append(Run(start, start + n, key))
        start += n
    return out


def by_runs(
    x: torch.Tensor, runs: Sequence[Run[K]], fn: Callable[[torch.Tensor, Run[K]], torch.Tensor]
) -> torch.Tensor:
    """fn(x[run.start:run.end], run) for each run (dim 0 is the members), one call on the
    whole of x when there is one run (no copies then). The parts are split, not sliced, so
    that the backward pass joins their gradients instead of adding each, zero-padded, to a
    gradient of the whole."""
    if len(runs) == 1:
        return fn(x, runs[0])
    parts = x.split([run.end - run.start for run in runs])
    return torch.cat([fn(part, run) for part, run in zip(parts, runs, strict=True)])


def sort_key(config: TrainConfig) -> tuple:
    """Members in this order form few runs of equal activations, widths and optimizers."""
    conv = config.conv_activation or config.activation
    dense = config.dense_activation or config.activation
    return (conv, dense, config.neurons, config.optimizer)
