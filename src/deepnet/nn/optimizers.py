"""The seven Keras 2.0 optimizers with Keras' defaults and Keras' update rules.

torch.optim differs from Keras in several defaults (RMSprop's rho, Adagrad's and
Adadelta's eps) and in where Adam and Adamax put eps; these classes follow Keras, as
written in docs/keras2-semantics.md. In each rule ``g`` is the gradient, ``t`` the
1-based step, and every accumulator starts at zero.

Each rule is split in two: ``constants`` computes a step's scalars from the step number (and
advances Nadam's momentum schedule), ``apply`` does the tensor arithmetic, where ``lr`` may
be a tensor that broadcasts against the parameter. The population engine applies a rule to
many members' stacked parameters at once: with these ``apply`` methods, or with
engine/optimizers.c's ``optimizer_step``, which does the same arithmetic in one pass over
memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch
from torch.optim import Optimizer


class KerasOptimizer(Optimizer):
    """Base class: per-parameter state, a step counter, and one update rule per subclass."""

    hyper: ClassVar[dict[str, Any]]  # Keras' defaults, lr included
    slots: ClassVar[tuple[str, ...]]  # per-parameter accumulators, zero at the start

    def __init__(self, params: Iterable[torch.Tensor], lr: float | None = None, **hyper: Any):
        unknown = set(hyper) - set(self.hyper)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown arguments {sorted(unknown)}")
        defaults = {**self.hyper, **hyper}
        if lr is not None:
            defaults["lr"] = lr
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["step"] = state.get("step", 0) + 1
                for name in self.slots:
                    if name not in state:
                        state[name] = torch.zeros_like(p)
                self.update(p, p.grad, state, group)
        return loss

    @classmethod
    def update(cls, p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
        """Apply this optimizer's rule to ``p`` in place; ``group["lr"]`` may be a tensor."""
        k = cls.constants(state, group)
        cls.apply(p, g, [state[name] for name in cls.slots], group["lr"], k)

    @staticmethod
    def constants(state: dict, group: dict) -> tuple[float, ...]:
        """The scalars of step ``state["step"]`` (optimizers.c's ``optimizer_step`` reads them in
        this order); advances any schedule kept in ``state``."""
        raise NotImplementedError

    @staticmethod
    def apply(
        p: torch.Tensor,
        g: torch.Tensor,
        slots: Sequence[torch.Tensor],
        lr: float | torch.Tensor,
        k: tuple[float, ...],
    ) -> None:
        """The rule's arithmetic on ``p`` and its ``slots`` (in ``slots``' order), in place."""
        raise NotImplementedError


class SGD(KerasOptimizer):
    """v = mu*v - lr*g; p += v (nesterov: p += mu*v - lr*g)."""

    hyper: ClassVar = {"lr": 0.01, "momentum": 0.0, "nesterov": False}
    slots = ("v",)

    @staticmethod
    def constants(state, group):
        return group["momentum"], float(group["nesterov"])

    @staticmethod
    def apply(p, g, slots, lr, k):
        (v,), (mu, nesterov) = slots, k
        v.mul_(mu).sub_(lr * g)
        if nesterov:
            p.add_(mu * v - lr * g)
        else:
            p.add_(v)


class RMSprop(KerasOptimizer):
    """a = rho*a + (1-rho)*g^2; p -= lr*g/(sqrt(a)+eps)."""

    hyper: ClassVar = {"lr": 0.001, "rho": 0.9, "eps": 1e-8}
    slots = ("a",)

    @staticmethod
    def constants(state, group):
        return group["rho"], 1 - group["rho"], group["eps"]

    @staticmethod
    def apply(p, g, slots, lr, k):
        (a,), (rho, rest, eps) = slots, k
        a.mul_(rho).addcmul_(g, g, value=rest)
        p.sub_(lr * g / a.sqrt().add_(eps))


class Adagrad(KerasOptimizer):
    """a += g^2; p -= lr*g/(sqrt(a)+eps)."""

    hyper: ClassVar = {"lr": 0.01, "eps": 1e-8}
    slots = ("a",)

    @staticmethod
    def constants(state, group):
        return (group["eps"],)

    @staticmethod
    def apply(p, g, slots, lr, k):
        (a,), (eps,) = slots, k
        a.addcmul_(g, g)
        p.sub_(lr * g / a.sqrt().add_(eps))


