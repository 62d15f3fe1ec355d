"""What the engine trains (members) and what it reports (one result per member-epoch)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from deepnet.config import TrainConfig


@dataclass(frozen=True, eq=False)
class Member:
    """One model to train: a config, its training and validation indices, and a seed.

    In a cross-validated search a member is one trial on one fold; a plain training run
    is a population of one. ``val_idx`` may be empty (no validation metrics then).
    Members with the same ``checkpoint`` label (a trial's folds) are checkpointed together
    when the caller keeps checkpoints (deepnet.engine.checkpoint); None: never saved.
    """

    key: str
    config: TrainConfig
    train_idx: np.ndarray
    val_idx: np.ndarray
    seed: int = 0
    checkpoint: str | None = None


class Status(StrEnum):
    RUNNING = "running"  # more epochs to come
    FINISHED = "finished"  # trained all its epochs
    STOPPED = "stopped"  # stopped early by the caller
    DIVERGED = "diverged"  # loss or weights became non-finite; training ended


@dataclass(frozen=True)
class EpochResult:
    """Metrics of one member after one epoch (1-based). Validation fields are None without one."""

    key: str
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float
    status: Status = Status.RUNNING
    reason: str = ""

    @property
    def done(self) -> bool:
        return self.status is not Status.RUNNING


def epoch_status(epoch: int, epochs: int, diverged: bool) -> tuple[Status, str]:
    """A member's status and reason after ``epoch`` of its ``epochs``."""
    if diverged:
        return Status.DIVERGED, f"non-finite training loss or weights in epoch {epoch}"
    return (Status.FINISHED if epoch >= epochs else Status.RUNNING), ""
