"""The population engine: many members trained in lockstep as one set of stacked tensors.

Members that can share a training step (same batch size, filter counts and batches per
epoch) form a population. Its parameters live in one (P, S) matrix, a row per member,
hidden layers stored at the widest member's width (narrower members never touch the rest).
A step runs every member's own batch through the population convolutions of ``kernels``
(feature maps (P, C, H, W, images)) and batched matrix products per run of members with
the same hidden width, then one backward pass; each member's loss is the mean over its
own batch, so gradients never mix. Each optimizer rule runs once per run
of members that use it, on a slice of rows, with a learning rate per row.

Every member keeps its own torch.Generator (init, then per epoch the shuffle) and
MaskStream (per step the dropout masks), drawn in the sequential engine's order, so it ends
with the metrics it would reach alone, within float tolerance. Stopped and finished members
are cut out of the matrices after the epoch, so pruning frees their compute at once.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from deepnet.engine.allocator import keep_freed_memory
from deepnet.engine.dropout import MaskStream, draw
from deepnet.engine.kernels import LANES, conv_stack, gather_images
from deepnet.engine.member import EpochResult, Member, epoch_status
from deepnet.engine.training import Training
from deepnet.evaluate import images_to_tensor
from deepnet.nn import (
    ACTIVATIONS,
    OPTIMIZERS,
    SeedNet,
    categorical_crossentropy,
    max_norm_,
)
from deepnet.nn.network import KERNEL, POOL

EVAL_IMAGES = 4096  # member-images per evaluation chunk: bounds the memory of validation
CONV_PARAMETERS = ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias")
DENSE_PARAMETERS = ("dense.weight", "dense.bias", "out.weight", "out.bias")


@dataclass(frozen=True)
class StepShape:
    """What members must share to take their training steps together."""

    batch_size: int
    conv1_filters: int
    conv2_filters: int
    steps: int  # batches per epoch

    @classmethod
    def of(cls, member: Member) -> StepShape:
        cfg = member.config
        steps = math.ceil(len(member.train_idx) / cfg.batch_size)
        return cls(cfg.batch_size, cfg.conv1_filters, cfg.conv2_filters, steps)


class _Layout:
    """Where each of SeedNet's tensors sits in a member's row of the parameter matrix."""

    def __init__(self, shape: StepShape, units: int, n_classes: int, image: tuple[int, int]):
        self.units = units
        f1, f2 = shape.conv1_filters, shape.conv2_filters
        self.pooled = tuple((side - 2 * (KERNEL - 1)) // POOL for side in image)
        features = f2 * self.pooled[0] * self.pooled[1]
        shapes = {
            "conv1.weight": (f1, 1, KERNEL, KERNEL),
            "conv1.bias": (f1,),
            "conv2.weight": (f2, f1, KERNEL, KERNEL),
            "conv2.bias": (f2,),
            "dense.weight": (units, features),
            "dense.bias": (units,),
            "out.weight": (n_classes, units),
            "out.bias": (n_classes,),
        }
        self.slices: dict[str, tuple[slice, tuple[int, ...]]] = {}
        offset = 0
        for name, dims in shapes.items():
            size = math.prod(dims)
            self.slices[name] = (slice(offset, offset + size), dims)
            offset += size
        self.size = offset

    def view(self, flat: torch.Tensor, name: str) -> torch.Tensor:
        """(P, *dims) view of every member's tensor ``name``."""
        columns, dims = self.slices[name]
        return flat[:, columns].view(flat.shape[0], *dims)

    def convert(self, flat: torch.Tensor, old: _Layout) -> torch.Tensor:
        """Rows laid out by ``old`` (as wide or narrower) in this layout, zero-padded."""
        out = torch.zeros(flat.shape[0], self.size)
        for name, (_, dims) in old.slices.items():
            target = self.view(out, name)
            target[(slice(None), *(slice(0, d) for d in dims))] = old.view(flat, name)
        return out


def _runs(keys: Sequence[Hashable]) -> list[tuple[int, int, Hashable]]:
    """Maximal runs of equal consecutive keys as (start, end, key)."""
    runs, start = [], 0
    for key, group in itertools.groupby(keys):
        n = len(list(group))
        runs.append((start, start + n, key))
        start += n
    return runs


