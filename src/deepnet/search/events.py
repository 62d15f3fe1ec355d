"""What a search tells its caller while it runs (``on_event``): workers started or lost,
trials resumed from checkpoints, and how much of the driver each stage used."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkersStarted:
    """The workers are up: how many, where, and anything worth saying about their machines
    (such as a node without a C compiler, which trains with the slower fallback)."""

    count: int
    where: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkerLost:
    """A worker was lost: these open trials of its batch were re-queued."""

    worker: str
    reason: str
    requeued: tuple[int, ...]


@dataclass(frozen=True)
class TrialsResumed:
    """These trials (sharing their members) resumed from their checkpoint at ``epoch``."""

    trials: tuple[int, ...]
    epoch: int


@dataclass(frozen=True)
class DriverLoad:
    """How much of the driver a stage used: its CPU seconds (every thread of the driver's
    process: Optuna calls, storage, bookkeeping, reading replies; waiting costs none) for
    the trial-epochs its workers trained (one trial's folds for one epoch), and the
    seconds the workers trained them for. One driver keeps about ``workers_kept_busy``
    workers busy: beyond that, workers wait for it."""

    driver_seconds: float
    trial_epochs: int
    training_seconds: float

    @property
    def seconds_per_trial_epoch(self) -> float:
        return self.driver_seconds / max(self.trial_epochs, 1)

    @property
    def workers_kept_busy(self) -> float:
        return self.training_seconds / max(self.driver_seconds, 1e-9)


SearchEvent = WorkersStarted | WorkerLost | TrialsResumed | DriverLoad
OnEvent = Callable[[SearchEvent], None]
