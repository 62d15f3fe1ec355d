"""Learning-rate schedules: what a member's learning rate is multiplied by at each step.

The multiplier is a pure function of the member's own epoch and step, its steps per epoch
and its config (``lr_schedule``, ``epochs``, ``warmup_epochs``): members with different
schedules share a population (the learning rate is a row each), a member in a population
follows the schedule it follows alone, and a resumed one needs no saved state. The
schedule spans the member's configured ``epochs``, so a halving rung that has trained a
trial for fewer epochs judges it before its rate has decayed.

Warm-up rises linearly from 1/W to 1 over the first W = warmup_epochs x steps steps; the
shape then runs over the rest, with u in [0, 1) the progress through them:
constant 1; cosine 0.5 (1 + cos(pi u)); onecycle linear from 1/25 (torch's OneCycleLR
div_factor) to 1 over the first 30 %, then cosine to 0 (its own rise: warm-up is not
needed with it); step x0.1 from u = 0.5 and x0.01 from u = 0.75.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from deepnet.config import LR_SCHEDULES, TrainConfig
from deepnet.errors import ConfigError

ONECYCLE_RISE = 0.3  # share of the steps over which onecycle rises
ONECYCLE_START = 1 / 25  # onecycle's first multiplier


def _constant(u: float) -> float:
    return 1.0


def _cosine(u: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * u))


def _onecycle(u: float) -> float:
    if u < ONECYCLE_RISE:
        return ONECYCLE_START + (1.0 - ONECYCLE_START) * u / ONECYCLE_RISE
    return _cosine((u - ONECYCLE_RISE) / (1.0 - ONECYCLE_RISE))


def _step(u: float) -> float:
    return 0.1 ** ((u >= 0.5) + (u >= 0.75))


SHAPES: dict[str, Callable[[float], float]] = {
    "constant": _constant,
    "cosine": _cosine,
    "onecycle": _onecycle,
    "step": _step,
}


@dataclass(frozen=True)
class Schedule:
    """A member's learning-rate schedule over its ``epochs``."""

    shape: str  # one of config.LR_SCHEDULES
    epochs: int
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ConfigError(
                f"unknown lr_schedule {self.shape!r}; use one of {', '.join(LR_SCHEDULES)}"
            )
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(
                f"warmup_epochs={self.warmup_epochs} must be from 0 to fewer than "
                f"epochs={self.epochs}; lower warmup_epochs"
            )

    @classmethod
    def of(cls, config: TrainConfig) -> Schedule:
        return cls(config.lr_schedule, config.epochs, config.warmup_epochs)

    @property
    def constant(self) -> bool:
        """Whether every step takes the configured rate (engines then leave it untouched)."""
        return self.shape == "constant" and not self.warmup_epochs

    def multiplier(self, epoch: int, step: int, steps: int) -> float:
        """The factor at step ``step`` (from 0) of the member's epoch ``epoch`` (from 1) of
        ``steps`` steps."""
        t = (epoch - 1) * steps + step
        warmup = self.warmup_epochs * steps
        if t < warmup:
            return (t + 1) / warmup
        return SHAPES[self.shape]((t - warmup) / ((self.epochs - self.warmup_epochs) * steps))