def _by_runs(x: torch.Tensor, runs: list, fn: Callable[..., torch.Tensor]) -> torch.Tensor:
    """Apply fn(x[start:end], key, start) to each run of members (dim 0), one call on the
    whole of x when there is one run (no copies then)."""
    if len(runs) == 1:
        start, _, key = runs[0]
        return fn(x, key, start)
    return torch.cat([fn(x[s:e], key, s) for s, e, key in runs])


def _sort_key(member: Member) -> tuple:
    """Members in this order form few runs of equal activations, widths and optimizers."""
    cfg = member.config
    conv, dense = cfg.conv_activation or cfg.activation, cfg.dense_activation or cfg.activation
    return (conv, dense, cfg.neurons, cfg.optimizer)


class Population:
    """Members sharing a StepShape, trained as stacked tensors: a Group for Training."""

    def __init__(
        self,
        members: Sequence[Member],
        x: torch.Tensor,
        y: torch.Tensor,
        n_classes: int,
        keep_models: bool = True,
        capacity: int | None = None,
    ):
        shape = StepShape.of(members[0])
        if any(StepShape.of(m) != shape for m in members):
            raise ValueError("a population's members must share batch size, filters and steps")
        self.shape, self.x, self.y, self.n_classes = shape, x[:, 0], y, n_classes
        self.image = tuple(x.shape[2:])
        self.keep_models = keep_models
        self.capacity = capacity or len(members)  # how many members absorb() may bring it to
        self.members = sorted(members, key=_sort_key)  # contiguous runs of rules
        self.joined = [0] * len(self.members)  # the round each member joined in
        self.units = max(m.config.neurons for m in self.members)
        self.layout = _Layout(shape, self.units, n_classes, self.image)
        self.gens = [torch.Generator().manual_seed(m.seed) for m in self.members]
        self.masks = [MaskStream(m.seed) for m in self.members]
        rows = [
            self._row(SeedNet(m.config, n_classes, self.image, g))
            for m, g in zip(self.members, self.gens, strict=True)
        ]
        self._set_parameters(torch.stack(rows))
        self.slots: dict[str, torch.Tensor] = {}  # optimizer accumulators, (P, S) each
        self.scalars: dict[tuple, dict] = {}  # per (rule, join round) scalars (Nadam's schedule)
        self.step_count = 0
        self.epoch = 0  # rounds trained; a member's own epoch is epoch - its join round
        self.finished: dict[str, SeedNet] = {}
        self._index_members()

    # --- bookkeeping -------------------------------------------------------------------

    @property
    def keys(self) -> list[str]:
        return [m.key for m in self.members]

    def _index_members(self) -> None:
        """Per-member tensors and rule runs, rebuilt whenever members leave."""
        cfgs = [m.config for m in self.members]
        n = len(cfgs)
        self.lr = torch.tensor([c.effective_learn_rate for c in cfgs]).view(n, 1)
        self.constrained = torch.tensor(
            [i for i, c in enumerate(cfgs) if c.weight_constraint is not None], dtype=torch.int64
        )
        self.max_norms = torch.tensor(
            [c.weight_constraint for c in cfgs if c.weight_constraint is not None]
        ).view(-1, 1, 1)
        self.conv_runs = _runs([c.conv_activation or c.activation for c in cfgs])
        self.dense_runs = _runs([(c.dense_activation or c.activation, c.neurons) for c in cfgs])
        self.optimizer_runs = _runs(
            [(c.optimizer, j) for c, j in zip(cfgs, self.joined, strict=True)]
        )
        self.train_idx = [
            torch.as_tensor(np.asarray(m.train_idx, dtype=np.int64)) for m in self.members
        ]
        self.val_idx = [
            torch.as_tensor(np.asarray(m.val_idx, dtype=np.int64)) for m in self.members
        ]
        self._make_leaves()

    def drop(self, keys: set[str]) -> None:
        keep = [i for i, m in enumerate(self.members) if m.key not in keys]
        if len(keep) == len(self.members):
            return
        rows = torch.tensor(keep, dtype=torch.int64)
        self._set_parameters(self.flat[rows])
        self.slots = {name: s[rows] for name, s in self.slots.items()}
        self.members = [self.members[i] for i in keep]
        self.gens = [self.gens[i] for i in keep]
        self.masks = [self.masks[i] for i in keep]
        self.joined = [self.joined[i] for i in keep]
        self._index_members()

    def absorb(self, other: Population) -> bool:
        """Take in ``other``'s members, which have not trained yet, if they fit: from the
        next round they train here, each at its own epoch and optimizer step, exactly as
        they would have apart. Returns whether it took them."""
        if (
            other.shape != self.shape
            or other.epoch
            or other.x.data_ptr() != self.x.data_ptr()
            or len(self.members) + len(other.members) > self.capacity
        ):
            return False
        layout = _Layout(self.shape, max(self.units, other.units), self.n_classes, self.image)
        members = self.members + other.members
        order = sorted(range(len(members)), key=lambda i: (_sort_key(members[i]), i))
        rows = torch.tensor(order, dtype=torch.int64)
        flat = torch.cat(
            [layout.convert(self.flat, self.layout), layout.convert(other.flat, other.layout)]
        )
        for name, slot in self.slots.items():
            fresh = torch.zeros(len(other.members), layout.size)
            self.slots[name] = torch.cat([layout.convert(slot, self.layout), fresh])[rows]
        self.layout, self.units = layout, layout.units
        self._set_parameters(flat[rows])
        self.members = [members[i] for i in order]
        self.gens = [(self.gens + other.gens)[i] for i in order]
        self.masks = [(self.masks + other.masks)[i] for i in order]
        self.joined = [(self.joined + [self.epoch] * len(other.members))[i] for i in order]
        self._index_members()
        return True

    def _set_parameters(self, flat: torch.Tensor) -> None:
        """Parameters (P, S) in ``flat``, gradients in ``grad`` (leaves: ``_index_members``)."""
        self.flat, self.grad = flat.contiguous(), torch.zeros_like(flat)

    def _make_leaves(self) -> None:
        """A leaf per layer and run of members that use it together, a view of those rows of
        ``flat`` whose ``.grad`` is the same view of ``grad``: autograd accumulates each
        gradient in place, so one zeroing per step replaces a buffer per layer, and no run's
        gradient is scattered into a full-size zero tensor."""
        self.params: dict[tuple[str, int], torch.Tensor] = {}
        for names, runs in ((CONV_PARAMETERS, self.conv_runs), (DENSE_PARAMETERS, self.dense_runs)):
            for name in names:
                for s, e, _ in runs:
                    leaf = self.layout.view(self.flat[s:e], name).requires_grad_()
                    leaf.grad = self.layout.view(self.grad[s:e], name)
                    self.params[name, s] = leaf

    def _row(self, net: SeedNet) -> torch.Tensor:
        """A member's network as one padded parameter row."""
        row = torch.zeros(1, self.layout.size)
        for name, tensor in net.state_dict().items():
            target = self.layout.view(row, name)[0]
            target[tuple(slice(0, d) for d in tensor.shape)] = tensor
        return row[0]

    def model(self, key: str) -> SeedNet:
        if key in self.finished:
            return self.finished[key]
        i = self.keys.index(key)
        member = self.members[i]
        net = SeedNet(member.config, self.n_classes, self.image)
        row = self.flat[i : i + 1]
        state = {}
        for name, tensor in net.state_dict().items():
            state[name] = self.layout.view(row, name)[0][tuple(slice(0, d) for d in tensor.shape)]
        net.load_state_dict(state)
        return net

    # --- the network, for all members at once -------------------------------------------

    def _logits(
        self,
        index: torch.Tensor,
        conv_scale: torch.Tensor | None = None,
        dense_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (P, b, classes) of images ``index`` (P, b), one row of images per member.

        Feature maps are (P, C, H, W, b), images innermost, as ``kernels`` wants them;
        dim 1 is each member's own channels, so softmax there is SeedNet's softmax.
        """
        param = self.params
        n, b = index.shape
        x = gather_images(self.x, index)  # (P, 1, H, W, b)

        def features(t: torch.Tensor, activation: str, s: int) -> torch.Tensor:
            """Pooled, activated conv2 maps of the run of members from row s."""
            return conv_stack(t, *(param[name, s] for name in CONV_PARAMETERS), activation)

        h = _by_runs(x, self.conv_runs, features)
        if conv_scale is not None:
            h = h * conv_scale
        h = h.view(n, -1, b)  # (P, features, b): SeedNet's flatten order, images innermost

        def dense(t: torch.Tensor, key: tuple[str, int], s: int) -> torch.Tensor:
            """Hidden and output layers of the run of members from s (same activation and width)."""
            activation, units = key
            weight = param["dense.weight", s][:, :units]
            t = torch.baddbmm(param["dense.bias", s][:, :units, None], weight, t)  # (P', units, b)
            t = ACTIVATIONS[activation](t)  # softmax over dim 1: the units
            if dense_scale is not None:
                t = t * dense_scale[s : s + len(t), :units]
            out = param["out.weight", s][:, :, :units]
            return torch.baddbmm(param["out.bias", s][:, :, None], out, t)  # (P', classes, b)

        return _by_runs(h, self.dense_runs, dense).transpose(1, 2)

    def _dropout_scales(self, sizes: list[int], b: int) -> tuple[torch.Tensor | None, ...]:
        """Each member's dropout multipliers for a step, from its own mask stream (conv mask,
        then dense mask, as in the sequential engine), laid out as the feature maps they
        scale: (P, f2, h, w, b) and (P, units, b)."""
        cfgs = [m.config for m in self.members]
        f2, (ph, pw) = self.shape.conv2_filters, self.layout.pooled
        conv = dense = None
        if any(c.conv_dropout for c in cfgs):
            rates = [c.conv_dropout for c in cfgs]
            conv = draw(self.masks, rates, sizes, [f2 * ph * pw] * len(cfgs), b)
            conv = conv.view(len(cfgs), f2, ph, pw, b)
        if any(c.dropout_rate for c in cfgs):
            rates = [c.dropout_rate for c in cfgs]
            dense = draw(self.masks, rates, sizes, [c.neurons for c in cfgs], b)
        return conv, dense

    # --- training ---------------------------------------------------------------------

    def next_epoch(self) -> list[EpochResult]:
        start = time.perf_counter()
        self.epoch += 1
        n, batch = len(self.members), self.shape.batch_size
        orders = [
            idx[torch.randperm(len(idx), generator=g)]
            for idx, g in zip(self.train_idx, self.gens, strict=True)
        ]
        tally = _Tally(n)
        for step in range(self.shape.steps):
            parts = [o[step * batch : (step + 1) * batch] for o in orders]
            index, weight = _pad(parts)
            scales = self._dropout_scales([len(p) for p in parts], index.shape[1])
            losses = self._losses(index, weight, tally, *scales)
            self.grad.zero_()
            with warnings.catch_warnings():  # the leaves are strided views of self.flat, on purpose
                warnings.filterwarnings("ignore", "grad and param do not obey", UserWarning)
                (losses * weight).sum().backward()
            self._update()
        sizes = torch.tensor([len(o) for o in orders], dtype=torch.float64)
        train_loss = (tally.loss / sizes).tolist()
        train_acc = (tally.correct / sizes).tolist()
        finite = torch.isfinite(self.flat).all(1).tolist()
        val = self._validate()
        seconds = (time.perf_counter() - start) / n
        results, done = [], set()
        for i, member in enumerate(self.members):
            diverged = not (math.isfinite(train_loss[i]) and finite[i])
            epoch = self.epoch - self.joined[i]
            status, reason = epoch_status(epoch, member.config.epochs, diverged)
            val_loss, val_acc = val[i] if val[i] and not diverged else (None, None)
            results.append(
                EpochResult(
                    member.key,
                    epoch,
                    train_loss[i],
                    train_acc[i],
                    val_loss,
                    val_acc,
                    seconds,
                    status,
                    reason,
                )
            )
            if results[-1].done:
                done.add(member.key)
                if self.keep_models:
                    self.finished[member.key] = self.model(member.key)
        self.drop(done)
        return results

    @torch.no_grad()
    def _update(self) -> None:
        """One optimizer step per run of members sharing a rule, then the MaxNorm constraint."""
        self.step_count += 1
        params, grads = self.flat, self.grad
        scalars = {}
        for s, e, run in self.optimizer_runs:
            name, joined = run
            rule = OPTIMIZERS[name]
            for slot in rule.slots:
                if slot not in self.slots:
                    self.slots[slot] = torch.zeros_like(params)
            step = self.step_count - joined * self.shape.steps  # the members' own step
            state = {"step": step, **self.scalars.get(run, {})}
            state.update({slot: self.slots[slot][s:e] for slot in rule.slots})
            rule.update(params[s:e], grads[s:e], state, {**rule.hyper, "lr": self.lr[s:e]})
            scalars[run] = {k: v for k, v in state.items() if k != "step" and k not in rule.slots}
        self.scalars.update(scalars)
        if len(self.constrained):
            dense = self.layout.view(params, "dense.weight")
            rows = dense[self.constrained]
            dense[self.constrained] = max_norm_(rows, self.max_norms)

    @torch.no_grad()
    def _validate(self) -> list[tuple[float, float] | None]:
        """(loss, accuracy) on each member's validation images; None where it has none."""
        n = len(self.members)
        longest = max(len(v) for v in self.val_idx)
        if longest == 0:
            return [None] * n
        tally = _Tally(n)
        chunk = max(LANES, EVAL_IMAGES // n // LANES * LANES)
        for start in range(0, longest, chunk):
            index, weight = _pad([v[start : start + chunk] for v in self.val_idx])
            self._losses(index, weight, tally)
        sizes = [len(v) for v in self.val_idx]
        return [
            (tally.loss[i].item() / k, tally.correct[i].item() / k) if k else None
            for i, k in enumerate(sizes)
        ]

    def _losses(
        self,
        index: torch.Tensor,
        weight: torch.Tensor,
        tally: _Tally,
        conv_scale: torch.Tensor | None = None,
        dense_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-image losses (P, b) of images ``index``, counted into ``tally``."""
        logits = self._logits(index, conv_scale, dense_scale)
        labels = self.y[index]
        losses = categorical_crossentropy(logits.flatten(0, 1), labels.flatten())
        losses = losses.view_as(weight)
        tally.add(losses, logits, labels, weight > 0)
        return losses


class _Tally:
    """Each member's summed loss and count of correct predictions over padded chunks."""

    def __init__(self, n: int):
        self.loss = torch.zeros(n, dtype=torch.float64)
        self.correct = torch.zeros(n, dtype=torch.int64)

    @torch.no_grad()
    def add(
        self, losses: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, real: torch.Tensor
    ) -> None:
        self.loss += (losses * real).sum(1, dtype=torch.float64)
        self.correct += ((logits.argmax(2) == labels) & real).sum(1)


def _pad(parts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Index rows (P, b) padded with image 0 to a multiple of LANES, and weights 1/len
    (0 on padding, which therefore adds nothing to any loss or gradient)."""
    b = -(-max(len(p) for p in parts) // LANES) * LANES
    index = torch.zeros(len(parts), b, dtype=torch.int64)
    weight = torch.zeros(len(parts), b)
    for i, p in enumerate(parts):
        index[i, : len(p)] = p
        weight[i, : len(p)] = 1.0 / len(p) if len(p) else 0.0
    return index, weight


class PopulationEngine:
    """Trains members as populations of stacked tensors, ``max_members`` at most in each.

    Members are grouped by StepShape and, within a shape, by activation, width and optimizer, so
    that each population has few runs of rules; larger groups are chunked, which bounds
    memory (the activations of one step grow with the population).
    """

    def __init__(self, max_members: int = 16, keep_models: bool = True):
        if max_members < 1:
            raise ValueError(f"max_members must be >= 1, got {max_members}")
        self.max_members = max_members
        self.keep_models = keep_models
        self._data: tuple | None = None  # the last images and labels, as tensors
        keep_freed_memory()

    def _tensors(self, images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, ...]:
        """The data as tensors, converted once per array pair: populations trained on the
        same arrays share them, which lets a running population absorb a new one."""
        if self._data is None or self._data[0] is not images or self._data[1] is not labels:
            y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
            self._data = (images, labels, images_to_tensor(images), y)
        return self._data[2:]

    def train(
        self, images: np.ndarray, labels: np.ndarray, n_classes: int, members: Sequence[Member]
    ) -> Training:
        x, y = self._tensors(images, labels)
        by_shape: dict[StepShape, list[Member]] = {}
        for m in sorted(members, key=_sort_key):
            by_shape.setdefault(StepShape.of(m), []).append(m)
        groups = [
            Population(
                same[i : i + self.max_members], x, y, n_classes, self.keep_models, self.max_members
            )
            for same in by_shape.values()
            for i in range(0, len(same), self.max_members)
        ]
        return Training(groups, [m.key for m in members])
