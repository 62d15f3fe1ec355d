"""How much memory training a population needs, estimated before it starts.

Every member keeps its weights, gradients and optimizer state for the whole training; the
activations a step keeps for its backward pass are held by one population (at most
``PopulationEngine``'s ``max_members`` members) at a time. The per-image activation size is
measured on the real network (the bytes autograd saves for one image), so it follows any
architecture. An estimate, meant to refuse what cannot fit rather than to budget tightly.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from deepnet.config import TrainConfig
from deepnet.data.memory import available_memory
from deepnet.errors import ConfigError
from deepnet.nn import SeedNet

POPULATION = 16  # members stepped together at most (PopulationEngine's default max_members)
STATE_COPIES = 5  # weights, gradient, two optimizer slots, the kept model
STEP_COPIES = 3  # saved activations, their gradients, the engine's staging buffers
GIB = 2**30


def _saved_bytes(model: SeedNet, x: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward pass of ``model`` on ``x``."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    return total


def member_bytes(
    config: TrainConfig, n_classes: int, image: tuple[int, int], channels: int
) -> tuple[int, int]:
    """(bytes a member keeps while it trains, bytes of one image's activations in a step)."""
    model = SeedNet(config, n_classes, image, channels=channels).train()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    # two batches of 2 and 4 images (batch normalisation needs more than one value per
    # channel): their difference is what two more images cost, the weights cancel out
    two, four = (_saved_bytes(model, torch.zeros(n, channels, *image)) for n in (2, 4))
    return STATE_COPIES * weights, max(four - two, 0) // 2


def training_bytes(
    config: TrainConfig, n_members: int, n_classes: int, images: np.ndarray
) -> tuple[int, int]:
    """(estimated bytes to train ``n_members`` of ``config`` on ``images`` (n, h, w, c),
    bytes each member adds), the images counted once as the engine converts them."""
    height, width, channels = images.shape[1:]
    state, per_image = member_bytes(config, n_classes, (height, width), channels)
    step = STEP_COPIES * per_image * config.batch_size
    data = images.size * 4 if images.dtype != np.uint8 else images.nbytes
    return data + n_members * state + min(n_members, POPULATION) * step, state


def available_bytes() -> int:
    """Memory this process may still use: the system's available memory, or less under a
    cgroup limit."""
    found = [available_memory()]
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(used))
    except (OSError, ValueError):
        pass
    return min(found)


def check_members_fit(
    config: TrainConfig,
    n_members: int,
    n_classes: int,
    images: np.ndarray,
    available: int | None = None,
) -> int:
    """The estimate for training ``n_members`` at once; ConfigError naming it, the memory
    available (default: measured) and the most members that fit, when it does not fit."""
    needed, per_member = training_bytes(config, n_members, n_classes, images)
    available = available_bytes() if available is None else available
    if needed <= available:
        return needed
    base = needed - n_members * per_member
    most = max(0, math.floor((available - base) / per_member)) if per_member else 0
    fix = (
        f"use --ensemble {most} or fewer (ensemble={most}), or free memory"
        if most >= 2
        else "free memory, or search smaller networks (fewer filters or neurons)"
    )
    raise ConfigError(
        f"an ensemble of {n_members} members needs about {needed / GIB:.1f} GiB to train "
        f"({per_member / 2**20:.1f} MiB each), but only {available / GIB:.1f} GiB is "
        f"available: {fix}. The search is kept: the same command with another --ensemble "
        "goes straight to the refit."
    )
