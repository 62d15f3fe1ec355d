"""optimizers.c's optimizer_step against the rules' torch arithmetic (nn/optimizers.py)."""

from __future__ import annotations

import pytest
import torch

from deepnet.engine import kernels
from deepnet.engine.member_runs import Run
from deepnet.engine.optimizer_bank import OptimizerBank, RuleGroup, _optimizer_step
from deepnet.nn import OPTIMIZERS

pytestmark = pytest.mark.skipif(not kernels.native(), reason="needs the compiled kernels")


def _rows(seed: int, rows: int = 5, size: int = 1037) -> torch.Tensor:
    return torch.randn(rows, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("nesterov", [False, True])
def test_every_rule_in_c_follows_its_torch_arithmetic(name, nesterov):
    rule = OPTIMIZERS[name]
    hyper = {**rule.hyper, "momentum": 0.9, "nesterov": nesterov} if name == "SGD" else rule.hyper
    lr = torch.tensor([[1e-3], [1e-2], [0.1], [0.5], [0.0]])
    torch_p, c_p = _rows(0), _rows(0)
    torch_slots = [_rows(1 + i).abs() for i in range(len(rule.slots))]
    c_slots = [s.clone() for s in torch_slots]
    torch_state, c_state = {}, {}
    for t in range(1, 8):
        g = _rows(100 + t)
        torch_state["step"] = c_state["step"] = t
        rule.apply(torch_p, g, torch_slots, lr, rule.constants(torch_state, hyper))
        _optimizer_step(name, c_p, g, c_slots, lr, rule.constants(c_state, hyper))
    torch.testing.assert_close(c_p, torch_p, rtol=1e-5, atol=1e-5)
    for ours, reference in zip(c_slots, torch_slots, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    if name != "SGD":  # (SGD's momentum moves a row whatever its rate)
        assert torch.equal(c_p[4], _rows(0)[4])  # each row's own rate: 0 leaves it alone
    assert torch_state == c_state  # the same schedule (Nadam's) advanced


def test_rows_split_among_threads_give_the_same_bits():
    rule, lr = OPTIMIZERS["Nadam"], torch.full((5, 1), 2e-3)
    results = []
    for threads in (1, 2, 3):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            p, slots = _rows(0), [torch.zeros(5, 1037), torch.zeros(5, 1037)]
            _optimizer_step(
                "Nadam", p, _rows(9), slots, lr, rule.constants({"step": 1}, rule.hyper)
            )
        finally:
            torch.set_num_threads(previous)
        results.append(p)
    assert all(torch.equal(r, results[0]) for r in results)


def test_the_bank_runs_each_rule_on_its_rows():
    bank, params, grads = OptimizerBank(steps_per_epoch=10), _rows(0, 4), _rows(1, 4)
    runs = [Run(0, 2, RuleGroup("Adam", 0)), Run(2, 4, RuleGroup("SGD", 0))]
    lr = torch.full((4, 1), 0.01)
    before = params.clone()
    bank.step(params, grads, runs, lr)
    # Adam's first step: lr * g / (|g| + eps / sqrt(1 - b2))
    adam_first_step = 0.01 * grads[:2] / (grads[:2].abs() + 1e-8 / 0.001**0.5)
    torch.testing.assert_close(before[:2] - params[:2], adam_first_step)
    torch.testing.assert_close(before[2:] - params[2:], 0.01 * grads[2:])  # plain SGD
    assert set(bank.slots) == {"m", "v"}  # SGD's v shares its name, on its own rows
    assert bank.slots["m"][2:].abs().sum() == 0


def test_a_strided_or_misshapen_tensor_is_refused_before_c():
    rule = OPTIMIZERS["Adam"]
    k = rule.constants({"step": 1}, rule.hyper)
    p, lr = _rows(0), torch.full((5, 1), 0.01)
    with pytest.raises(ValueError, match=r"grads must have shape \(5, 1037\), got \(5, 1036\)"):
        _optimizer_step("Adam", p, _rows(1)[:, :-1], [torch.zeros_like(p)] * 2, lr, k)
    with pytest.raises(ValueError, match=r"grads must be torch\.float32, got torch\.float64"):
        _optimizer_step("Adam", p, _rows(1).double(), [torch.zeros_like(p)] * 2, lr, k)
    with pytest.raises(ValueError, match=r"lr must have shape \(5, 1\)"):
        _optimizer_step("Adam", p, _rows(1), [torch.zeros_like(p)] * 2, lr[:3], k)
    strided = torch.zeros(1037, 5).t()  # (5, 1037), columns apart
    with pytest.raises(ValueError, match="must be a contiguous CPU tensor"):
        _optimizer_step("Adam", p, _rows(1), [torch.zeros_like(p), strided], lr, k)