class Adadelta(KerasOptimizer):
    """a = rho*a + (1-rho)*g^2; u = g*sqrt(d+eps)/sqrt(a+eps); p -= lr*u; d = rho*d+(1-rho)*u^2."""

    hyper: ClassVar = {"lr": 1.0, "rho": 0.95, "eps": 1e-8}
    slots = ("a", "d")

    @staticmethod
    def constants(state, group):
        return group["rho"], 1 - group["rho"], group["eps"]

    @staticmethod
    def apply(p, g, slots, lr, k):
        (a, d), (rho, rest, eps) = slots, k
        a.mul_(rho).addcmul_(g, g, value=rest)
        u = g * (d + eps).sqrt_() / (a + eps).sqrt_()
        p.sub_(lr * u)
        d.mul_(rho).addcmul_(u, u, value=rest)


class Adam(KerasOptimizer):
    """m, v as usual; p -= lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v)+eps), eps on the raw sqrt(v)."""

    hyper: ClassVar = {"lr": 0.001, "beta_1": 0.9, "beta_2": 0.999, "eps": 1e-8}
    slots = ("m", "v")

    @staticmethod
    def constants(state, group):
        b1, b2, t = group["beta_1"], group["beta_2"], state["step"]
        return b1, 1 - b1, b2, 1 - b2, group["eps"], math.sqrt(1 - b2**t), 1 - b1**t

    @staticmethod
    def apply(p, g, slots, lr, k):
        (m, v), (b1, rest1, b2, rest2, eps, sqrt_bias2, bias1) = slots, k
        m.mul_(b1).add_(g, alpha=rest1)
        v.mul_(b2).addcmul_(g, g, value=rest2)
        lr_t = lr * sqrt_bias2 / bias1
        p.sub_(lr_t * m / v.sqrt().add_(eps))


class Adamax(KerasOptimizer):
    """m as Adam; u = max(b2*u, |g|); p -= lr/(1-b1^t) * m/(u+eps), eps outside the max."""

    hyper: ClassVar = {"lr": 0.002, "beta_1": 0.9, "beta_2": 0.999, "eps": 1e-8}
    slots = ("m", "u")

    @staticmethod
    def constants(state, group):
        b1, t = group["beta_1"], state["step"]
        return b1, 1 - b1, group["beta_2"], group["eps"], 1 - b1**t

    @staticmethod
    def apply(p, g, slots, lr, k):
        (m, u), (b1, rest1, b2, eps, bias1) = slots, k
        m.mul_(b1).add_(g, alpha=rest1)
        torch.maximum(u.mul_(b2), g.abs(), out=u)
        p.sub_(lr / bias1 * m / (u + eps))


class Nadam(KerasOptimizer):
    """Adam with Nesterov momentum and Keras' momentum schedule (= torch NAdam, decay 4e-3)."""

    hyper: ClassVar = {
        "lr": 0.002,
        "beta_1": 0.9,
        "beta_2": 0.999,
        "eps": 1e-8,
        "schedule_decay": 0.004,
    }
    slots = ("m", "v")

    @staticmethod
    def constants(state, group):
        b1, b2, t, decay = group["beta_1"], group["beta_2"], state["step"], group["schedule_decay"]
        mu_t = b1 * (1 - 0.5 * 0.96 ** (t * decay))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * decay))
        schedule = state.get("m_schedule", 1.0) * mu_t
        state["m_schedule"] = schedule
        # m_bar = (1-mu_t) * g/(1-schedule) + mu_next * m/(1-schedule*mu_next)
        g_share, m_share = (1 - mu_t) / (1 - schedule), mu_next / (1 - schedule * mu_next)
        return b1, 1 - b1, b2, 1 - b2, group["eps"], g_share, m_share, 1 - b2**t

    @staticmethod
    def apply(p, g, slots, lr, k):
        (m, v), (b1, rest1, b2, rest2, eps, g_share, m_share, bias2) = slots, k
        m.mul_(b1).add_(g, alpha=rest1)
        v.mul_(b2).addcmul_(g, g, value=rest2)
        m_bar = g * g_share + m * m_share
        denom = (v / bias2).sqrt_().add_(eps)
        p.sub_(lr * m_bar / denom)


OPTIMIZERS: dict[str, type[KerasOptimizer]] = {
    cls.__name__: cls for cls in (SGD, RMSprop, Adagrad, Adadelta, Adam, Adamax, Nadam)
}
