"""The population's parameters: one (P, S) matrix, a row per member, laid out by a Layout.

Hidden layers are stored at the widest member's width (an Architecture with that many
units); narrower members' rows are zero-padded and never touch the rest, so one layout and
one matrix serve every member of a population.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from deepnet.engine.member_runs import Run
from deepnet.nn import SeedNet
from deepnet.nn.architecture import Architecture

if TYPE_CHECKING:
    from deepnet.engine.roster import Hidden


def _corner(dims: Sequence[int]) -> tuple[slice, ...]:
    """The leading ``dims`` of a padded tensor: where a narrower member's tensor sits."""
    return tuple(slice(0, d) for d in dims)


class Layout:
    """Where each of an Architecture's tensors sits in a member's row."""

    def __init__(self, architecture: Architecture):
        self.architecture = architecture
        self.slices: dict[str, tuple[slice, tuple[int, ...]]] = {}
        offset = 0
        for name, dims in architecture.shapes().items():
            size = math.prod(dims)
            self.slices[name] = (slice(offset, offset + size), dims)
            offset += size
        self.size = offset

    @property
    def units(self) -> int:
        return self.architecture.dense.units

    def view(self, flat: torch.Tensor, name: str) -> torch.Tensor:
        """(P, *dims) view of every member's tensor ``name``."""
        columns, dims = self.slices[name]
        return flat[:, columns].view(flat.shape[0], *dims)

    def convert(self, flat: torch.Tensor, old: Layout) -> torch.Tensor:
        """Rows laid out by ``old`` (as wide or narrower) in this layout, zero-padded."""
        out = torch.zeros(flat.shape[0], self.size, device=flat.device)
        for name, (_, dims) in old.slices.items():
            self.view(out, name)[(slice(None), *_corner(dims))] = old.view(flat, name)
        return out

    def row(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """A member's tensors (as its network's state_dict) as one padded row."""
        row = torch.zeros(1, self.size)
        for name, tensor in tensors.items():
            self.view(row, name)[0][_corner(tensor.shape)] = tensor
        return row[0]

    def load(self, row: torch.Tensor, net: SeedNet) -> SeedNet:
        """``net`` with the parameters of ``row`` (1, S), a member of its width."""
        state = {
            name: self.view(row, name)[0][_corner(tensor.shape)]
            for name, tensor in net.state_dict().items()
        }
        net.load_state_dict(state)
        return net


class StackedParameters:
    """Parameters ``flat`` (P, S), gradients ``grad`` alike, and a leaf per tensor and run.

    A leaf is a view of its run's rows of ``flat`` whose ``.grad`` is the same view of
    ``grad``: autograd accumulates each gradient in place, so one zeroing per step replaces
    a buffer per layer, and no run's gradient is scattered into a full-size zero tensor. A
    dense run's leaves are the corner of its own width, so a narrower run never slices.
    """

    def __init__(
        self,
        layout: Layout,
        flat: torch.Tensor,
        conv_runs: Sequence[Run],
        dense_runs: Sequence[Run[Hidden]],
    ):
        self.layout = layout
        self.flat, self.grad = flat.contiguous(), torch.zeros_like(flat)
        arch = layout.architecture
        self._leaves: dict[tuple[str, int], torch.Tensor] = {}
        for name in arch.conv_parameters:
            for run in conv_runs:
                self._add(name, run, layout.slices[name][1])
        for run in dense_runs:
            for name, dims in arch.dense_shapes(run.key.units).items():
                self._add(name, run, dims)

    def _add(self, name: str, run: Run, dims: Sequence[int]) -> None:
        """The leaf of tensor ``name`` for the run's rows: its corner ``dims``."""
        corner = (slice(None), *_corner(dims))
        rows = slice(run.start, run.end)
        leaf = self.layout.view(self.flat[rows], name)[corner].requires_grad_()
        leaf.grad = self.layout.view(self.grad[rows], name)[corner]
        self._leaves[name, run.start] = leaf

    def leaf(self, name: str, run: Run) -> torch.Tensor:
        """Tensor ``name`` of the run's members, (run length, *dims), for autograd."""
        return self._leaves[name, run.start]

    def backward(self, loss: torch.Tensor) -> None:
        """Gradients of ``loss`` into ``grad``, zeroed first."""
        self.grad.zero_()
        with warnings.catch_warnings():  # the leaves are strided views of flat, on purpose
            warnings.filterwarnings("ignore", "grad and param do not obey", UserWarning)
            loss.backward()
