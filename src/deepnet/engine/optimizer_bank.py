"""Every member's optimizer state, stacked as the parameters are: one update per run.

Accumulators (Adam's m and v, ...) are (P, S) matrices in the parameters' row order, so an
update rule runs once on a slice of rows: optimizers.c's ``optimizer_step`` (one pass over
memory, its rows split among the threads) where the kernels are compiled, else the rule's
torch arithmetic. Members that joined a population in a later round are at an earlier step
of their own, and Nadam's momentum schedule is a scalar per step: both belong to a RuleGroup
(rule and join round), which members share exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from deepnet.engine.kernels import Whole, call_by_members, expect, native_for
from deepnet.nn import OPTIMIZERS

# optimizers.c's codes for the rules: their order in OPTIMIZERS
RULE_CODES = {name: code for code, name in enumerate(OPTIMIZERS)}

if TYPE_CHECKING:
    from deepnet.engine.member_runs import Run
    from deepnet.engine.parameters import Layout


@dataclass(frozen=True)
class RuleGroup:
    """Members at the same step of the same optimizer rule."""

    rule: str
    joined: int  # the population round they joined in


class OptimizerBank:
    """Accumulators per slot name and scalars per RuleGroup; ``step`` advances them all."""

    def __init__(self, steps_per_epoch: int):
        self.steps_per_epoch = steps_per_epoch
        self.slots: dict[str, torch.Tensor] = {}  # (P, S) each, zero at a member's start
        self.scalars: dict[RuleGroup, dict] = {}  # e.g. Nadam's m_schedule
        self.step_count = 0  # steps the population has taken

    def take(self, rows: torch.Tensor) -> None:
        """Keep these rows, in this order (members left)."""
        self.slots = {name: slot[rows] for name, slot in self.slots.items()}

    def merge(self, layout: Layout, old: Layout, joining: int, rows: torch.Tensor) -> None:
        """Relay the rows out in ``layout`` and append zeros for ``joining`` new members,
        then order them by ``rows`` (as the parameters are)."""
        for name, slot in self.slots.items():
            fresh = torch.zeros(joining, layout.size, device=slot.device)
            self.slots[name] = torch.cat([layout.convert(slot, old), fresh])[rows]

    def restore(
        self,
        params: torch.Tensor,
        row: int,
        slots: dict[str, torch.Tensor],
        group: RuleGroup,
        scalars: dict,
    ) -> None:
        """Row ``row`` (of parameters ``params``) resumes a checkpointed member: its
        accumulators ``slots`` (padded rows) and its RuleGroup's ``scalars``."""
        for name, value in slots.items():
            if name not in self.slots:
                self.slots[name] = torch.zeros_like(params)
            self.slots[name][row] = value
        if scalars:
            self.scalars[group] = dict(scalars)

    @torch.no_grad()
    def step(
        self,
        params: torch.Tensor,
        grads: torch.Tensor,
        runs: Sequence[Run[RuleGroup]],
        lr: torch.Tensor,
    ) -> None:
        """One optimizer step for every member: each run's rule on its rows, with its
        members' own step number and learning rates ``lr`` (P, 1)."""
        self.step_count += 1
        scalars = {}
        for run in runs:
            s, e, group = run.start, run.end, run.key
            rule = OPTIMIZERS[group.rule]
            for slot in rule.slots:
                if slot not in self.slots:
                    self.slots[slot] = torch.zeros_like(params)
            step = self.step_count - group.joined * self.steps_per_epoch  # the members' own
            state = {"step": step, **self.scalars.get(group, {})}
            constants = rule.constants(state, rule.hyper)
            slots = [self.slots[slot][s:e] for slot in rule.slots]
            if native_for(params):
                _optimizer_step(group.rule, params[s:e], grads[s:e], slots, lr[s:e], constants)
            else:
                rule.apply(params[s:e], grads[s:e], slots, lr[s:e], constants)
            scalars[group] = {name: v for name, v in state.items() if name != "step"}
        self.scalars.update(scalars)


def _optimizer_step(
    rule: str,
    params: torch.Tensor,
    grads: torch.Tensor,
    slots: Sequence[torch.Tensor],
    lr: torch.Tensor,
    k: tuple[float, ...],
) -> None:
    """optimizers.c's optimizer_step on rows (P, S) of float32 parameters, after checking what
    C will read and write (``call`` refuses strided memory)."""
    fn = "optimizer_step"
    p, size = expect(fn, "params", params, torch.float32, (None, None)).shape
    for name, t in (("grads", grads), *((f"slot {i}", s) for i, s in enumerate(slots))):
        expect(fn, name, t, torch.float32, (p, size))
    expect(fn, "lr", lr, torch.float32, (p, 1))
    padded = [*slots, None, None][:2]
    constants = Whole(torch.tensor(k, dtype=torch.float32))
    call_by_members(
        "optimizer_step", [params, grads, *padded, lr, constants, RULE_CODES[rule]], p, size
    )
