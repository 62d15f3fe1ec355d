"""Ensembles: several networks of one configuration whose class probabilities are averaged.

``deepnet search --ensemble K`` refits the best configuration with K seeds (seed .. seed+K-1)
as one population; ``--ensemble folds`` refits it on each cross-validation fold. Every
member is held out from the same stratified validation share of the training images, and
that share alone decides whether the average or the first member by itself is used: the
test split is touched once, afterwards, to evaluate both.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import numpy as np
import torch
from torch import nn

from deepnet.config import TrainConfig
from deepnet.data.folds import holdout_split, stratified_folds
from deepnet.engine import Engine, EpochResult, Member, PopulationEngine, Status
from deepnet.engine.memory import check_members_fit
from deepnet.errors import ConfigError
from deepnet.evaluate import TestMetrics, images_to_tensor, metrics_of, predict_logits
from deepnet.nn import SeedNet

DEFAULT_VALIDATION_SHARE = 0.1
ENSEMBLE_HELP = "--ensemble takes a number of seeds K >= 2 (e.g. --ensemble 5) or 'folds'"


class EnsembleKind(StrEnum):
    SEEDS = "seeds"  # the same training images, seeds seed .. seed+K-1
    FOLDS = "folds"  # one member per cross-validation fold of the training images


class Choice(StrEnum):
    """Which model a refit uses, decided on the validation share."""

    SINGLE = "single"  # the first member alone
    ENSEMBLE = "ensemble"  # the average of every member's probabilities


@dataclass(frozen=True)
class EnsemblePlan:
    """What a refit averages: ``size`` members of ``kind``, all held out from a stratified,
    seeded ``validation_share`` of the training images. ``size`` is None for folds until the
    search's number of folds is known (``for_cv``)."""

    kind: EnsembleKind
    size: int | None = None
    validation_share: float = DEFAULT_VALIDATION_SHARE

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", EnsembleKind(self.kind))
        if self.kind is EnsembleKind.SEEDS and not _whole(self.size, 2):
            raise ConfigError(f"ensemble={self.size!r} is not allowed: {ENSEMBLE_HELP}.")
        share = self.validation_share
        if not is_validation_share(share):
            raise ConfigError(
                f"ensemble validation share {share!r} is not allowed: give a fraction of the "
                "training images between 0 and 1 (default 0.1); it decides between the "
                "ensemble and its first member."
            )

    @classmethod
    def parse(
        cls, value: object, validation_share: float = DEFAULT_VALIDATION_SHARE
    ) -> EnsemblePlan:
        """``value`` as --ensemble and ``ensemble=`` take it: K (an int or its digits) or
        "folds"; anything else is one ConfigError naming it."""
        if isinstance(value, EnsemblePlan):
            return value
        if isinstance(value, str):
            text = value.strip().lower()
            if text == EnsembleKind.FOLDS:
                return cls(EnsembleKind.FOLDS, None, validation_share)
            if text.lstrip("-").isdigit():
                value = int(text)
        if not _whole(value, 2):
            hint = " (did you mean 'folds'?)" if str(value).lower().startswith("fold") else ""
            raise ConfigError(f"ensemble={value!r} is not allowed{hint}: {ENSEMBLE_HELP}.")
        return cls(EnsembleKind.SEEDS, int(value), validation_share)  # type: ignore[arg-type]

    def for_cv(self, cv: int) -> EnsemblePlan:
        """The plan with its size set: a folds ensemble has one member per fold."""
        return replace(self, size=cv) if self.kind is EnsembleKind.FOLDS else self

    def describe(self) -> str:
        return f"{self.size} {self.kind.value}"

    def members(
        self, config: TrainConfig, labels: np.ndarray, seed: int
    ) -> tuple[list[Member], np.ndarray]:
        """The members to train, and the validation indices every one of them is held out
        from. Member i has seed ``seed + i`` (as the folds of a search's trial do)."""
        if self.size is None:
            raise ConfigError("a folds ensemble needs the number of folds: call for_cv(cv).")
        rest, validation = holdout_split(labels, self.validation_share, seed)
        if self.kind is EnsembleKind.SEEDS:
            parts = [(f"seed-{seed + i}", rest) for i in range(self.size)]
        else:
            folds = stratified_folds(labels[rest], self.size, seed)
            parts = [(f"fold-{i}", rest[train]) for i, (train, _) in enumerate(folds)]
        members = [
            Member(key, config, train, validation, seed + i) for i, (key, train) in enumerate(parts)
        ]
        return members, validation

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "size": self.size,
            "validation_share": self.validation_share,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnsemblePlan:
        return cls(EnsembleKind(data["kind"]), data["size"], data["validation_share"])


