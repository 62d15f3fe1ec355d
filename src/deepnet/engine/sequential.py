"""The reference engine: trains the members of a population one model at a time.

Faster engines must give each member the same results (within float tolerance); this one
defines them. The per-member random stream (init, shuffling, dropout masks) is one
``torch.Generator`` seeded with the member's seed, so the same seed gives the same
model bit for bit on the same machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from deepnet.engine.member import EpochResult, Member, Status
from deepnet.evaluate import images_to_tensor, loss_and_accuracy, predict_logits
from deepnet.nn import OPTIMIZERS, SeedNet, categorical_crossentropy


class _MemberRun:
    """One member's network, optimizer and random stream, advanced one epoch at a time."""

    def __init__(self, member: Member, x: torch.Tensor, y: torch.Tensor, n_classes: int):
        self.member, self.x, self.y = member, x, y
        self.epoch = 0
        self.gen = torch.Generator().manual_seed(member.seed)
        self.model = SeedNet(member.config, n_classes, tuple(x.shape[2:]), generator=self.gen)
        self.optimizer = OPTIMIZERS[member.config.optimizer](
            self.model.parameters(), lr=member.config.learn_rate
        )
        self.train_idx = torch.from_numpy(np.asarray(member.train_idx, dtype=np.int64))
        self.val_idx = torch.from_numpy(np.asarray(member.val_idx, dtype=np.int64))

    def next_epoch(self) -> EpochResult:
        cfg, model, x, y = self.member.config, self.model, self.x, self.y
        self.epoch += 1
        start = time.perf_counter()
        model.train()
        order = self.train_idx[torch.randperm(len(self.train_idx), generator=self.gen)]
        loss_sum, correct = 0.0, 0
        for batch in order.split(cfg.batch_size):
            logits = model(x[batch], self.gen)
            losses = categorical_crossentropy(logits, y[batch])
            self.optimizer.zero_grad(set_to_none=True)
            losses.mean().backward()
            self.optimizer.step()
            model.apply_constraints()
            loss_sum += losses.sum().item()
            correct += (logits.argmax(1) == y[batch]).sum().item()
        train_loss, train_acc = loss_sum / len(order), correct / len(order)
        diverged = not math.isfinite(train_loss) or not all(
            torch.isfinite(p).all() for p in model.parameters()
        )
        val_loss = val_acc = None
        if len(self.val_idx) and not diverged:
            val_loss, val_acc = loss_and_accuracy(
                predict_logits(model, x[self.val_idx]), y[self.val_idx]
            )
        status, reason = Status.RUNNING, ""
        if diverged:
            status = Status.DIVERGED
            reason = f"non-finite training loss or weights in epoch {self.epoch}"
        elif self.epoch == cfg.epochs:
            status = Status.FINISHED
        return EpochResult(
            self.member.key,
            self.epoch,
            train_loss,
            train_acc,
            val_loss,
            val_acc,
            time.perf_counter() - start,
            status,
            reason,
        )


class Training:
    """An iterator of EpochResult over a population; ``stop(key)`` ends a member early.

    Members advance in lockstep, one epoch each in turn (epoch 1 of every member, then
    epoch 2, ...), so a caller can compare members, or average a trial's folds, after
    every epoch. A stop takes effect before the member's next epoch. ``model(key)``
    returns a member's network as its last epoch left it.
    """

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, n_classes: int, members: Sequence[Member]
    ):
        keys = [m.key for m in members]
        if len(set(keys)) != len(keys):
            raise ValueError("member keys must be unique")
        x = images_to_tensor(images)
        y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self._runs = {m.key: _MemberRun(m, x, y, n_classes) for m in members}
        self._active = list(self._runs)  # keys still training, in member order
        self._stopped: set[str] = set()
        self._results = self._run()

    def __iter__(self) -> Iterator[EpochResult]:
        return self._results

    def __next__(self) -> EpochResult:
        return next(self._results)

    @property
    def active(self) -> list[str]:
        """Keys of the members that will train another epoch."""
        return [k for k in self._active if k not in self._stopped]

    def stop(self, key: str) -> None:
        self._stopped.add(key)

    def model(self, key: str) -> SeedNet:
        return self._runs[key].model

    def step(self) -> list[EpochResult]:
        """Advance every active member by one epoch (one lockstep round)."""
        return [self._advance(key) for key in self.active]

    def _run(self) -> Iterator[EpochResult]:
        while self.active:
            for key in self.active:
                if key not in self._stopped:  # the caller may stop it between yields
                    yield self._advance(key)

    def _advance(self, key: str) -> EpochResult:
        result = self._runs[key].next_epoch()
        if result.done:
            self._active.remove(key)
        return result


class SequentialEngine:
    """Trains the members in one process with a plain PyTorch loop, one step at a time."""

    def train(
        self, images: np.ndarray, labels: np.ndarray, n_classes: int, members: Sequence[Member]
    ) -> Training:
        return Training(images, labels, n_classes, members)
