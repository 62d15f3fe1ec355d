"""The population engine: many members trained in lockstep as one set of stacked tensors.

Members that can share a training step (same batch size, blocks and filter counts, batch
norm or not, and batches per epoch) form a population. Its parameters (and the batch norms'
moving averages, which no gradient reaches) live in one (P, S) matrix, a row per member
(``parameters``); its members' records in a Roster in the same row order (``roster``);
its optimizer state in an OptimizerBank (``optimizer_bank``). A step runs every member's
own batch through the population convolutions of ``kernels`` (feature maps (P, C, H, W,
images)) and batched matrix products per run of members with the same hidden width, then
one backward pass; each member's loss is the mean over its own batch, so gradients never
mix. Each optimizer rule runs once per run of members that use it, on a slice of rows,
with a learning rate per row.

Every member keeps its own torch.Generator (init, then per epoch the shuffle) and
MaskStream (per step the dropout masks), drawn in the sequential engine's order, so it ends
with the metrics it would reach alone, within float tolerance. Stopped and finished members
are cut out of the matrices after the epoch, so pruning frees their compute at once.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from deepnet.config import TrainConfig
from deepnet.engine.allocator import keep_freed_memory
from deepnet.engine.augment import BatchTransforms, gather_augmented
from deepnet.engine.batches import Tally, pad
from deepnet.engine.checkpoint import MemberSnapshot
from deepnet.engine.device import Precision, check_precision, resolve_device
from deepnet.engine.dropout import draw
from deepnet.engine.inputs import check_training_data, pixel_tensors
from deepnet.engine.kernels import (
    LANES,
    Statistics,
    conv_stack,
    gather_images,
    norm_stack,
    norm_stack_eval,
)
from deepnet.engine.member import EpochResult, Member, epoch_status
from deepnet.engine.member_runs import Run, by_runs, sort_key
from deepnet.engine.optimizer_bank import OptimizerBank, RuleGroup
from deepnet.engine.parameters import Layout, StackedParameters
from deepnet.engine.roster import Hidden, MemberState, Roster, StepShape
from deepnet.engine.training import Training
from deepnet.errors import DeviceMemoryError
from deepnet.nn import ACTIVATIONS, OPTIMIZERS, SeedNet, categorical_crossentropy, max_norm_
from deepnet.nn.architecture import Architecture, Block
from deepnet.nn.functional import BN_MOMENTUM

__all__ = ["Population", "PopulationEngine", "StepShape"]

EVAL_IMAGES = 4096  # member-images per evaluation chunk: bounds the memory of validation


@dataclass(frozen=True)
class TrainingStep:
    """What a training step's forward pass takes beyond the images: each member's count of
    real images in its padded batch (its batch norms' statistics are over those only) and
    its dropout multipliers, one per block (None: no member drops there) and the dense one."""

    counts: torch.Tensor  # (P,) int32
    conv: tuple[torch.Tensor | None, ...]  # (P, filters, h, w, b) per block
    dense: torch.Tensor | None  # (P, units, b)
    transforms: BatchTransforms | None = None  # the members' images' augmentation


@dataclass(frozen=True)
class PendingAverages:
    """A block's batch statistics of a step for a run of members, which update their moving
    averages once the step's backward pass has read the parameters."""

    block: Block
    run: Run[str]
    statistics: Statistics


def affine(weight: torch.Tensor, bias: torch.Tensor, t: torch.Tensor, bf16: bool) -> torch.Tensor:
    """weight @ t + bias for each member: (P, out, in), (P, out), (P, in, b) -> (P, out, b);
    with ``bf16``, the product from bf16 operands (float32 sums, a bf16 result) and the sum
    in float32: the hidden layer's bf16 products."""
    if bf16:
        return torch.bmm(weight.bfloat16(), t.bfloat16()).float() + bias[:, :, None]
    return torch.baddbmm(bias[:, :, None], weight, t)


class Population:
    """Members sharing a StepShape, trained as stacked tensors: a Group for Training. ``x``:
    the images (n, C, H, W), uint8 pixels or float32 (inputs.pixel_tensors); ``y``: labels.
    It trains on x's device: the compiled kernels on the CPU, torch operations elsewhere (a
    GPU); the members' streams, orders and records stay on the CPU, their draws are moved."""

    def __init__(
        self,
        members: Sequence[Member],
        x: torch.Tensor,
        y: torch.Tensor,
        n_classes: int,
        keep_models: bool = True,
        capacity: int | None = None,
        resume: Mapping[str, MemberSnapshot] | None = None,
        precision: Precision = Precision.FP32,
    ):
        shape = StepShape.of(members[0])
        if any(StepShape.of(m) != shape for m in members):
            raise ValueError(
                "a population's members must share batch size, blocks, batch_norm and steps"
            )
        self.shape, self.x, self.y, self.n_classes = shape, x, y, n_classes
        self.device, self.bf16 = x.device, precision is Precision.BF16
        self.channels, self.image = x.shape[1], tuple(x.shape[2:])
        self.keep_models = keep_models
        self.capacity = capacity or len(members)  # how many members absorb() may bring it to
        resume = resume or {}
        fresh, _ = Roster.sorted([MemberState.start(m) for m in members])
        layout = self._layout(max(fresh.units))
        rows = []
        for s in fresh.states:
            net = self._net(s.config, s.generator)
            if s.key in resume:
                net.load_state_dict(resume[s.key].parameters)
            rows.append(layout.row(net.state_dict()))
        roster = Roster([s.resumed(resume[s.key]) if s.key in resume else s for s in fresh.states])
        self._arrange(roster, layout, torch.stack(rows).to(self.device))
        self.bank = OptimizerBank(shape.steps)
        for i, s in enumerate(roster.states):
            if s.key in resume:
                snap = resume[s.key]
                slots = {name: layout.row(values) for name, values in snap.slots.items()}
                group = RuleGroup(s.config.optimizer, s.joined)
                self.bank.restore(self.params.flat, i, slots, group, snap.scalars)
        self.epoch = 0  # rounds trained; a member's own epoch is epoch - its join round
        self.finished: dict[str, SeedNet] = {}
        self._pending: list[PendingAverages] = []  # this step's batch statistics

    # --- members joining and leaving ----------------------------------------------------

    @property
    def keys(self) -> list[str]:
        return self.roster.keys

    @property
    def layout(self) -> Layout:
        return self.params.layout

    def _layout(self, units: int) -> Layout:
        shape = self.shape
        return Layout(
            Architecture.of(
                self.channels,
                self.image,
                shape.block_filters,
                units,
                self.n_classes,
                shape.batch_norm,
            )
        )

    def _net(self, config: TrainConfig, generator: torch.Generator | None = None) -> SeedNet:
        return SeedNet(config, self.n_classes, self.image, generator, channels=self.channels)

    def _arrange(self, roster: Roster, layout: Layout, flat: torch.Tensor) -> None:
        """These members, with parameters ``flat`` in their row order."""
        self.roster = roster
        self.params = StackedParameters(layout, flat, roster.conv_runs, roster.dense_runs)

    def drop(self, keys: set[str]) -> None:
        kept = self.roster.without(keys)
        if kept is None:
            return
        roster, rows = kept
        rows = rows.to(self.device)
        self.bank.take(rows)
        self._arrange(roster, self.layout, self.params.flat[rows])

    def absorb(self, other: Population) -> bool:
        """Take in ``other``'s members, which have not trained yet, if they fit: from the
        next round they train here, each at its own epoch and optimizer step, exactly as
        they would have apart. Returns whether it took them."""
        if (
            other.shape != self.shape
            or other.epoch
            or any(s.joined for s in other.roster.states)  # resumed: their own rounds
            or other.x.data_ptr() != self.x.data_ptr()
            or other.bf16 != self.bf16
            or len(self.roster) + len(other.roster) > self.capacity
        ):
            return False
        layout = self._layout(max(self.layout.units, other.layout.units))
        joining = [s.joining(self.epoch) for s in other.roster.states]
        roster, rows = Roster.sorted([*self.roster.states, *joining])
        rows = rows.to(self.device)
        flat = torch.cat(
            [
                layout.convert(self.params.flat, self.layout),
                layout.convert(other.params.flat, other.layout),
            ]
        )
        self.bank.merge(layout, self.layout, len(joining), rows)
        self._arrange(roster, layout, flat[rows])
        return True

    def model(self, key: str) -> SeedNet:
        if key in self.finished:
            return self.finished[key]
        i = self.roster.index(key)
        net = self._net(self.roster.states[i].config)
        return self.layout.load(self.params.flat[i : i + 1], net)

    def snapshot(self, key: str) -> MemberSnapshot:
        """A live member's state at this epoch boundary, unpadded, to resume it from."""
        i = self.roster.index(key)
        state = self.roster.states[i]
        cfg = state.config

        def unpadded(flat: torch.Tensor) -> dict[str, torch.Tensor]:
            return self.layout.load(flat[i : i + 1], self._net(cfg)).state_dict()

        def trained(flat: torch.Tensor) -> dict[str, torch.Tensor]:
            """The accumulators of the trained tensors (the moving averages have none)."""
            statistics = self.layout.architecture.statistics
            return {k: v for k, v in unpadded(flat).items() if k not in statistics}

        slots = OPTIMIZERS[cfg.optimizer].slots
        return MemberSnapshot(
            self.epoch - state.joined,
            unpadded(self.params.flat),
            {name: trained(self.bank.slots[name]) for name in slots if name in self.bank.slots},
            dict(self.bank.scalars.get(RuleGroup(cfg.optimizer, state.joined), {})),
            state.generator.get_state(),
            state.masks.position,
        )

    # --- the network, for all members at once -------------------------------------------

    def _logits(self, index: torch.Tensor, step: TrainingStep | None = None) -> torch.Tensor:
        """Logits (P, b, classes) of images ``index`` (P, b), one row of images per member;
        ``step`` for a training step (batch statistics, dropout), None for evaluation.

        Feature maps are (P, C, H, W, b), images innermost, as ``kernels`` wants them;
        dim 1 is each member's own channels, so softmax there is SeedNet's softmax.
        """
        leaf, arch = self.params.leaf, self.layout.architecture
        n, b = index.shape
        if step is None or step.transforms is None:
            x = gather_images(self.x, index)  # (P, C, H, W, b)
        else:
            x = gather_augmented(self.x, index, step.transforms)
        for k, block in enumerate(arch.blocks):
            scale = None if step is None else step.conv[k]  # its dropout, where it has one
            # the last block's maps in bf16 where the dense layer's products take them so
            bf16_out = self.bf16 and k == len(arch.blocks) - 1
            block_of_run = functools.partial(self._block, block, step, scale, bf16_out)
            x = by_runs(x, self.roster.conv_runs, block_of_run)
        h = x.view(n, -1, b)  # (P, features, b): SeedNet's flatten order, images innermost
        dense, out = arch.dense, arch.out
        dense_scale = None if step is None else step.dense

        def hidden(t: torch.Tensor, run: Run[Hidden]) -> torch.Tensor:
            """Hidden and output layers of the run's members (same activation and width)."""
            units = run.key.units  # the run's leaves are its own width
            t = affine(leaf(dense.weight, run), leaf(dense.bias, run), t, self.bf16)
            t = ACTIVATIONS[run.key.activation](t)  # (P', units, b); softmax over the units
            if dense_scale is not None:
                t = t * dense_scale[run.start : run.start + len(t), :units]
            # (P', classes, b)
            return torch.baddbmm(leaf(out.bias, run)[:, :, None], leaf(out.weight, run), t)

        return by_runs(h, self.roster.dense_runs, hidden).transpose(1, 2)

    def _block(
        self,
        block: Block,
        step: TrainingStep | None,
        scale: torch.Tensor | None,
        bf16_out: bool,
        t: torch.Tensor,
        run: Run[str],
    ) -> torch.Tensor:
        """One block's pooled, activated maps of the run's members, times ``scale`` (its
        dropout's multipliers, all members', where it has one), in bf16 where ``bf16_out``.
        With batch norms, a training step normalises by the batch statistics (kept for the
        moving averages, which evaluation normalises by)."""
        leaves = [self.params.leaf(name, run) for name in block.parameters]
        if scale is not None:
            scale = scale[run.start : run.end]
        if not self.shape.batch_norm:
            return conv_stack(t, *leaves, run.key, self.bf16, scale, bf16_out)
        if step is None:
            rows = self.params.flat[run.start : run.end]
            running = tuple(self.layout.view(rows, name) for name in block.statistics)
            return norm_stack_eval(t, *leaves, run.key, running, self.bf16, bf16_out)
        counts = step.counts[run.start : run.end]
        maps, statistics = norm_stack(t, *leaves, run.key, counts, self.bf16, scale, bf16_out)
        self._pending.append(PendingAverages(block, run, statistics))
        return maps

    def _training_step(self, step: int, sizes: list[int], b: int) -> TrainingStep:
        """Each member's real image count and dropout multipliers for step ``step``, from its
        own mask stream (a conv mask per block, then the dense mask, as in the sequential
        engine), laid out as the feature maps they scale: (P, filters, h, w, b) per block and
        (P, units, b); and its images' transforms, from its augmentation stream."""
        roster, n = self.roster, len(self.roster)
        conv = []
        for filters, h, w in self.layout.architecture.block_outputs:
            scale = None
            if any(roster.conv_dropout):
                features = [filters * h * w] * n
                scale = draw(roster.masks, roster.conv_dropout, sizes, features, b)
                scale = scale.view(n, filters, h, w, b).to(self.device)
            conv.append(scale)
        dense = None
        if any(roster.dropout):
            dense = draw(roster.masks, roster.dropout, sizes, roster.units, b).to(self.device)
        start = step * self.shape.batch_size  # the step's first position in every order
        transforms = roster.transforms(self.epoch, start, b, self.image)
        counts = torch.tensor(sizes, dtype=torch.int32, device=self.device)
        if transforms is not None:
            transforms = transforms.to(self.device)
        return TrainingStep(counts, tuple(conv), dense, transforms)

    def _losses(
        self,
        index: torch.Tensor,
        weight: torch.Tensor,
        tally: Tally,
        step: TrainingStep | None = None,
    ) -> torch.Tensor:
        """Per-image losses (P, b) of images ``index``, counted into ``tally``."""
        logits = self._logits(index, step)
        labels = self.y[index]
        losses = categorical_crossentropy(logits.flatten(0, 1), labels.flatten())
        losses = losses.view_as(weight)
        tally.add(losses, logits, labels, weight > 0)
        return losses

    # --- the training loop ----------------------------------------------------------------

    def next_epoch(self) -> list[EpochResult]:
        try:
            return self._next_epoch()
        except torch.OutOfMemoryError as exc:  # a GPU's memory; the CPU's raises otherwise
            raise DeviceMemoryError(
                f"{self.device} ran out of memory training a population of {len(self.roster)} "
                f"at batch size {self.shape.batch_size} ({str(exc).splitlines()[0]}): use fewer "
                "workers on it (--n-jobs) or a smaller batch_size, or train on the CPU "
                "(--device cpu)."
            ) from exc

    def _next_epoch(self) -> list[EpochResult]:
        start = time.perf_counter()
        self.epoch += 1
        n, batch = len(self.roster), self.shape.batch_size
        orders = [s.shuffled() for s in self.roster.states]
        tally = Tally(n, self.device)
        for step in range(self.shape.steps):
            parts = [o[step * batch : (step + 1) * batch] for o in orders]
            index, weight = pad(parts, self.device)
            step_inputs = self._training_step(step, [len(p) for p in parts], index.shape[1])
            losses = self._losses(index, weight, tally, step_inputs)
            self.params.backward((losses * weight).sum())
            self._update(step)
        sizes = torch.tensor([len(o) for o in orders], dtype=torch.float64)
        train_loss = (tally.loss.cpu() / sizes).tolist()
        train_acc = (tally.correct.cpu() / sizes).tolist()
        finite = torch.isfinite(self.params.flat).all(1).tolist()
        val = self._validate()
        seconds = (time.perf_counter() - start) / n
        results, done = [], set()
        for i, state in enumerate(self.roster.states):
            diverged = not (math.isfinite(train_loss[i]) and finite[i])
            epoch = self.epoch - state.joined
            status, reason = epoch_status(epoch, state.config.epochs, diverged)
            val_loss, val_acc = val[i] if val[i] and not diverged else (None, None)
            result = EpochResult(
                state.key,
                epoch,
                train_loss[i],
                train_acc[i],
                val_loss,
                val_acc,
                seconds,
                status,
                reason,
            )
            results.append(result)
            if result.done:
                done.add(state.key)
                if self.keep_models:
                    self.finished[state.key] = self.model(state.key)
        self.drop(done)
        return results

    @torch.no_grad()
    def _update(self, step: int) -> None:
        """One optimizer step for every member, then the MaxNorm constraint and the batch
        norms' moving averages (which have no gradient, so the optimizer leaves them be)."""
        roster, params, device = self.roster, self.params.flat, self.device
        lr = roster.learning_rates(self.epoch, step, self.shape.steps).to(device)  # scheduled
        self.bank.step(params, self.params.grad, roster.optimizer_runs, lr)
        if len(roster.constrained):
            dense = self.layout.view(params, self.layout.architecture.dense.weight)
            constrained = roster.constrained.to(device)
            dense[constrained] = max_norm_(dense[constrained], roster.max_norms.to(device))
        for pending in self._pending:
            rows = params[pending.run.start : pending.run.end]
            for name, batch in zip(pending.block.statistics, pending.statistics, strict=True):
                average = self.layout.view(rows, name)
                mixed = BN_MOMENTUM * batch.double() + (1 - BN_MOMENTUM) * average.double()
                average.copy_(mixed)
        self._pending.clear()

    @torch.no_grad()
    def _validate(self) -> list[tuple[float, float] | None]:
        """(loss, accuracy) on each member's validation images; None where it has none."""
        val_idx = [s.val_idx for s in self.roster.states]
        n, longest = len(val_idx), max(len(v) for v in val_idx)
        if longest == 0:
            return [None] * n
        tally = Tally(n, self.device)
        chunk = max(LANES, EVAL_IMAGES // n // LANES * LANES)
        for start in range(0, longest, chunk):
            index, weight = pad([v[start : start + chunk] for v in val_idx], self.device)
            self._losses(index, weight, tally)
        return tally.means([len(v) for v in val_idx])


class PopulationEngine:
    """Trains members as populations of stacked tensors, ``max_members`` at most in each,
    on ``device`` ("cpu", or "cuda[:N]": the images, parameters and optimizer state live
    there, and the population trains through torch's operations on the GPU), in
    ``precision`` ("fp32", or "bf16": the convolutions and the hidden layer take bf16
    operands with float32 sums, where the CPU's kernels have them; see kernels.conv_stack).

    Members are grouped by StepShape and, within a shape, by activation, width and optimizer, so
    that each population has few runs of rules; larger groups are chunked, which bounds
    memory (the activations of one step grow with the population).
    """

    def __init__(
        self,
        max_members: int = 16,
        keep_models: bool = True,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
    ):
        if max_members < 1:
            raise ValueError(f"max_members must be >= 1, got {max_members}")
        self.max_members = max_members
        self.keep_models = keep_models
        self.device = resolve_device(device)
        self.precision = check_precision(precision, self.device)
        if self.device.type == "cuda":  # fp32 convolutions, as on the CPU: no TF32
            torch.backends.cudnn.allow_tf32 = False
        self._data: tuple | None = None  # the last images and labels, as tensors
        keep_freed_memory()

    def _tensors(self, images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, ...]:
        """The data as tensors, converted once per array pair: populations trained on the
        same arrays share them, which lets a running population absorb a new one."""
        if self._data is None or self._data[0] is not images or self._data[1] is not labels:
            tensors = pixel_tensors(images, labels)
            self._data = (images, labels, *(t.to(self.device) for t in tensors))
        return self._data[2:]

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
        x, y = self._tensors(images, labels)
        by_shape: dict[StepShape, list[Member]] = {}
        for m in sorted(members, key=lambda m: sort_key(m.config)):
            by_shape.setdefault(StepShape.of(m), []).append(m)
        groups = [
            Population(
                same[i : i + self.max_members],
                x,
                y,
                n_classes,
                self.keep_models,
                self.max_members,
                resume,
                self.precision,
            )
            for same in by_shape.values()
            for i in range(0, len(same), self.max_members)
        ]
        return Training(groups, [m.key for m in members])
