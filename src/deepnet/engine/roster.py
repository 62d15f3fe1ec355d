"""A population's members, one record each, in the row order of its stacked tensors.

A MemberState holds everything that belongs to one member while it trains (its random
streams, its indices, the round it joined in); a Roster is the sorted tuple of them plus
what the batched calls read per row, a step's learning rates and image transforms
included. Leaving and joining build a new Roster and the row permutation that the
parameters and optimizer state then apply, so nothing per member is ever re-permuted by
hand.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from deepnet.config import TrainConfig
from deepnet.engine.augment import AugmentStream, BatchTransforms
from deepnet.engine.checkpoint import MemberSnapshot
from deepnet.engine.dropout import MaskStream
from deepnet.engine.member import Member
from deepnet.engine.member_runs import Run, runs_of, sort_key
from deepnet.engine.optimizer_bank import RuleGroup
from deepnet.engine.schedules import Schedule


@dataclass(frozen=True)
class StepShape:
    """What members must share to take their training steps together."""

    batch_size: int
    block_filters: tuple[tuple[int, int], ...]  # each conv block's two filter counts
    batch_norm: bool
    steps: int  # batches per epoch

    @classmethod
    def of(cls, member: Member) -> StepShape:
        cfg = member.config
        steps = math.ceil(len(member.train_idx) / cfg.batch_size)
        return cls(cfg.batch_size, cfg.block_filters, cfg.batch_norm, steps)

    @property
    def conv1_filters(self) -> int:
        return self.block_filters[0][0]

    @property
    def conv2_filters(self) -> int:
        return self.block_filters[0][1]


@dataclass(frozen=True)
class Hidden:
    """What members' dense layers must share to run as one batched product."""

    activation: str
    units: int


def _indices(values: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.int64))


@dataclass(frozen=True, eq=False)
class MemberState:
    """One member while an engine trains it. ``generator`` draws its initial weights, then
    each epoch's shuffle; ``masks`` its dropout; ``joined`` is the population's round when
    it joined, so its own epoch is the population's minus ``joined``."""

    member: Member
    generator: torch.Generator
    masks: MaskStream
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    joined: int = 0

    @classmethod
    def start(cls, member: Member) -> MemberState:
        """Fresh streams from the member's seed, as the sequential engine draws them."""
        return cls(
            member,
            torch.Generator().manual_seed(member.seed),
            MaskStream(member.seed),
            _indices(member.train_idx),
            _indices(member.val_idx),
        )

    def resumed(self, snapshot: MemberSnapshot) -> MemberState:
        """This member's streams where ``snapshot`` left them, as if it had joined
        ``snapshot.epoch`` rounds before the population's first."""
        generator = torch.Generator()
        generator.set_state(snapshot.generator)
        return replace(
            self, generator=generator, masks=MaskStream.at(snapshot.masks), joined=-snapshot.epoch
        )

    @property
    def key(self) -> str:
        return self.member.key

    @property
    def config(self) -> TrainConfig:
        return self.member.config

    def joining(self, epoch: int) -> MemberState:
        """This member, at its own epoch 0, entering a population that has trained ``epoch``
        rounds."""
        return replace(self, joined=epoch)

    def shuffled(self) -> torch.Tensor:
        """This epoch's order of the training images, from the member's own generator."""
        return self.train_idx[torch.randperm(len(self.train_idx), generator=self.generator)]


class Roster:
    """MemberStates in row order, and the per-row values and runs of the batched calls."""

    def __init__(self, states: Sequence[MemberState]):
        self.states = tuple(states)
        cfgs = [s.config for s in self.states]
        self.keys = [s.key for s in self.states]
        self.masks = [s.masks for s in self.states]
        self.conv_dropout = [c.conv_dropout for c in cfgs]
        self.dropout = [c.dropout_rate for c in cfgs]
        self.units = [c.neurons for c in cfgs]
        self.lr = torch.tensor([c.effective_learn_rate for c in cfgs]).view(len(cfgs), 1)
        self.constrained = torch.tensor(
            [i for i, c in enumerate(cfgs) if c.weight_constraint is not None], dtype=torch.int64
        )
        self.max_norms = torch.tensor(
            [c.weight_constraint for c in cfgs if c.weight_constraint is not None]
        ).view(-1, 1, 1)
        self.conv_runs: list[Run[str]] = runs_of([c.conv_activation or c.activation for c in cfgs])
        self.dense_runs: list[Run[Hidden]] = runs_of(
            [Hidden(c.dense_activation or c.activation, c.neurons) for c in cfgs]
        )
        self.optimizer_runs: list[Run[RuleGroup]] = runs_of(
            [RuleGroup(s.config.optimizer, s.joined) for s in self.states]
        )
        self.schedules = [Schedule.of(c) for c in cfgs]
        self.augments = [AugmentStream.of(s.member) for s in self.states]

    def learning_rates(self, epoch: int, step: int, steps: int) -> torch.Tensor:
        """(P, 1) each member's learning rate at step ``step`` of the population's round
        ``epoch`` (of ``steps`` steps): ``lr`` itself where no member has a schedule."""
        if all(s.constant for s in self.schedules):
            return self.lr
        rates = [
            s.config.effective_learn_rate * schedule.multiplier(epoch - s.joined, step, steps)
            for s, schedule in zip(self.states, self.schedules, strict=True)
        ]
        return torch.tensor(rates).view(len(rates), 1)

    def transforms(
        self, epoch: int, start: int, n: int, image: tuple[int, int]
    ) -> BatchTransforms | None:
        """Each member's augmentation of a step's ``n`` images (padded), those from position
        ``start`` of its order at the population's round ``epoch``; None if none augments."""
        drawn = [
            a.transforms(epoch - s.joined, start, n, *image)
            for s, a in zip(self.states, self.augments, strict=True)
        ]
        return BatchTransforms.of(drawn, n)

    def __len__(self) -> int:
        return len(self.states)

    @classmethod
    def sorted(cls, states: Sequence[MemberState]) -> tuple[Roster, torch.Tensor]:
        """The states in row order (few runs, ties in the given order), and the rows of the
        given order that make it up."""
        order = sorted(range(len(states)), key=lambda i: sort_key(states[i].config))
        return cls([states[i] for i in order]), torch.tensor(order, dtype=torch.int64)

    def without(self, keys: Iterable[str]) -> tuple[Roster, torch.Tensor] | None:
        """The roster less the members ``keys`` and the rows it keeps; None if none leave."""
        keys = set(keys)
        keep = [i for i, key in enumerate(self.keys) if key not in keys]
        if len(keep) == len(self.states):
            return None
        return Roster([self.states[i] for i in keep]), torch.tensor(keep, dtype=torch.int64)

    def index(self, key: str) -> int:
        return self.keys.index(key)