def is_validation_share(value: object) -> bool:
    """Whether ``value`` can be an ensemble's validation share: a real number in (0, 1)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and 0 < value < 1


def _whole(value: object, least: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= least


def average_log_probabilities(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """log of the mean of each member's softmax: "logits" whose softmax is the averaged
    probabilities, so every consumer of a network's logits (loss, argmax, softmax, export)
    takes an ensemble as it takes one network. Clamped so that a class every member rules
    out gets a finite, tiny score."""
    probabilities = torch.stack([torch.softmax(z, dim=1) for z in logits]).mean(0)
    return torch.log(probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny))


class EnsembleNet(nn.Module):
    """Networks of one configuration as one model: its output is the log of their averaged
    probabilities (see ``average_log_probabilities``)."""

    def __init__(self, networks: Sequence[nn.Module]):
        super().__init__()
        if len(networks) < 2:
            raise ValueError("an ensemble averages at least 2 networks")
        self.networks = nn.ModuleList(networks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return average_log_probabilities([network(x) for network in self.networks])


@dataclass(frozen=True)
class Comparison:
    """The first member alone and the ensemble, measured on the same images."""

    single: TestMetrics
    ensemble: TestMetrics

    def of(self, choice: Choice) -> TestMetrics:
        return self.ensemble if choice is Choice.ENSEMBLE else self.single

    def better(self) -> Choice:
        """The ensemble if it is more accurate, or as accurate with a lower loss."""
        ens, one = self.ensemble, self.single
        wins = (ens.accuracy, -ens.loss) > (one.accuracy, -one.loss)
        return Choice.ENSEMBLE if wins else Choice.SINGLE

    def to_dict(self) -> dict[str, Any]:
        return {"single": self.single.to_dict(), "ensemble": self.ensemble.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        return cls(TestMetrics.from_dict(data["single"]), TestMetrics.from_dict(data["ensemble"]))


def compare(logits: Sequence[torch.Tensor], labels: np.ndarray) -> Comparison:
    """The first member's and the ensemble's metrics from every member's logits."""
    return Comparison(
        metrics_of(logits[0], labels), metrics_of(average_log_probabilities(logits), labels)
    )


def member_logits(models: Sequence[nn.Module], images: np.ndarray) -> list[torch.Tensor]:
    """Each model's logits of ``images`` (n, h, w, c), computed once for every comparison."""
    x = images_to_tensor(images)
    return [predict_logits(model, x) for model in models]


@dataclass(frozen=True)
class FittedMember:
    member: Member
    history: list[EpochResult]
    model: SeedNet | None  # None: it diverged

    @property
    def status(self) -> Status:
        return self.history[-1].status


@dataclass(frozen=True)
class FittedEnsemble:
    """Trained members and the validation decision. ``validation`` is None when fewer than
    two members finished (the one that did is used alone)."""

    plan: EnsemblePlan
    members: list[FittedMember]
    validation_idx: np.ndarray
    validation: Comparison | None

    @property
    def usable(self) -> list[FittedMember]:
        """The members that finished training, in member order; the first is "single"."""
        return [m for m in self.members if m.model is not None]

    @property
    def choice(self) -> Choice:
        return Choice.SINGLE if self.validation is None else self.validation.better()

    def model(self, choice: Choice | None = None) -> nn.Module:
        """The chosen model (or ``choice``'s), in eval mode."""
        usable = [m.model for m in self.usable if m.model is not None]
        if not usable:
            raise ConfigError("every member of the ensemble diverged: there is no model.")
        if (choice or self.choice) is Choice.SINGLE or len(usable) == 1:
            return usable[0].eval()
        return EnsembleNet(usable).eval()


def fit_ensemble(
    config: TrainConfig,
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    plan: EnsemblePlan,
    seed: int = 0,
    *,
    on_epoch: Callable[[EpochResult], None] | None = None,
    engine: Engine | None = None,
) -> FittedEnsemble:
    """Train ``plan``'s members of ``config`` as one population on the training ``images``
    and decide on the validation share between the ensemble and the first member. The
    memory it needs is estimated first: too many members is a ConfigError before training.
    """
    members, validation = plan.members(config, labels, seed)
    check_members_fit(config, len(members), n_classes, images)
    training = (engine or PopulationEngine()).train(images, labels, n_classes, members)
    histories: dict[str, list[EpochResult]] = {m.key: [] for m in members}
    for result in training:
        histories[result.key].append(result)
        if on_epoch:
            on_epoch(result)
    fitted = [
        FittedMember(
            m,
            histories[m.key],
            None
            if histories[m.key][-1].status is Status.DIVERGED
            else training.model(m.key).eval(),
        )
        for m in members
    ]
    usable = [f.model for f in fitted if f.model is not None]
    comparison = (
        compare(member_logits(usable, images[validation]), labels[validation])
        if len(usable) >= 2
        else None
    )
    return FittedEnsemble(plan, fitted, validation, comparison)


@dataclass(frozen=True)
class EnsembleRecord:
    """What an ensemble refit leaves in RUN/ensemble.json: the plan, each member's run folder
    (relative, member order: the first is "single"), the validation comparison that chose,
    and both models' one evaluation on the test split."""

    plan: EnsemblePlan
    members: tuple[str, ...]
    choice: Choice
    validation: Comparison | None
    test: Comparison | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_dict(),
            "members": list(self.members),
            "choice": self.choice.value,
            "validation": None if self.validation is None else self.validation.to_dict(),
            "test": None if self.test is None else self.test.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnsembleRecord:
        return cls(
            EnsemblePlan.from_dict(data["plan"]),
            tuple(data["members"]),
            Choice(data["choice"]),
            None if data["validation"] is None else Comparison.from_dict(data["validation"]),
            None if data["test"] is None else Comparison.from_dict(data["test"]),
        )
