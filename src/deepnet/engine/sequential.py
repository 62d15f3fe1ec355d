"""The reference engine: trains members one after another, one model at a time.

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


class Training:
    """An iterator of EpochResult over a population; ``stop(key)`` ends a member early.

    A stop takes effect before the member's next epoch. After iteration, ``model(key)``
    returns each member's network as its last epoch left it.
    """

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, n_classes: int, members: Sequence[Member]
    ):
        keys = [m.key for m in members]
        if len(set(keys)) != len(keys):
            raise ValueError("member keys must be unique")
        self.x = images_to_tensor(images)
        self.y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.n_classes = n_classes
        self.members = list(members)
        self._stopped: set[str] = set()
        self._models: dict[str, SeedNet] = {}
        self._results = self._run()

    def __iter__(self) -> Iterator[EpochResult]:
        return self._results

    def __next__(self) -> EpochResult:
        return next(self._results)

    def stop(self, key: str) -> None:
        self._stopped.add(key)

    def model(self, key: str) -> SeedNet:
        return self._models[key]

    def _run(self) -> Iterator[EpochResult]:
        for member in self.members:
            yield from self._train(member)

    def _train(self, member: Member) -> Iterator[EpochResult]:
        cfg = member.config
        gen = torch.Generator().manual_seed(member.seed)
        model = SeedNet(cfg, self.n_classes, tuple(self.x.shape[2:]), generator=gen)
        self._models[member.key] = model
        optimizer = OPTIMIZERS[cfg.optimizer](model.parameters(), lr=cfg.learn_rate)
        train_idx = torch.from_numpy(np.asarray(member.train_idx, dtype=np.int64))
        val_idx = torch.from_numpy(np.asarray(member.val_idx, dtype=np.int64))
        for epoch in range(1, cfg.epochs + 1):
            if member.key in self._stopped:
                return
            start = time.perf_counter()
            model.train()
            order = train_idx[torch.randperm(len(train_idx), generator=gen)]
            loss_sum, correct = 0.0, 0
            for batch in order.split(cfg.batch_size):
                logits = model(self.x[batch], gen)
                losses = categorical_crossentropy(logits, self.y[batch])
                optimizer.zero_grad(set_to_none=True)
                losses.mean().backward()
                optimizer.step()
                model.apply_constraints()
                loss_sum += losses.sum().item()
                correct += (logits.argmax(1) == self.y[batch]).sum().item()
            train_loss, train_acc = loss_sum / len(order), correct / len(order)
            diverged = not math.isfinite(train_loss) or not all(
                torch.isfinite(p).all() for p in model.parameters()
            )
            val_loss = val_acc = None
            if len(val_idx) and not diverged:
                val_loss, val_acc = loss_and_accuracy(
                    predict_logits(model, self.x[val_idx]), self.y[val_idx]
                )
            status, reason = Status.RUNNING, ""
            if diverged:
                status = Status.DIVERGED
                reason = f"non-finite training loss or weights in epoch {epoch}"
            elif epoch == cfg.epochs:
                status = Status.FINISHED
            yield EpochResult(
                member.key,
                epoch,
                train_loss,
                train_acc,
                val_loss,
                val_acc,
                time.perf_counter() - start,
                status,
                reason,
            )
            if diverged:
                return


class SequentialEngine:
    """Trains each member in turn with a plain PyTorch loop."""

    def train(
        self, images: np.ndarray, labels: np.ndarray, n_classes: int, members: Sequence[Member]
    ) -> Training:
        return Training(images, labels, n_classes, members)
