"""What deepnet stores on an Optuna trial, and the state it reports: one codec for both sides.

The driver writes a ``TrialRecord`` into one user attribute of the trial; results, study and
the report read it back with ``TrialRecord.of``. The record's field names are its keys, so
the stored format is declared once, here. Studies written by earlier versions hold each
field as a user attribute of its own, under the same names: old run folders read unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from deepnet.engine import EpochResult

# The columns of one epoch in a stored history (EpochResult attributes, in this order).
HISTORY_FIELDS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")

STUDY_SPEC = "deepnet_spec"  # the study's user attribute holding what it is for (its spec)
RECORD_KEY = "deepnet"  # the trial's user attribute holding its TrialRecord

History = dict[str, list[list[float]]]  # fold (as text: a JSON key) -> rows of HISTORY_FIELDS
SetAttr = Callable[[str, Any], None]  # optuna.Trial.set_user_attr, or a storage's equivalent


class TrialStatus(StrEnum):
    """A trial's state as deepnet reports it; equal to its name as text ("complete", ...)."""

    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"
    RUNNING = "running"
    WAITING = "waiting"

    @classmethod
    def of(cls, state: TrialState) -> TrialStatus:
        return _STATUS_OF[state]

    @property
    def finished(self) -> bool:
        return self in (TrialStatus.COMPLETE, TrialStatus.PRUNED, TrialStatus.FAILED)


_STATUS_OF = {
    TrialState.COMPLETE: TrialStatus.COMPLETE,
    TrialState.PRUNED: TrialStatus.PRUNED,
    TrialState.FAIL: TrialStatus.FAILED,
    TrialState.RUNNING: TrialStatus.RUNNING,
    TrialState.WAITING: TrialStatus.WAITING,
}


@dataclass(frozen=True)
class TrialRecord:
    """deepnet's user attributes of one trial. Fields at their default are not stored."""

    epochs_trained: int = 0  # the most epochs any of its folds trained
    seconds: float = 0.0  # training time summed over the folds
    history: History | None = None
    fold_scores: tuple[float, ...] = ()  # final validation accuracy per fold (complete only)
    std: float | None = None  # of fold_scores
    reason: str = ""  # why it failed
    pruned_at_epoch: int | None = None
    interrupted: bool = False  # stopped by Ctrl-C or a dead process: retried on resume

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialRecord:
        """The record stored on ``trial`` (defaults for what it does not hold yet)."""
        attrs = trial.user_attrs
        stored = attrs.get(RECORD_KEY, attrs)  # earlier versions: one attribute per field
        values = {f.name: stored[f.name] for f in fields(cls) if f.name in stored}
        if "fold_scores" in values:
            values["fold_scores"] = tuple(values["fold_scores"])
        return cls(**values)

    def write(self, set_attr: SetAttr) -> None:
        """Store every field that differs from its default, as one JSON attribute (one
        database write per trial, not one per field)."""
        stored = {
            f.name: list(value) if isinstance(value, tuple) else value
            for f in fields(self)
            if (value := getattr(self, f.name)) != f.default
        }
        set_attr(RECORD_KEY, stored)


def trial_params(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's configuration. A queued trial keeps the whole of it in Optuna's
    ``fixed_params`` until it is asked; its params may be partial if the process died while
    it was being asked."""
    return dict(trial.params or trial.system_attrs.get("fixed_params", {}))


def encode_history(folds: Mapping[int, Sequence[EpochResult]]) -> History:
    """Per-fold epoch results as stored: fold -> one row of HISTORY_FIELDS per epoch."""
    return {
        str(fold): [[getattr(r, name) for name in HISTORY_FIELDS] for r in results]
        for fold, results in sorted(folds.items())
    }
