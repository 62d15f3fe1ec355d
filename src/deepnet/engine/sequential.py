"""The reference engine: trains the members of a population one model at a time.

Faster engines must give each member the same results (within float tolerance); this one
defines them. A member's random streams are a ``torch.Generator`` (init, shuffling), a
``MaskStream`` (dropout masks) and an ``AugmentStream`` (its training images' transforms),
all seeded with the member's seed, so the same seed gives the same model bit for bit on the
same machine. Its learning rate follows its Schedule step by step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from deepnet.engine.augment import AugmentStream, augment_images
from deepnet.engine.checkpoint import MemberSnapshot
from deepnet.engine.inputs import check_training_data, training_tensors
from deepnet.engine.member import EpochResult, Member, Status, epoch_status
from deepnet.engine.roster import MemberState
from deepnet.engine.schedules import Schedule
from deepnet.engine.training import Training
from deepnet.evaluate import loss_and_accuracy, predict_logits
from deepnet.nn import OPTIMIZERS, SeedNet, categorical_crossentropy


class MemberRun:
    """One member's network and optimizer, and its MemberState (random streams, indices):
    a Group of one."""

    def __init__(
        self,
        member: Member,
        x: torch.Tensor,
        y: torch.Tensor,
        n_classes: int,
        resume: MemberSnapshot | None = None,
    ):
        self.member, self.x, self.y = member, x, y
        self.keys = [member.key]
        self.epoch = 0
        self.state = state = MemberState.start(member)
        self._model = SeedNet(
            member.config, n_classes, tuple(x.shape[2:]), state.generator, channels=x.shape[1]
        )
        self.rule = OPTIMIZERS[member.config.optimizer]
        self.optimizer = self.rule(self._model.parameters(), lr=member.config.learn_rate)
        if resume is not None:
            self._resume(resume)

    def _resume(self, snap: MemberSnapshot) -> None:
        """Go on from ``snap``: its weights, optimizer state and streams, at its epoch."""
        self._model.load_state_dict(snap.parameters)
        self.state = self.state.resumed(snap)
        self.epoch = snap.epoch
        steps = snap.epoch * math.ceil(len(self.member.train_idx) / self.member.config.batch_size)
        for name, p in self._model.named_parameters():
            slots = {slot: values[name].clone() for slot, values in snap.slots.items()}
            self.optimizer.state[p] = {"step": steps, **slots, **snap.scalars}

    def snapshot(self, key: str) -> MemberSnapshot:
        """Its state at this epoch boundary, to resume it from."""
        named = dict(self._model.named_parameters())
        states = {name: self.optimizer.state[p] for name, p in named.items()}
        first = next(iter(states.values()))
        return MemberSnapshot(
            self.epoch,
            {name: t.detach().clone() for name, t in self._model.state_dict().items()},
            {slot: {n: s[slot].clone() for n, s in states.items()} for slot in self.rule.slots},
            {k: float(v) for k, v in first.items() if k != "step" and k not in self.rule.slots},
            self.state.generator.get_state(),
            self.state.masks.position,
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
        batches = order.split(cfg.batch_size)
        augments, schedule = AugmentStream.of(self.member), Schedule.of(cfg)
        loss_sum, correct = 0.0, 0
        for step, batch in enumerate(batches):
            images = x[batch]
            if augments.active:
                first = step * cfg.batch_size  # the batch's position in the epoch's order
                affine = augments.transforms(self.epoch, first, len(batch), *x.shape[2:])
                images = augment_images(x, batch, affine)
            logits = model(images, self.state.masks.scale)
            losses = categorical_crossentropy(logits, y[batch])
            self.optimizer.zero_grad(set_to_none=True)
            losses.mean().backward()
            if not schedule.constant:
                factor = schedule.multiplier(self.epoch, step, len(batches))
                for group in self.optimizer.param_groups:
                    group["lr"] = cfg.effective_learn_rate * factor
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
        self,
        images: np.ndarray,
        labels: np.ndarray,
        n_classes: int,
        members: Sequence[Member],
        resume: Mapping[str, MemberSnapshot] | None = None,
    ) -> Training:
        """Train ``members`` on ``images`` (n, height, width, channels), channels last, or
        grey (n, height, width): uint8 pixels (scaled by 1/255) or floats already scaled.
        Those in ``resume`` go on from their snapshot's epoch."""
        check_training_data(images, labels, n_classes, members)
        x, y = training_tensors(images, labels)
        resume = resume or {}
        runs = [MemberRun(m, x, y, n_classes, resume.get(m.key)) for m in members]
        return Training(runs, [m.key for m in members])
