"""The reference engine: trains the members of a population one model at a time.

Faster engines must give each member the same results (within float tolerance); this one
defines them. A member's random streams are a ``torch.Generator`` (init, shuffling) and a
``MaskStream`` (dropout masks), both seeded with the member's seed, so the same seed gives
the same model bit for bit on the same machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import torch

from deepnet.engine.inputs import check_training_data, training_tensors
from deepnet.engine.member import EpochResult, Member, Status, epoch_status
from deepnet.engine.roster import MemberState
from deepnet.engine.training import Training
from deepnet.evaluate import loss_and_accuracy, predict_logits
from deepnet.nn import OPTIMIZERS, SeedNet, categorical_crossentropy


class MemberRun:
    """One member's network and optimizer, and its MemberState (random streams, indices):
    a Group of one."""

    def __init__(self, member: Member, x: torch.Tensor, y: torch.Tensor, n_classes: int):
        self.member, self.x, self.y = member, x, y
        self.keys = [member.key]
        self.epoch = 0
        self.state = state = MemberState.start(member)
        self._model = SeedNet(
            member.config, n_classes, tuple(x.shape[2:]), state.generator, channels=x.shape[1]
        )
        self.optimizer = OPTIMIZERS[member.config.optimizer](
            self._model.parameters(), lr=member.config.learn_rate
        )

    def drop(self, keys: set[str]) -> None:
        if self.member.key in keys:
            self.keys = []

    def absorb(self, other: object) -> bool:
        return False  # one model per run

    def model(self, key: str) -> SeedNet:
        return self._model

    def next_epoch(self) -> list[EpochResult]:
        cfg, model, x, y = self.member.config, self._model, self.x, self.y
        self.epoch += 1
        start = time.perf_counter()
        model.train()
        order = self.state.shuffled()
        loss_sum, correct = 0.0, 0
        for batch in order.split(cfg.batch_size):
            logits = model(x[batch], self.state.masks.scale)
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
        val_idx = self.state.val_idx
        if len(val_idx) and not diverged:
            val_loss, val_acc = loss_and_accuracy(predict_logits(model, x[val_idx]), y[val_idx])
        status, reason = epoch_status(self.epoch, cfg.epochs, diverged)
        if status is not Status.RUNNING:
            self.keys = []
        return [
            EpochResult(
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
        ]


class SequentialEngine:
    """Trains the members in one process with a plain PyTorch loop, one step at a time."""

    def train(
        self, images: np.ndarray, labels: np.ndarray, n_classes: int, members: Sequence[Member]
    ) -> Training:
        check_training_data(images, labels, n_classes, members)
        x, y = training_tensors(images, labels)
        return Training([MemberRun(m, x, y, n_classes) for m in members], [m.key for m in members])
