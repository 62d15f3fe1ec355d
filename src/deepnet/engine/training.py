"""Training: the caller's handle on a population while it trains, whatever the engine.

An engine splits the members into groups that it advances together (a single model in the
sequential engine, a stacked population in the population engine); Training runs every
group one epoch per round, reports in member order, and forwards the caller's stops.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import numpy as np

from deepnet.engine.checkpoint import MemberSnapshot
from deepnet.engine.member import EpochResult, Member
from deepnet.nn import SeedNet


class Group(Protocol):
    """Members an engine advances together. ``keys``: those still training, in order."""

    keys: list[str]

    def next_epoch(self) -> list[EpochResult]:
        """Train every member one epoch; members that are done leave ``keys``."""

    def drop(self, keys: set[str]) -> None:
        """Stop training these members (their compute is freed at once)."""

    def model(self, key: str) -> SeedNet:
        """The member's network as its last epoch left it."""

    def snapshot(self, key: str) -> MemberSnapshot:
        """A live member's state at this epoch boundary (deepnet.engine.checkpoint)."""

    def absorb(self, other: Group) -> bool:
        """Take in the members of ``other``, a group that has not trained yet, if this
        group can train them alongside its own; whether it did."""


class Training:
    """An iterator of EpochResult over a population; ``stop(key)`` ends a member early.

    Members advance in lockstep rounds of one epoch each (epoch 1 of every member, then
    epoch 2, ...), so a caller can compare members, or average a trial's folds, after
    every round. A stop takes effect before the member's next epoch; ``extend`` adds
    members that start training with the next round. ``model(key)`` returns a member's
    network as its last epoch left it.
    """

    def __init__(self, groups: Sequence[Group], keys: Sequence[str]):
        if len(set(keys)) != len(keys):
            raise ValueError("member keys must be unique")
        self._groups = list(groups)
        self._order = {k: i for i, k in enumerate(keys)}
        self._owner = {k: g for g in self._groups for k in g.keys}
        self._stopped: set[str] = set()

    def __iter__(self) -> Iterator[EpochResult]:
        while self.active:
            yield from self.step()

    @property
    def active(self) -> list[str]:
        """Keys of the members that will train another epoch, in member order."""
        live = {k for g in self._groups for k in g.keys} - self._stopped
        return sorted(live, key=self._order.__getitem__)

    def stop(self, key: str) -> None:
        self._stopped.add(key)

    def extend(self, other: Training) -> None:
        """Train ``other``'s members alongside these from the next round on, each from its
        own epoch 1, in a running group that can absorb them or in their own."""
        clash = set(self._order) & set(other._order)
        if clash:
            raise ValueError(f"member keys already training: {sorted(clash)[:3]}")
        for group in other._groups:
            host = next((g for g in self._groups if g.absorb(group)), group)
            if host is group:
                self._groups.append(group)
            self._owner.update(dict.fromkeys(group.keys, host))
        for key in sorted(other._order, key=other._order.__getitem__):
            self._order[key] = len(self._order)
        self._stopped |= other._stopped

    def model(self, key: str) -> SeedNet:
        return self._owner[key].model(key)

    def snapshot(self, key: str) -> MemberSnapshot:
        """A member's state now, between rounds, to resume it from (an active member)."""
        return self._owner[key].snapshot(key)

    def step(self) -> list[EpochResult]:
        """Advance every active member by one epoch (one lockstep round)."""
        results: list[EpochResult] = []
        for group in self._groups:
            group.drop(self._stopped.intersection(group.keys))
            if group.keys:
                results += group.next_epoch()
        return sorted(results, key=lambda r: self._order[r.key])


class Engine(Protocol):
    """What trains members: SequentialEngine (the reference) or PopulationEngine, on images
    (n, height, width, channels) channels last, or grey (n, height, width)."""

    def train(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        n_classes: int,
        members: Sequence[Member],
        resume: Mapping[str, MemberSnapshot] | None = None,
    ) -> Training: ...
